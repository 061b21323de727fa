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

import ast
import os
import re
import shlex
import string
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from distrib import patterns, yamlio
from distrib.errors import ConfigError

if TYPE_CHECKING:
    from distrib.ansible_core import VaultOptions

__all__ = ["Group", "Host", "Inventory", "choose_reader", "expand_host_range"]

DEFAULT_SSH_PORT = 22

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
_USED_ANSIBLE_VARS = frozenset(
    {
        *(name for names in CONNECTION_ALIASES.values() for name in names),
        *("ansible_connection", "ansible_timeout", "ansible_ssh_common_args"),
        "ansible_ssh_extra_args",
    }
)
EXTRA_HINT = "pip install 'distrib[ansible]' (ansible-core) to read it as Ansible does"
PARSER_ENV = "DISTRIB_INVENTORY_PARSER"  # auto (default) | builtin | ansible
# One inventory line's host range may name at most this many hosts: `h[0:99999999]` (a typo)
# would otherwise build a list of 10^8 names before anything is checked (issue 19).
MAX_RANGE_HOSTS = 100_000

# Inventory plugins' file choice (ansible-core 2.19+): the yaml plugin takes these extensions,
# the ini plugin `.ini` and extension-less files; a directory skips these names.
YAML_EXTENSIONS = (".yaml", ".yml", ".json")
_DIR_IGNORE_EXTS = (
    *(".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst"),
    *(".orig", ".cfg", ".retry"),
)
_DIR_IGNORE_NAMES = re.compile(r"^\.|^host_vars$|^group_vars$|^vars_plugins$")

_GROUP_KEYS = ("hosts", "vars", "children")
_IMPLICIT = "<implicit>"


# --- the records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """One inventory host with its effective vars (group vars merged, precedence applied)."""

    name: str
    vars: Mapping[str, Any] = field(hash=False)
    groups: tuple[str, ...]  # all groups containing it, ancestors and 'all' included
    source: str  # "file:line" where it was first defined

    @property
    def address(self) -> str:
        """Where to connect: `ansible_ssh_host`, else `ansible_host`, else the name.

        When several aliases of one setting are set, the one Ansible's ssh connection plugin
        lists last wins (`ConfigManager._loop_entries`), whatever level set each."""
        value = _first_var(self.vars, *reversed(CONNECTION_ALIASES["host"]))
        return self.name if value is None else str(value)

    @property
    def port(self) -> int:
        """`ansible_ssh_port`, else `ansible_port`, else 22. ConfigError if not 1-65535."""
        value = _first_var(self.vars, *reversed(CONNECTION_ALIASES["port"]))
        if value is None:
            return DEFAULT_SSH_PORT
        port = _as_port(value)
        if port is None:
            raise ConfigError(_bad_port(self.name, value), file=self.source)
        return port

    @property
    def user(self) -> str | None:
        """`ansible_ssh_user`, else `ansible_user`; None to let ssh decide."""
        value = _first_var(self.vars, *reversed(CONNECTION_ALIASES["user"]))
        return None if value is None else str(value)

    @property
    def key_file(self) -> str | None:
        """`ansible_ssh_private_key_file`, else `ansible_private_key_file`, `~` expanded."""
        value = _first_var(self.vars, *reversed(CONNECTION_ALIASES["key_file"]))
        return None if value is None else os.path.expanduser(str(value))

    @property
    def connection(self) -> str | None:
        """`ansible_connection` (`ssh`, `local`, ...), None when unset."""
        value = self.vars.get("ansible_connection")
        return None if value is None else str(value)

    @property
    def password(self) -> str | None:
        """The SSH password (`ansible_ssh_password`, `ansible_ssh_pass`, `ansible_password`).
        A secret: never print or log it."""
        value = _first_var(self.vars, *reversed(CONNECTION_ALIASES["password"]))
        return None if value is None else str(value)

    @property
    def become_password(self) -> str | None:
        """`ansible_sudo_pass`, `ansible_become_pass`, `ansible_become_password` (Ansible's
        sudo plugin order). A secret: never print or log it."""
        value = _first_var(self.vars, *reversed(CONNECTION_ALIASES["become_password"]))
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

            loaded: Inventory = ansible_core.load_inventory(
                sources, playbook_dir, vault=vault, extra_vars=extra_vars
            )
            return loaded
        if vault is not None and vault.given:
            raise ConfigError(f"vault options need ansible-core: {EXTRA_HINT}")
        builder = _Builder()
        bases: list[str] = []
        for source in sources:
            if not source:
                continue
            if "," in source and not os.path.exists(source):
                _parse_host_list(builder, source)
                continue
            path = os.path.expanduser(source)
            _parse_path(builder, path)
            bases.append(path if os.path.isdir(path) else os.path.dirname(path) or ".")
        read: dict[str, _VarsDir] = {}
        for base in bases:  # every source's, in order, repeats included (Ansible's loop)
            if base not in read:
                read[base] = _read_vars_dir(builder, base)
            builder.inventory_vars.append(read[base])
        if playbook_dir is not None:
            builder.playbook_vars.append(_read_vars_dir(builder, playbook_dir))
        return builder.build(tuple(sources))

    @classmethod
    def from_yaml_text(cls, text: str, name: str = "<inventory>") -> Inventory:
        """Parse one YAML inventory given as text; `name` stands for the file in errors."""
        builder = _Builder()
        _parse_yaml(builder, _loads_yaml(text, name), name)
        return builder.build((name,))

    @classmethod
    def from_ini_text(cls, text: str, name: str = "<inventory>") -> Inventory:
        """Parse one INI inventory given as text; `name` stands for the file in errors."""
        builder = _Builder()
        _parse_ini(builder, text, name)
        return builder.build((name,))

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
        hostvars = {h.name: _masked(_plain(h.vars)) for h in self.hosts.values() if h.vars}
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
                shown = _masked(values)
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


