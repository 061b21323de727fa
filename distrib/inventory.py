"""Ansible inventories: YAML, INI, directories of them and `h1,h2,` host lists, merged like Ansible.

Two readers give the same records (`Inventory`, `Host`, `Group`), so the rest of distrib does not
care which one ran:

* **ansible-core**, when it is installed (`pip install 'distrib[ansible]'`, see
  `distrib.ansible_core`): Ansible's own InventoryManager, VariableManager and templating --
  every inventory plugin and script, Jinja, vault, exact precedence.
* **the built-in reader** (this module) otherwise, or when `DISTRIB_INVENTORY_PARSER=builtin`.
  It gives Ansible's answer on everything it accepts, and refuses with one line naming the extra
  what only ansible-core can read: Jinja in a var distrib uses, `!vault` values, vault-encrypted
  files, executable inventory scripts and `plugin:` inventories (issue 17).

The built-in model mirrors ansible-core's `InventoryData` / `Group` / `Host`:

* Every group is reachable from `all`; a group with no parent becomes a child of `all`, a host in
  no group but `all` is put in `ungrouped` (`InventoryData.reconcile_inventory`).
* A host's effective vars follow `VariableManager.get_vars` (Ansible's default
  VARIABLE_PRECEDENCE), lowest first: the inline vars of `all`, then of its other groups in
  `sort_groups` order (depth from `all`, then `ansible_group_priority`, then name); then
  `group_vars/all` beside the inventory sources, then beside the playbook; then `group_vars/GROUP`
  beside the sources (source by source, groups sorted), then beside the playbook; then the host's
  inline vars, `host_vars/HOST` beside the sources, beside the playbook. Values replace, they do
  not deep-merge (Ansible's default `hash_behaviour=replace`). `ansible_group_priority` counts
  only inline: in a `group_vars` file it is an ordinary var.
* Several sources are parsed into one inventory in order: groups merge, group vars from later
  sources win, like `InventoryManager.parse_sources`.

Where this module is stricter than Ansible (each is a ConfigError naming file and line):

* A host defined more than once with *different* values for one of its own vars (Ansible lets
  the last one win silently). The same value again is fine.
* YAML: a key other than hosts/vars/children under a group, a group or host entry that is not a
  mapping, or `vars: somestring` (Ansible warns and skips, or makes `{somestring: None}`).
* A numeric host range whose start is after its end (Ansible silently expands it to no hosts).
* An invalid `ansible_port` (Ansible fails only when it connects).
* An empty or unparsable inventory source (Ansible warns and goes on without it).
* `host:port` on a host's later appearance with another port than it has (Ansible silently
  ignores that port: only the first appearance's counts).

Ansible's implicit `localhost` is not created and no magic vars (inventory_hostname,
group_names, inventory_file) are added.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distrib import inventory_sources, patterns
from distrib.errors import ConfigError
from distrib.inventory_records import EXTRA_HINT, Group, Host, masked

if TYPE_CHECKING:
    from distrib.ansible_core import VaultOptions

__all__ = ["EXTRA_HINT", "Group", "Host", "Inventory", "choose_reader"]

PARSER_ENV = "DISTRIB_INVENTORY_PARSER"  # auto (default) | builtin | ansible


@dataclass(frozen=True)
class Inventory:
    """A parsed, reconciled inventory. Build it with `load`, `from_yaml_text` or `from_ini_text`."""

    hosts: Mapping[str, Host] = field(hash=False)  # definition order
    groups: Mapping[str, Group] = field(hash=False)  # definition order; has all and ungrouped
    sources: tuple[str, ...]
    _members: Mapping[str, tuple[str, ...]] = field(hash=False, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        sources: Sequence[str],
        playbook_dir: str | None = None,
        *,
        vault: VaultOptions | None = None,
        reader: str | None = None,
        extra_vars: Mapping[str, Any] | None = None,
    ) -> Inventory:
        """Parse and merge inventory sources, in order, as `ansible -i A -i B` does.

        A source is a YAML file (.yml/.yaml/.json), an INI file, a directory of such files (read
        in sorted order, recursively, skipping what Ansible skips), or a comma-separated host
        list such as `h1,h2,` or `10.0.0.5:2222,`. Extension-less files are YAML if they hold a
        mapping of groups, else INI. A source path may start with `~`. `playbook_dir`: the
        playbook's directory, whose group_vars/ and host_vars/ count as ansible-playbook's do.

        `reader` is "ansible" (ansible-core, see `distrib.ansible_core`), "builtin" or None
        for `choose_reader()`: ansible-core when installed unless $DISTRIB_INVENTORY_PARSER
        says builtin. `vault`: vault secrets for ansible-core (the built-in reader has none).
        `extra_vars` (-e): seen by ansible-core's templating (the built-in reader refuses
        templates, so it has no use for them).
        """
        if isinstance(sources, str):
            sources = [sources]
        if (reader or choose_reader()) == "ansible":
            from distrib import ansible_core

            return cls(
                *ansible_core.load_inventory(
                    sources, playbook_dir, vault=vault, extra_vars=extra_vars
                )
            )
        if vault is not None and vault.given:
            raise ConfigError(f"vault options need ansible-core: {EXTRA_HINT}")
        return cls(*inventory_sources.read(sources, playbook_dir))

    @classmethod
    def from_yaml_text(cls, text: str, name: str = "<inventory>") -> Inventory:
        """Parse one YAML inventory given as text; `name` stands for the file in errors."""
        return cls(*inventory_sources.read_text(text, name, "yaml"))

    @classmethod
    def from_ini_text(cls, text: str, name: str = "<inventory>") -> Inventory:
        """Parse one INI inventory given as text; `name` stands for the file in errors."""
        return cls(*inventory_sources.read_text(text, name, "ini"))

    def group_hosts(self, group: str) -> tuple[str, ...]:
        """Hosts of `group` and of its descendants, in Ansible's `Group.get_hosts` order."""
        return self._members[group]

    def select(self, pattern: str | Sequence[str], limit: str | None = None) -> list[Host]:
        """Hosts matching an Ansible host pattern, then restricted to `limit` (`--limit`).

        See `distrib.patterns` for the pattern language. `limit` may be `@retryfile`. Raises
        ConfigError naming the pattern if a term names nothing or no host is selected.
        """
        if limit is None:
            names = patterns.select(self, pattern)
        else:
            names = patterns.select_limited(self, pattern, limit)
        return [self.hosts[n] for n in names]

    def to_list_json(self) -> dict[str, Any]:
        """The data `ansible-inventory --list` prints: groups, then `_meta.hostvars`.

        Each group has its direct `hosts` and its `children` (empty keys and groups left out, as
        Ansible does); hostvars are each host's effective vars (hosts without vars left out).
        """
        result: dict[str, Any] = {}
        seen: set[str] = set()

        def walk(name: str) -> None:
            group = self.groups[name]
            entry: dict[str, Any] = {}
            if name != "all" and group.hosts:
                entry["hosts"] = list(group.hosts)
            if group.children:
                entry["children"] = list(group.children)
            if entry:
                result[name] = entry
            for child in group.children:
                if child not in seen:
                    seen.add(child)
                    walk(child)

        walk("all")
        hostvars = {h.name: masked(_plain(h.vars)) for h in self.hosts.values() if h.vars}
        result["_meta"] = {"hostvars": hostvars}
        return result

    def graph(self, group: str = "all", show_vars: bool = False) -> str:
        """The tree `ansible-inventory --graph [group] [--vars]` prints."""
        if group not in self.groups:
            raise ConfigError(f"--graph needs a group name; there is no group {group!r}")
        lines: list[str] = []

        def name(text: str, depth: int) -> str:
            return "  |" * depth + "--" + text if depth else text

        def show(values: Mapping[str, Any], depth: int) -> None:
            if show_vars:
                shown = masked(values)
                for key in sorted(shown):
                    lines.append(name(f"{{{key} = {shown[key]}}}", depth))

        def walk(g: Group, depth: int) -> None:
            lines.append(name(f"@{g.name}:", depth))
            for child in g.children:
                walk(self.groups[child], depth + 1)
            if g.name != "all":
                for h in g.hosts:
                    lines.append(name(h, depth + 1))
                    show(self.hosts[h].vars, depth + 2)
            show(_group_vars_shown(g), depth + 1)

        walk(self.groups[group], 0)
        return "\n".join(lines)


def choose_reader() -> str:
    """The reader: "ansible" when ansible-core is importable, else "builtin".

    $DISTRIB_INVENTORY_PARSER (auto | builtin | ansible) forces one; ansible without
    ansible-core installed is a ConfigError."""
    wanted = os.environ.get(PARSER_ENV, "").strip().lower() or "auto"
    if wanted not in ("auto", "builtin", "ansible"):
        raise ConfigError(f"${PARSER_ENV}={wanted!r}: must be auto, builtin or ansible")
    if wanted == "builtin":
        return "builtin"
    from distrib import ansible_core

    if ansible_core.available():
        return "ansible"
    if wanted == "ansible":
        raise ConfigError(f"${PARSER_ENV}=ansible, but ansible-core is not installed: {EXTRA_HINT}")
    return "builtin"


def _group_vars_shown(group: Group) -> dict[str, Any]:
    shown = dict(group.vars)
    if group.priority != 1:
        shown["ansible_group_priority"] = group.priority
    return shown


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
