#!/usr/bin/python
"""Documentation of distrib.images.distribute; the work is done by its action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: distribute
short_description: Ship Docker images to the play's hosts with distrib, once for all of them
description:
  - Runs one distrib rollout for the play's current batch of hosts, not one per host. The
    images are saved and compressed once on the controller, each host is sent only the layers
    it lacks, loads them and is verified. Each host's task then reports its own outcome
    (changed when images were loaded, ok when they were already there, failed, unreachable).
  - Hosts are reached with the connection vars Ansible has for them (ansible_host,
    ansible_port, ansible_user, ansible_ssh_private_key_file, ansible_password,
    ansible_connection local, become vars) and the play's -u/-k/-K/-b; distrib's own host vars
    (known_hosts, engine, remote_tmp, ...) are passed too. They go to distrib in a temporary
    inventory file (mode 0600, deleted at once), never on a command line.
  - The images must be in the controller's docker (or use local_pull).
  - Runs on the controller (an action plugin); no module is sent to the hosts.
version_added: "0.1.0"
author: distrib developers
options:
  images:
    description: Image references to ship.
    type: list
    elements: str
  images_from:
    description: Compose files, Kubernetes YAML or list files naming more images.
    type: list
    elements: str
  compression:
    description: Archive codec (auto picks zstd where a host can load it, else gzip).
    type: str
    choices: [gzip, zstd, xz, none, auto]
  level:
    description: Compression level.
    type: int
  delta:
    description: Send only the layers a host lacks (auto) or whole archives (off).
    type: str
    choices: [auto, "off"]
  fanout:
    description: Workstation to every host (direct), hosts feeding each other (relay), or relay
      only when the tree pays for its setup (auto, see uplink).
    type: str
    choices: [direct, relay, auto]
  relay_width:
    description: Relay fan-out, children per host.
    type: int
  relay_roots:
    description: Relay fan-out, hosts without relay_group the workstation feeds itself (default 1).
    type: int
  uplink:
    description: fanout auto, the workstation's uplink rate (e.g. 200mbit; default 1gbit assumed).
    type: str
  transfer:
    description: Staged on disk, streamed into the engine, or chosen per host.
    type: str
    choices: [auto, staged, stream]
  verify:
    description: Verify the loaded images on each host.
    type: bool
  remote_tmp:
    description: Staging directory on the hosts.
    type: str
  keep:
    description: After a verified rollout, keep this many tags per repository.
    type: int
  local_pull:
    description: Pull the images on the controller first.
    type: str
    choices: [missing, always, never]
  platform:
    description: The platform local_pull pulls.
    type: str
  distrib_command:
    description: The distrib command line to run (default the controller's python -m distrib).
    type: list
    elements: str
notes:
  - Check mode is supported (distrib's read-only plan).
"""

EXAMPLES = r"""
- name: Roll out the release images
  distrib.images.distribute:
    images:
      - myorg/api:1.4
      - myorg/worker:1.4
    compression: zstd
"""

RETURN = r"""
status:
  description: distrib's outcome for the host (ok, changed, failed, unreachable, skipped).
  returned: always
  type: str
images:
  description: Image reference to the ID the host holds.
  returned: always
  type: dict
states:
  description: Image reference to present, missing or different.
  returned: always
  type: dict
bytes_sent:
  description: Bytes sent to the host.
  returned: always
  type: int
"""

if __name__ == "__main__":
    import json

    print(json.dumps({"failed": True, "msg": "distrib.images.distribute runs as an action plugin"}))