# --- building (mutable, private) --------------------------------------------------------------

_Where = tuple[str, Optional[int]]  # (file, line)


def _at(where: _Where) -> dict[str, Any]:
    return {"file": where[0], "line": where[1]}


def _fmt(where: _Where) -> str:
    return where[0] if where[1] is None else f"{where[0]}:{where[1]}"


@dataclass
class _G:
    name: str
    where: _Where
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, tuple[Any, _Where]] = field(default_factory=dict)
    priority: int = 1
    # `hosts` as a set: a membership test on the list made 100,000 hosts take a minute
    host_set: set[str] = field(default_factory=set)


@dataclass
class _VarsDir:
    """The vars files of one directory's group_vars/ and host_vars/, by group and host name."""

    groups: dict[str, dict[str, tuple[Any, _Where]]] = field(default_factory=dict)
    hosts: dict[str, dict[str, tuple[Any, _Where]]] = field(default_factory=dict)


@dataclass
class _H:
    name: str
    where: _Where
    groups: list[str] = field(default_factory=list)
    vars: dict[str, tuple[Any, _Where]] = field(default_factory=dict)


class _Builder:
    """Ansible's InventoryData, with every fact remembering where it came from."""

    def __init__(self) -> None:
        self.groups: dict[str, _G] = {}
        self.hosts: dict[str, _H] = {}
        # group_vars/ and host_vars/ beside each inventory source (in source order, repeats
        # kept as Ansible keeps them), and beside the playbook
        self.inventory_vars: list[_VarsDir] = []
        self.playbook_vars: list[_VarsDir] = []
        for name in ("all", "ungrouped"):
            self.groups[name] = _G(name, (_IMPLICIT, None))
        self.add_child("all", "ungrouped", (_IMPLICIT, None))

    def add_group(self, name: Any, where: _Where) -> _G:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"group name must be a non-empty string, got {name!r}", **_at(where))
        if name not in self.groups:
            self.groups[name] = _G(name, where)
        return self.groups[name]

    def add_host(self, name: str, group: str | None, where: _Where) -> _H:
        if not name:
            raise ConfigError("empty host name", **_at(where))
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = _H(name, where)
        if group is not None:
            g = self.groups[group]
            if name not in g.host_set:
                g.host_set.add(name)
                g.hosts.append(name)
                host.groups.append(group)
        return host

    def set_host_var(self, host: str, key: Any, value: Any, where: _Where) -> None:
        _check_var_name(key, where)
        h = self.hosts[host]
        if key in h.vars:
            old, old_where = h.vars[key]
            if old != value or type(old) is not type(value):
                raise ConfigError(
                    f"host {host!r} is defined twice with conflicting values for {key!r}: "
                    f"{old!r} at {_fmt(old_where)} and {value!r} here",
                    **_at(where),
                    hint="define each host var once, or move it to a group's vars",
                )
            return
        h.vars[key] = (value, where)

    def set_group_var(self, group: str, key: Any, value: Any, where: _Where) -> None:
        _check_var_name(key, where)
        g = self.groups[group]
        if key == "ansible_group_priority":  # Group.set_variable: a property, not a var
            if isinstance(value, bool):
                value = None
            try:
                g.priority = int(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"ansible_group_priority of group {group!r} must be an integer, got {value!r}",
                    **_at(where),
                ) from None
            return
        g.vars[key] = (value, where)  # later definitions win, as in Ansible

    def add_child(self, parent: str, child: str, where: _Where) -> None:
        p, c = self.groups[parent], self.groups[child]
        if child in p.children:
            return
        if child == "all":
            raise ConfigError(
                f"group 'all' cannot be a child of {parent!r}: that creates a cycle", **_at(where)
            )
        if child == parent or child in self._ancestors(parent):
            raise ConfigError(
                f"adding group {child!r} as a child of {parent!r} creates a cycle: "
                f"{child!r} would be its own ancestor",
                **_at(where),
            )
        p.children.append(child)
        c.parents.append(parent)

    def _ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.groups[name].parents)
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo.extend(self.groups[g].parents)
        return seen

    def reconcile(self) -> None:
        """InventoryData.reconcile_inventory: everything under 'all', lone hosts in 'ungrouped'."""
        for g in list(self.groups.values()):
            if g.name != "all" and not g.parents:
                self.add_child("all", g.name, (_IMPLICIT, None))
        ungrouped = self.groups["ungrouped"]
        for host in self.hosts.values():
            others = set(host.groups) - {"all", "ungrouped"}
            if "ungrouped" in host.groups:
                if others:
                    ungrouped.host_set.discard(host.name)
                    host.groups.remove("ungrouped")
            elif not others:
                ungrouped.host_set.add(host.name)
                ungrouped.hosts.append(host.name)
                host.groups.append("ungrouped")
        ungrouped.hosts = [h for h in ungrouped.hosts if h in ungrouped.host_set]

    def build(self, sources: tuple[str, ...]) -> Inventory:
        self.reconcile()
        depth: dict[str, int] = {}

        def depth_of(name: str) -> int:
            if name not in depth:
                parents = self.groups[name].parents
                depth[name] = max((depth_of(p) + 1 for p in parents), default=0)
            return depth[name]

        def order_key(name: str) -> tuple[int, int, str]:  # helpers.sort_groups
            return (depth_of(name), self.groups[name].priority, name)

        file_layers = [*self.inventory_vars, *self.playbook_vars]

        def group_vars_shown(g: _G) -> dict[str, Any]:  # inline vars, then its files'
            shown = {k: v for k, (v, _) in g.vars.items()}
            for layer in file_layers:
                shown.update({k: v for k, (v, _) in layer.groups.get(g.name, {}).items()})
            return shown

        groups = {
            g.name: Group(
                name=g.name,
                hosts=tuple(g.hosts),
                children=tuple(g.children),
                vars=group_vars_shown(g),
                source=_fmt(g.where),
                parents=tuple(g.parents),
                depth=depth_of(g.name),
                priority=g.priority,
            )
            for g in self.groups.values()
        }
        ancestors = {name: self._ancestors(name) for name in self.groups}
        hosts: dict[str, Host] = {}
        for h in self.hosts.values():
            member_of: set[str] = set()
            for g in h.groups:
                member_of.add(g)
                member_of |= ancestors[g]
            ordered = tuple(sorted(member_of, key=order_key))
            effective = self._effective_vars(h, [g for g in ordered if g != "all"])
            _check_port(h.name, effective)
            _refuse_templates(h.name, effective)
            hosts[h.name] = Host(
                name=h.name,
                vars={k: v for k, (v, _) in effective.items()},
                groups=ordered,
                source=_fmt(h.where),
            )
        members = {name: self._group_members(name) for name in self.groups}
        return Inventory(hosts=hosts, groups=groups, sources=sources, _members=members)

    def _effective_vars(self, h: _H, sorted_groups: list[str]) -> dict[str, tuple[Any, _Where]]:
        """VariableManager.get_vars for a host, inventory part, with the default
        VARIABLE_PRECEDENCE (all_inventory, groups_inventory, all_plugins_inventory,
        all_plugins_play, groups_plugins_inventory, groups_plugins_play), then the host's
        inline vars, its inventory host_vars, its playbook host_vars. `sorted_groups`: the
        host's groups but `all`, in sort_groups order."""
        effective: dict[str, tuple[Any, _Where]] = dict(self.groups["all"].vars)
        for g in sorted_groups:
            effective.update(self.groups[g].vars)
        for layers in (self.inventory_vars, self.playbook_vars):
            for layer in layers:
                effective.update(layer.groups.get("all", {}))
        for layers in (self.inventory_vars, self.playbook_vars):
            for layer in layers:
                for g in sorted_groups:
                    effective.update(layer.groups.get(g, {}))
        effective.update(h.vars)
        for layers in (self.inventory_vars, self.playbook_vars):
            for layer in layers:
                effective.update(layer.hosts.get(h.name, {}))
        return effective

    def _group_members(self, name: str) -> tuple[str, ...]:
        # Group._get_hosts: the group itself, its children, then deeper levels breadth first.
        # (Ansible walks deeper levels through a set; we keep definition order instead.)
        ordered = [name]
        seen = {name}
        level = [name]
        while level:
            nxt: list[str] = []
            for g in level:
                for child in self.groups[g].children:
                    if child not in seen:
                        seen.add(child)
                        nxt.append(child)
            ordered.extend(nxt)
            level = nxt
        result: list[str] = []
        got: set[str] = set()
        for g in ordered:
            for h in self.groups[g].hosts:
                if h not in got:
                    got.add(h)
                    result.append(h)
        return tuple(result)


