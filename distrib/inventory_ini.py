"""Ansible's INI inventory (plugins/inventory/ini.py) for the built-in reader."""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from typing import Any

from distrib.errors import ConfigError
from distrib.hostrange import expand_hostpattern
from distrib.inventory_builder import Builder, populate_hosts
from distrib.inventory_records import Where, at

__all__ = ["parse_ini"]


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


def parse_ini(builder: Builder, text: str, name: str) -> None:
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
        where: Where = (name, lineno)
        if not line or line[0] in "#;":
            continue
        m = _SECTION.match(line)
        if m:
            group, state = m.group(1), m.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise ConfigError(
                    f"section [{group}:{state}] has unknown type {state!r}",
                    **at(where),
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
                **at(where),
                hint="no spaces or other invalid characters inside [group:type]",
            )
        if state == "hosts":
            _parse_ini_host(builder, line, group, where)
        elif state == "vars":
            key, eq, value = line.partition("=")
            if not eq:
                raise ConfigError(
                    f"expected key=value in [{group}:vars], got {line!r}", **at(where)
                )
            builder.set_group_var(group, key.strip(), _parse_ini_value(value.strip()), where)
        else:
            m = _GROUPNAME.match(line)
            if not m:
                raise ConfigError(
                    f"expected a group name in [{group}:children], got {line!r}", **at(where)
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


def _parse_ini_host(builder: Builder, line: str, group: str, where: Where) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError(f"cannot parse host line {line!r}: {exc}", **at(where)) from None
    if not tokens:
        return
    names, port = expand_hostpattern(tokens[0], where)
    variables: dict[str, Any] = {}
    for token in tokens[1:]:
        key, eq, value = token.partition("=")
        if not eq:
            raise ConfigError(
                f"expected key=value after the host name, got {token!r}",
                **at(where),
                hint="quote values that contain spaces: key='a b'",
            )
        variables[key] = _parse_ini_value(value)
    populate_hosts(builder, names, group, port, variables, where)
