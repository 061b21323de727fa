"""What an inventory reader gives: `Host` and `Group` records, and the vars distrib reads.

Both readers (the built-in one, `distrib.inventory_builder`, and ansible-core's,
`distrib.ansible_core`) build these records; `distrib.inventory.Inventory` holds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

__all__ = ["EXTRA_HINT", "Group", "Host", "Loaded", "masked"]

# Each connection setting's vars in the order Ansible's plugins list them (ssh connection plugin,
# sudo become plugin, ansible-core 2.19): when several are set, the LAST one set wins.
CONNECTION_ALIASES: dict[str, tuple[str, ...]] = {
    "host": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "key_file": ("ansible_private_key_file", "ansible_ssh_private_key_file"),
    "password": ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password"),
    "host_key_checking": ("ansible_host_key_checking", "ansible_ssh_host_key_checking"),
    "become_user": ("ansible_become_user", "ansible_sudo_user"),
    "become_password": ("ansible_become_password", "ansible_become_pass", "ansible_sudo_pass"),
}
# Vars distrib itself reads besides `ansible_*` ones (distrib.plan, the workflows): the built-in
# reader refuses a Jinja template in any of these, as it cannot give Ansible's value.
DISTRIB_HOST_VARS = frozenset(
    {
        *("connect_timeout", "containerd_namespace", "docker_command", "engine"),
        *("engine_command", "host_key_checking", "io_timeout", "known_hosts"),
        *("max_command_output", "proxy_jump", "relay_group", "remote_tmp", "ssh_config"),
        "transfer",
    }
)
# Passwords: shown masked by `to_list_json` and `graph` (distrib inventory --list / --graph).
SECRET_VARS = frozenset(
    {
        *CONNECTION_ALIASES["password"],
        *CONNECTION_ALIASES["become_password"],
        *("ansible_private_key_passphrase", "ansible_ssh_private_key_passphrase"),
    }
)
MASK = "********"
USED_ANSIBLE_VARS = frozenset(
    {
        *(name for names in CONNECTION_ALIASES.values() for name in names),
        *("ansible_connection", "ansible_timeout", "ansible_ssh_common_args"),
        "ansible_ssh_extra_args",
    }
)
EXTRA_HINT = "pip install 'distrib[ansible]' (ansible-core) to read it as Ansible does"

Where = tuple[str, Optional[int]]  # (file, line) a fact of the inventory came from


def at(where: Where) -> dict[str, Any]:
    """ConfigError's `file=` and `line=` for `where`."""
    return {"file": where[0], "line": where[1]}


def fmt(where: Where) -> str:
    """`file:line` (or `file` alone when the line is unknown)."""
    return where[0] if where[1] is None else f"{where[0]}:{where[1]}"


def used_var(key: str) -> bool:
    """Whether distrib reads the var `key` (so a Jinja template in it matters)."""
    return key in USED_ANSIBLE_VARS or key.startswith("ansible_become") or key in DISTRIB_HOST_VARS


@dataclass(frozen=True)
class Host:
    """One inventory host with its effective vars (group vars merged, precedence applied)."""

    name: str
    vars: Mapping[str, Any] = field(hash=False)
    groups: tuple[str, ...]  # all groups containing it, ancestors and 'all' included
    source: str  # "file:line" where it was first defined

    @property
    def connection(self) -> str | None:
        """`ansible_connection` (`ssh`, `local`, ...), None when unset."""
        value = self.vars.get("ansible_connection")
        return None if value is None else str(value)

    @property
    def password(self) -> str | None:
        """The SSH password (`ansible_ssh_password`, `ansible_ssh_pass`, `ansible_password`).
        A secret: never print or log it."""
        value = _last_set(self.vars, CONNECTION_ALIASES["password"])
        return None if value is None else str(value)

    @property
    def become_password(self) -> str | None:
        """`ansible_sudo_pass`, `ansible_become_pass`, `ansible_become_password` (Ansible's
        sudo plugin order). A secret: never print or log it."""
        value = _last_set(self.vars, CONNECTION_ALIASES["become_password"])
        return None if value is None else str(value)


@dataclass(frozen=True)
class Group:
    """One group: its direct hosts and child groups, its own vars (not inherited ones)."""

    name: str
    hosts: tuple[str, ...]
    children: tuple[str, ...]
    vars: Mapping[str, Any] = field(hash=False)
    source: str  # "file:line" where first defined; "<implicit>" for all/ungrouped
    parents: tuple[str, ...] = ()
    depth: int = 0  # longest path from 'all' (Ansible's Group.depth)
    priority: int = 1  # ansible_group_priority


class Loaded(NamedTuple):
    """A reader's answer, the fields of `distrib.inventory.Inventory` in order."""

    hosts: dict[str, Host]  # definition order
    groups: dict[str, Group]  # definition order; has all and ungrouped
    sources: tuple[str, ...]
    members: dict[str, tuple[str, ...]]  # group -> its hosts and its descendants'


def masked(values: Mapping[str, Any]) -> dict[str, Any]:
    """Vars to show, password vars masked: they may be vault plaintext (never printed)."""
    return {k: MASK if k in SECRET_VARS and v not in (None, "") else v for k, v in values.items()}


def _last_set(values: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    """Of several aliases set, the one Ansible's plugin lists last wins
    (`ConfigManager._loop_entries`), whatever level set each."""
    for name in reversed(names):
        if values.get(name) is not None:
            return values[name]
    return None
