#!/usr/bin/python
"""Documentation of distrib.images.verify; the work is done by its action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: verify
short_description: Check that the play's hosts hold images with the controller's content
description:
  - Runs distrib verify once for the play's current batch of hosts. A host whose image is
    missing or differs (another config) fails with the drift named; nothing is changed.
  - Connection vars as for distrib.images.distribute.
version_added: "0.1.0"
author: distrib developers
options:
  images:
    description: Image references to check.
    type: list
    elements: str
    required: true
  distrib_command:
    description: The distrib command line to run (default the controller's python -m distrib).
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Check the release landed everywhere
  distrib.images.verify:
    images: [myorg/api:1.4]
"""

RETURN = r"""
states:
  description: Image reference to present, missing or different.
  returned: always
  type: dict
"""

if __name__ == "__main__":
    import json

    print(json.dumps({"failed": True, "msg": "distrib.images.verify runs as an action plugin"}))
