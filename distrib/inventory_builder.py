"""The built-in reader's inventory under construction: Ansible's InventoryData, every fact
remembering where it came from, and a host's var precedence (`Builder._effective_vars`).

The parsers (`distrib.inventory_sources`, `distrib.inventory_ini`) add groups, hosts and vars;
`Builder.build` reconciles them into `Host` and `Group` records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distrib.errors import ConfigError
from distrib.inventory_records import (
    EXTRA_HINT,
    Group,
    Host,
    Loaded,
    Where,
    at,
    fmt,
    used_var,
)

__all__ = ["Builder", "VarsDir", "check_var_name", "populate_hosts"]

_IMPLICIT = "<implicit>"


@dataclass
class _G:
    name: str
    where: Where
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, tuple[Any, Where]] = field(default_factory=dict)
    priority: int = 1
    # `hosts` as a set: a membership test on the list made 100,000 hosts take a minute
    host_set: set[str] = field(default_factory=set)


@dataclass
class VarsDir:
    """The vars files of one directory's group_vars/ and host_vars/, by group and host name."""

    groups: dict[str, dict[str, tuple[Any, Where]]] = field(default_factory=dict)
    hosts: dict[str, dict[str, tuple[Any, Where]]] = field(default_factory=dict)


@dataclass
class _H:
    name: str
    where: Where
    groups: list[str] = field(default_factory=list)
    vars: dict[str, tuple[Any, Where]] = field(default_factory=dict)


class Builder:
    """Ansible's InventoryData, with every fact remembering where it came from."""

    def __init__(self) -> None:
        self.groups: dict[str, _G] = {}
        self.hosts: dict[str, _H] = {}
        # group_vars/ and host_vars/ beside each inventory source (in source order, repeats
        # kept as Ansible keeps them), and beside the playbook
        self.inventory_vars: list[VarsDir] = []
        self.playbook_vars: list[VarsDir] = []
        for name in ("all", "ungrouped"):
            self.groups[name] = _G(name, (_IMPLICIT, None))
        self.add_child("all", "ungrouped", (_IMPLICIT, None))

    def add_group(self, name: Any, where: Where) -> _G:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"group name must be a non-empty string, got {name!r}", **at(where))
        if name not in self.groups:
            self.groups[name] = _G(name, where)
        return self.groups[name]

    def add_host(self, name: str, group: str | None, where: Where) -> _H:
        if not name:
            raise ConfigError("empty host name", **at(where))
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

    def set_host_var(self, host: str, key: Any, value: Any, where: Where) -> None:
        check_var_name(key, where)
        h = self.hosts[host]
        if key in h.vars:
            old, old_where = h.vars[key]
            if old != value or type(old) is not type(value):
                raise ConfigError(
                    f"host {host!r} is defined twice with conflicting values for {key!r}: "
                    f"{old!r} at {fmt(old_where)} and {value!r} here",
                    **at(where),
                    hint="define each host var once, or move it to a group's vars",
                )
            return
        h.vars[key] = (value, where)

    def set_group_var(self, group: str, key: Any, value: Any, where: Where) -> None:
        check_var_name(key, where)
        g = self.groups[group]
        if key == "ansible_group_priority":  # Group.set_variable: a property, not a var
            if isinstance(value, bool):
                value = None
            try:
                g.priority = int(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"ansible_group_priority of group {group!r} must be an integer, got {value!r}",
                    **at(where),
                ) from None
            return
        g.vars[key] = (value, where)  # later definitions win, as in Ansible

    def add_child(self, parent: str, child: str, where: Where) -> None:
        p, c = self.groups[parent], self.groups[child]
        if child in p.children:
            return
        if child == "all":
            raise ConfigError(
                f"group 'all' cannot be a child of {parent!r}: that creates a cycle", **at(where)
            )
        if child == parent or child in self._ancestors(parent):
            raise ConfigError(
                f"adding group {child!r} as a child of {parent!r} creates a cycle: "
                f"{child!r} would be its own ancestor",
                **at(where),
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

    def build(self, sources: tuple[str, ...]) -> Loaded:
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
                source=fmt(g.where),
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
                source=fmt(h.where),
            )
        members = {name: self._group_members(name) for name in self.groups}
        return Loaded(hosts, groups, sources, members)

    def _effective_vars(self, h: _H, sorted_groups: list[str]) -> dict[str, tuple[Any, Where]]:
        """VariableManager.get_vars for a host, inventory part, with the default
        VARIABLE_PRECEDENCE (all_inventory, groups_inventory, all_plugins_inventory,
        all_plugins_play, groups_plugins_inventory, groups_plugins_play), then the host's
        inline vars, its inventory host_vars, its playbook host_vars. `sorted_groups`: the
        host's groups but `all`, in sort_groups order."""
        effective: dict[str, tuple[Any, Where]] = dict(self.groups["all"].vars)
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


def check_var_name(key: Any, where: Where) -> None:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"variable name must be a non-empty string, got {key!r}", **at(where))


def _as_port(value: Any) -> int | None:
    """A port number 1-65535 (an int or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    return None


def _check_port(host: str, effective: Mapping[str, tuple[Any, Where]]) -> None:
    for key in ("ansible_port", "ansible_ssh_port"):
        if key in effective:
            value, where = effective[key]
            if value is not None and _as_port(value) is None:
                raise ConfigError(
                    f"host {host!r}: invalid port {value!r} (must be an integer 1-65535)",
                    **at(where),
                    key=key,
                )


def _has_template(value: Any) -> bool:
    """A value Ansible would template: a string with `{{`, `{%` or `{#` in it, at any depth."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value or "{#" in value
    if isinstance(value, Mapping):
        return any(_has_template(k) or _has_template(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_template(v) for v in value)
    return False


def _refuse_templates(host: str, effective: Mapping[str, tuple[Any, Where]]) -> None:
    """The built-in reader does not template: a Jinja value in a var distrib uses would be
    used as literal text (a wrong host, port or user), so it is refused. Other vars may hold
    templates: distrib never reads them."""
    for key, (value, where) in effective.items():
        if used_var(key) and _has_template(value):
            raise ConfigError(
                f"host {host!r}: {value!r} is a Jinja template, which the built-in inventory "
                f"reader cannot evaluate: {EXTRA_HINT}",
                **at(where),
                key=key,
            )


def _later_port(host: _H, port: int, where: Where) -> None:
    """`host:port` where the host already exists: Ansible ignores that port
    (`InventoryData.add_host` sets it only on creation), so connects elsewhere than written.
    The same port again is fine; another one is refused rather than silently dropped."""
    old = host.vars.get("ansible_port")
    if old is not None and old[0] == port:
        return
    first = (
        f"with port {old[0]} at {fmt(old[1])}" if old else f"without a port at {fmt(host.where)}"
    )
    raise ConfigError(
        f"host {host.name!r} is defined twice with conflicting values for 'ansible_port': "
        f"{port} here, but first {first}; Ansible uses only the first appearance's port",
        **at(where),
    )


def populate_hosts(
    builder: Builder,
    names: Iterable[str],
    group: str,
    port: int | None,
    variables: Mapping[Any, Any],
    where: Where,
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
