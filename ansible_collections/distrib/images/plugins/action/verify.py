"""Action plugin of distrib.images.verify: `distrib verify` once for the play's batch of hosts;
a host fails when an image is missing or differs (drift), and nothing is ever changed."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail

from ansible_collections.distrib.images.plugins.action.distribute import (
    ActionModule as Distribute,
)


class ActionModule(Distribute):
    _VALID_ARGS = frozenset(("images", "distrib_command"))
    VERIFY_ONLY = True

    def command(self, args: dict[str, Any]) -> list[str]:
        images = args.get("images") or []
        if isinstance(images, str):
            images = [images]
        if not images or not all(isinstance(i, str) for i in images):
            raise AnsibleActionFail("images must be a non-empty list of image references")
        return ["verify", *[str(i) for i in images]]