def _check_var_name(key: Any, where: _Where) -> None:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"variable name must be a non-empty string, got {key!r}", **_at(where))


def _first_var(values: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if values.get(name) is not None:
            return values[name]
    return None


def _as_port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    return None


def _bad_port(host: str, value: Any) -> str:
    return f"host {host!r}: invalid port {value!r} (must be an integer 1-65535)"


def _check_port(host: str, effective: Mapping[str, tuple[Any, _Where]]) -> None:
    for key in ("ansible_port", "ansible_ssh_port"):
        if key in effective:
            value, where = effective[key]
            if value is not None and _as_port(value) is None:
                raise ConfigError(_bad_port(host, value), **_at(where), key=key)


def _has_template(value: Any) -> bool:
    """A value Ansible would template: a string with `{{`, `{%` or `{#` in it, at any depth."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value or "{#" in value
    if isinstance(value, Mapping):
        return any(_has_template(k) or _has_template(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_template(v) for v in value)
    return False


def _refuse_templates(host: str, effective: Mapping[str, tuple[Any, _Where]]) -> None:
    """The built-in reader does not template: a Jinja value in a var distrib uses would be
    used as literal text (a wrong host, port or user), so it is refused. Other vars may hold
    templates: distrib never reads them."""
    for key, (value, where) in effective.items():
        if (key in _USED_ANSIBLE_VARS or key.startswith("ansible_become") or key in
                DISTRIB_HOST_VARS) and _has_template(value):  # fmt: skip
            raise ConfigError(
                f"host {host!r}: {value!r} is a Jinja template, which the built-in inventory "
                f"reader cannot evaluate: {EXTRA_HINT}",
                **_at(where),
                key=key,
            )


def _masked(values: Mapping[str, Any]) -> dict[str, Any]:
    """Vars to show, password vars masked: they may be vault plaintext (never printed)."""
    return {k: MASK if k in SECRET_VARS and v not in (None, "") else v for k, v in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --- host names and ranges --------------------------------------------------------------------


def expand_host_range(pattern: str, where: _Where = ("<inventory>", None)) -> list[str]:
    """Expand `web[01:03].example` style ranges as Ansible's `expand_hostname_range` does.

    `[start:end]` and `[start:end:step]` are inclusive; numeric or single-letter bounds; a start
    with a leading zero pads every number to its width (start and end must then have the same
    width); an empty start is 0; several ranges multiply. Bad ranges are ConfigErrors.
    """
    if "[" not in pattern:
        return [pattern]
    head, _, rest = pattern.partition("[")
    body, closed, tail = rest.partition("]")

    def bad(why: str) -> ConfigError:
        return ConfigError(f"malformed host range in {pattern!r}: {why}", **_at(where))

    if not closed:
        raise bad("missing ']'")
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise bad("a range must be [begin:end] or [begin:end:step]")
    beg, end = bounds[0] or "0", bounds[1]
    if not end:
        raise bad("the range must have an end value")
    try:
        step = int(bounds[2]) if len(bounds) == 3 else 1
    except ValueError:
        raise bad(f"the step {bounds[2]!r} is not a number") from None
    if step <= 0:
        raise bad("the step must be a positive number")
    seq: Sequence[str]
    if _is_number(beg) and _is_number(end):
        if int(beg) > int(end):
            raise bad(f"the start {beg} is after the end {end}")
        width = len(beg) if beg[0] == "0" and len(beg) > 1 else 0
        if width and width != len(end):
            raise bad("with a leading zero, begin and end must have the same width")
        numbers = range(int(beg), int(end) + 1, step)
        if len(numbers) > MAX_RANGE_HOSTS:  # checked before anything is built (issue 19)
            raise _range_too_big(pattern, len(numbers), where)
        seq = [str(i).zfill(width) for i in numbers]
    elif _is_letter(beg) and _is_letter(end):
        i_beg, i_end = string.ascii_letters.index(beg), string.ascii_letters.index(end)
        if i_beg > i_end:
            raise bad(f"the start {beg!r} is after the end {end!r}")
        seq = string.ascii_letters[i_beg : i_end + 1 : step]
    else:
        raise bad("bounds must be both numbers or both single letters")
    # `head` has no range and each item is plain, so the tail expands the same for every item
    tails = expand_host_range(tail, where)
    if len(seq) * len(tails) > MAX_RANGE_HOSTS:
        raise _range_too_big(pattern, len(seq) * len(tails), where)
    return [f"{head}{item}{rest}" for item in seq for rest in tails]


def _range_too_big(pattern: str, count: int, where: _Where) -> ConfigError:
    return ConfigError(
        f"host range {pattern!r} expands to {count:,} hosts, more than the "
        f"{MAX_RANGE_HOSTS:,} one inventory line may define",
        **_at(where),
        hint="check the range's bounds (a typo adds digits), or split it over several lines",
    )


def _is_number(text: str) -> bool:
    # ASCII only: str.isdigit() accepts '²', which int() refuses; 18 digits fit any real range
    return text.isascii() and text.isdigit() and len(text) <= 18


def _is_letter(text: str) -> bool:
    return len(text) == 1 and text in string.ascii_letters


def _expand_hostpattern(pattern: Any, where: _Where) -> tuple[list[str], int | None]:
    """BaseInventoryPlugin._expand_hostpattern: optional `:port`, then ranges."""
    if not isinstance(pattern, str):
        raise ConfigError(
            f"host name {pattern!r} must be a string", **_at(where), hint="quote numbers and IPs"
        )
    parsed = patterns.parse_address(pattern, allow_ranges=True)
    name, port = parsed if parsed is not None else (pattern, None)
    return expand_host_range(name, where), port


def _later_port(host: _H, port: int, where: _Where) -> None:
    """`host:port` where the host already exists: Ansible ignores that port
    (`InventoryData.add_host` sets it only on creation), so connects elsewhere than written.
    The same port again is fine; another one is refused rather than silently dropped."""
    old = host.vars.get("ansible_port")
    if old is not None and old[0] == port:
        return
    first = (
        f"with port {old[0]} at {_fmt(old[1])}" if old else f"without a port at {_fmt(host.where)}"
    )
    raise ConfigError(
        f"host {host.name!r} is defined twice with conflicting values for 'ansible_port': "
        f"{port} here, but first {first}; Ansible uses only the first appearance's port",
        **_at(where),
    )


def _populate_hosts(
    builder: _Builder,
    names: Iterable[str],
    group: str,
    port: int | None,
    variables: Mapping[Any, Any],
    where: _Where,
    var_line: Any = None,
) -> None:
    for name in names:
        known = builder.hosts.get(name)
        if port is not None and known is not None:
            _later_port(known, port, where)
        builder.add_host(name, group, where)
        if port is not None and known is None:
            builder.set_host_var(name, "ansible_port", port, where)
        for key, value in variables.items():
            line = var_line(key) if var_line else where[1]
            builder.set_host_var(name, key, value, (where[0], line))


# --- sources ----------------------------------------------------------------------------------


def _parse_path(builder: _Builder, path: str) -> None:
    if os.path.isdir(path):
        try:
            entries = sorted(os.listdir(path))
        except OSError as exc:
            raise ConfigError(
                f"cannot read inventory directory: {exc.strerror or exc}", file=path
            ) from None
        for entry in entries:
            if _DIR_IGNORE_NAMES.search(entry) or entry.endswith(_DIR_IGNORE_EXTS):
                continue
            _parse_path(builder, os.path.join(path, entry))
        return
    text = yamlio.read_text(path, "inventory")
    _refuse_ansible_only(text, path)
    if text.startswith("#!") and os.access(path, os.X_OK):  # the script plugin comes first
        raise ConfigError(
            f"an executable inventory script, which the built-in inventory reader does not "
            f"run: {EXTRA_HINT}",
            file=path,
            line=1,
        )
    ext = os.path.splitext(path)[1].lower()
    if ext in YAML_EXTENSIONS or (ext == "" and _looks_like_yaml_inventory(text, path)):
        _parse_yaml(builder, _loads_yaml(text, path), path)
    elif ext == ".toml":
        raise ConfigError(
            f"a TOML inventory, which the built-in inventory reader does not read: {EXTRA_HINT}",
            file=path,
        )
    else:
        _parse_ini(builder, text, path)


def _read_vars_dir(builder: _Builder, base: str) -> _VarsDir:
    """group_vars/ and host_vars/ in `base` (Ansible's host_group_vars plugin).

    `group_vars/NAME` may be NAME, NAME.yml, NAME.yaml, NAME.json or a directory NAME/ of such
    files (read sorted, recursively; later files win). Only groups and hosts that exist are
    read: files for unknown names are ignored, as Ansible does. Where these vars stand in a
    host's precedence: `_Builder._effective_vars`.
    """
    found = _VarsDir()
    for kind, known, into in (
        ("group_vars", builder.groups, found.groups),
        ("host_vars", builder.hosts, found.hosts),
    ):
        folder = os.path.join(base, kind)
        if not os.path.isdir(folder):
            continue
        for name in list(known):
            if name.startswith(os.path.sep):  # Ansible skips chroot-like names
                continue
            for path in _vars_files(folder, name):
                data = _load_yaml_file(path, f"{kind} file")
                if data is None:
                    continue
                if not isinstance(data, Mapping):
                    raise ConfigError(
                        f"{kind} file must be a mapping of vars, got {type(data).__name__}",
                        file=path,
                        line=getattr(data, "line", None),
                    )
                values = into.setdefault(name, {})
                for key, value in data.items():
                    where: _Where = (path, _line_of(data, key, None))
                    _check_var_name(key, where)
                    values[key] = (value, where)
    return found


def _refuse_ansible_only(text: str, path: str) -> None:
    """What only ansible-core reads, refused in one line naming the extra."""
    if text.lstrip().startswith("$ANSIBLE_VAULT;"):
        raise ConfigError(
            f"a vault-encrypted file, which the built-in inventory reader cannot decrypt: "
            f"{EXTRA_HINT}",
            file=path,
            line=1,
        )


def _load_yaml_file(path: str, what: str) -> Any:
    text = yamlio.read_text(path, what)
    _refuse_ansible_only(text, path)
    return _loads_yaml(text, path)


def _loads_yaml(text: str, path: str) -> Any:
    try:
        return yamlio.loads(text, path)
    except ConfigError as exc:
        for tag in ("!vault", "!unsafe"):
            if f"for the tag '{tag}'" in exc.message:
                raise ConfigError(
                    f"a {tag} value, which the built-in inventory reader cannot read: {EXTRA_HINT}",
                    file=exc.file,
                    line=exc.line,
                ) from None
        raise


def _vars_files(folder: str, name: str) -> list[str]:
    """DataLoader.find_vars_files: NAME, NAME.yml, NAME.yaml, NAME.json, or a directory NAME."""
    found: list[str] = []
    for candidate in [name, *(name + ext for ext in YAML_EXTENSIONS)]:
        path = os.path.join(folder, candidate)
        if os.path.isdir(path):
            found.extend(_dir_vars_files(path))
        elif os.path.isfile(path):
            found.append(path)
    return found


def _dir_vars_files(path: str) -> list[str]:
    """DataLoader._get_dir_vars_files: entries sorted by name, a subdirectory read where it
    sorts (only one without an extension), hidden and `~` backup files skipped."""
    found: list[str] = []
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise ConfigError(f"cannot read vars directory: {exc.strerror or exc}", file=path) from None
    for entry in entries:
        if entry.startswith(".") or entry.endswith("~"):
            continue
        ext = os.path.splitext(entry)[1]
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not ext:
            found.extend(_dir_vars_files(full))
        elif os.path.isfile(full) and ext in ("", *YAML_EXTENSIONS):
            found.append(full)
    return found


def _looks_like_yaml_inventory(text: str, name: str) -> bool:
    """An extension-less file is YAML if it parses to a mapping of group mappings."""
    try:
        data = yamlio.loads(text, name)
    except ConfigError:
        return False
    return (
        isinstance(data, Mapping)
        and bool(data)
        and all(v is None or isinstance(v, Mapping) for v in data.values())
    )


def _parse_host_list(builder: _Builder, source: str) -> None:
    """The host_list plugin: `h1,h2:2222,` -- no ranges, hosts in 'ungrouped'."""
    where: _Where = (source, 1)
    for item in source.split(","):
        item = item.strip()
        if not item:
            continue
        parsed = patterns.parse_address(item, allow_ranges=False)
        name, port = parsed if parsed is not None else (item, None)
        if name in builder.hosts:  # host_list adds a host only once
            continue
        builder.add_host(name, "ungrouped", where)
        if port is not None:
            builder.set_host_var(name, "ansible_port", port, where)


# --- YAML (plugins/inventory/yaml.py) ---------------------------------------------------------


def _line_of(mapping: Any, key: Any, default: int | None) -> int | None:
    if isinstance(mapping, yamlio.LineDict):
        return mapping.key_line(key)
    return default


def _parse_yaml(builder: _Builder, data: Any, name: str) -> None:
    if not data:
        raise ConfigError("empty inventory", file=name)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"a YAML inventory must map group names (like `all:`) to groups, "
            f"got {type(data).__name__}",
            file=name,
            line=getattr(data, "line", None),
        )
    if "plugin" in data:
        raise ConfigError(
            f"an inventory plugin configuration (plugin: {data['plugin']}), which the "
            f"built-in inventory reader does not run: {EXTRA_HINT}",
            file=name,
            line=_line_of(data, "plugin", None),
        )
    for group, group_data in data.items():
        _parse_yaml_group(builder, group, group_data, (name, _line_of(data, group, None)))


def _parse_yaml_group(builder: _Builder, group: Any, data: Any, where: _Where) -> str:
    name = builder.add_group(group, where).name
    if data is None:
        return name
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"group {name!r} must be a mapping with hosts/vars/children, "
            f"got {type(data).__name__} {data!r}",
            **_at(where),
        )
    file = where[0]
    for key, value in data.items():
        here: _Where = (file, _line_of(data, key, where[1]))
        if key not in _GROUP_KEYS:
            raise ConfigError(
                f"unexpected key {key!r} in group {name!r}",
                **_at(here),
                hint="a group may only have hosts, vars and children "
                "(host vars go under `hosts: {host: {var: value}}`)",
            )
        if value is None:
            continue
        if isinstance(value, str) and key != "vars":  # yaml plugin: `hosts: web1` is allowed
            value = {value: None}
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{key!r} of group {name!r} must be a mapping, got {type(value).__name__}",
                **_at(here),
                hint="hosts: and children: map names to (possibly empty) entries: `web1:`"
                if key != "vars"
                else None,
            )
        if key == "vars":
            for var, val in value.items():
                builder.set_group_var(name, var, val, (file, _line_of(value, var, here[1])))
        elif key == "children":
            for child, child_data in value.items():
                child_where = (file, _line_of(value, child, here[1]))
                child_name = _parse_yaml_group(builder, child, child_data, child_where)
                builder.add_child(name, child_name, child_where)
        else:
            for pattern, host_vars in value.items():
                host_where = (file, _line_of(value, pattern, here[1]))
                names, port = _expand_hostpattern(pattern, host_where)
                if host_vars is None:
                    host_vars = {}
                if not isinstance(host_vars, Mapping):
                    raise ConfigError(
                        f"host {pattern!r} in group {name!r} must map to its vars, "
                        f"got {type(host_vars).__name__} {host_vars!r}",
                        **_at(host_where),
                    )
                var_line = host_vars.key_line if isinstance(host_vars, yamlio.LineDict) else None
                _populate_hosts(builder, names, name, port, host_vars, host_where, var_line)
    return name


# --- INI (plugins/inventory/ini.py) -----------------------------------------------------------

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUPNAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


def _parse_ini_value(text: str) -> Any:
    """InventoryModule._parse_value: a Python literal if it is one, else the string as is."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _parse_ini(builder: _Builder, text: str, name: str) -> None:
    """Ansible's INI inventory: the file starts as `[ungrouped]`; [g], [g:vars], [g:children]."""
    group, state = "ungrouped", "hosts"
    # group -> (line, state, parents) for names used before being declared (like Ansible's
    # pending_declarations): [g:vars] needs a [g] or [g:children] somewhere in the file, and
    # a group listed in [p:children] must be declared somewhere as [g] or [g:children].
    pending: dict[str, tuple[int, str, list[str]]] = {}

    def resolve_children(child: str) -> None:
        line, _, parents = pending.pop(child)
        for parent in parents:
            builder.add_child(parent, child, (name, line))
            if parent in pending and pending[parent][1] == "children":
                resolve_children(parent)

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where: _Where = (name, lineno)
        if not line or line[0] in "#;":
            continue
        m = _SECTION.match(line)
        if m:
            group, state = m.group(1), m.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise ConfigError(
                    f"section [{group}:{state}] has unknown type {state!r}",
                    **_at(where),
                    hint="use [group], [group:vars] or [group:children]",
                )
            if group not in builder.groups:
                if state == "vars" and group not in pending:
                    pending[group] = (lineno, "vars", [])
                builder.add_group(group, where)
            if group in pending and state != "vars":
                if pending[group][1] == "children":
                    resolve_children(group)
                else:
                    del pending[group]
            continue
        if line.startswith("[") and line.endswith("]"):
            raise ConfigError(
                f"invalid section header {line!r}",
                **_at(where),
                hint="no spaces or other invalid characters inside [group:type]",
            )
        if state == "hosts":
            _parse_ini_host(builder, line, group, where)
        elif state == "vars":
            key, eq, value = line.partition("=")
            if not eq:
                raise ConfigError(
                    f"expected key=value in [{group}:vars], got {line!r}", **_at(where)
                )
            builder.set_group_var(group, key.strip(), _parse_ini_value(value.strip()), where)
        else:
            m = _GROUPNAME.match(line)
            if not m:
                raise ConfigError(
                    f"expected a group name in [{group}:children], got {line!r}", **_at(where)
                )
            child = m.group(1)
            if child not in builder.groups:
                if child in pending:
                    pending[child][2].append(group)
                else:
                    pending[child] = (lineno, "children", [group])
            else:
                if child in pending and pending[child][1] == "vars":
                    del pending[child]  # [child:vars] came first; now it is a known child
                builder.add_child(group, child, where)

    for child, (lineno, state, parents) in pending.items():
        if state == "vars":
            raise ConfigError(
                f"section [{child}:vars] is for a group that is never defined",
                file=name,
                line=lineno,
                hint=f"add a [{child}] section or list {child} in some [parent:children]",
            )
        raise ConfigError(
            f"section [{parents[-1]}:children] names group {child!r}, which is never defined",
            file=name,
            line=lineno,
            hint=f"add a [{child}] section (it may be empty)",
        )


def _parse_ini_host(builder: _Builder, line: str, group: str, where: _Where) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError(f"cannot parse host line {line!r}: {exc}", **_at(where)) from None
    if not tokens:
        return
    names, port = _expand_hostpattern(tokens[0], where)
    variables: dict[str, Any] = {}
    for token in tokens[1:]:
        key, eq, value = token.partition("=")
        if not eq:
            raise ConfigError(
                f"expected key=value after the host name, got {token!r}",
                **_at(where),
                hint="quote values that contain spaces: key='a b'",
            )
        variables[key] = _parse_ini_value(value)
    _populate_hosts(builder, names, group, port, variables, where)
