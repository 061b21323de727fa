"""Ask ansible-core itself, in a process of its own: which hosts does each pattern select?

Run as `python tests/ansible_oracle.py` with a JSON request on stdin:
{"sources": [...], "playbook_dir": null, "vault_password_file": null, "patterns": [...]}
Prints {"hosts": {pattern: [names] | {"error": message}}}. The hosts come from
`InventoryManager.list_hosts(pattern)`, what `ansible PATTERN --list-hosts` prints (one process
for all patterns of an inventory instead of one `ansible` run each; tests/test_ansible_compat.py
checks that the two agree).
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from ansible.cli import CLI
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader()  # as ansible's CLIs do: `plugin: ansible.builtin.x` needs it
    request = json.load(sys.stdin)
    loader = DataLoader()
    files = [request["vault_password_file"]] if request.get("vault_password_file") else []
    loader.set_vault_secrets(
        CLI.setup_vault_secrets(loader, vault_ids=[], vault_password_files=files, auto_prompt=False)
    )
    inventory = InventoryManager(loader=loader, sources=request["sources"])
    hosts: dict[str, object] = {}
    for pattern in request["patterns"]:
        try:
            hosts[pattern] = [h.name for h in inventory.list_hosts(pattern)]
        except AnsibleError as exc:
            hosts[pattern] = {"error": str(exc)}
    json.dump({"hosts": hosts}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
