"""Ansible host patterns: which inventory hosts a `hosts:` line or `--limit` selects.

This follows ansible-core's `InventoryManager` (lib/ansible/inventory/manager.py) term by term:

* `split_host_pattern`: terms are separated by `,`; a pattern without commas is split on `:`
  unless it parses as one host address (so `web[1:3]`, `host:22` and IPv6 stay whole).
* `order_patterns` / `_evaluate_patterns`: plain terms (unions) first, in order, then every
  `&term` (intersection), then every `!term` (exclusion). With no plain term, `all` is implied.
* `_match_one_pattern`: a term is a host name, or a glob / `~regex` matched (`re.match`, anchored
  at the start only) against group names and then host names, with an optional `[i]` or
  `[start:end]` subscript whose end is *inclusive*.
* Order: hosts come in the order Ansible's `get_hosts` returns them -- term by term, each group's
  hosts in definition order (its own hosts, then its children's breadth first) -- not re-sorted.

Deviation (the issue asks for it): a term that names no group and no host is an error naming the
term, where Ansible only warns "Could not match supplied host pattern, ignoring"; and a selection
that ends up empty is an error naming the whole pattern. A group that exists but is empty is not an
error by itself (it is no typo), unless the whole selection is empty.

Not supported: Ansible's implicit `localhost` (a pattern `localhost` must name an inventory host).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from distrib import yamlio
from distrib.errors import ConfigError


class Selectable(Protocol):
    """What a pattern selects from: `distrib.inventory.Inventory` (this module names only what
    it reads, so it does not import the inventory that imports it)."""

    @property
    def hosts(self) -> Mapping[str, object]: ...

    @property
    def groups(self) -> Mapping[str, object]: ...

    def group_hosts(self, group: str) -> tuple[str, ...]: ...


# --- host addresses (ansible/parsing/utils/addresses.py) -------------------------------------

_NUMERIC_RANGE = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_V6 = r"(?:[0-9a-f]{1,4}|" + _NUMERIC_RANGE + r")"
_V4 = r"(?:[01]?[0-9]{1,2}|2[0-4][0-9]|25[0-5]|" + _NUMERIC_RANGE + r")"
_LABEL = r"(?:\w|" + _ALNUM_RANGE + r")(?:[\w-]|" + _ALNUM_RANGE + r")*(?<![_-])"

_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_IPV4 = re.compile(r"^(?:" + _V4 + r"\.){3}" + _V4 + r"$", re.I)
_IPV6 = re.compile(
    r"^(?:"
    + "|".join(
        [
            r"(?:{0}:){{7}}{0}",
            r"(?:{0}:){{1,6}}:",
            r"(?:{0}:)(?::{0}){{1,6}}",
            r"(?:{0}:){{2}}(?::{0}){{1,5}}",
            r"(?:{0}:){{3}}(?::{0}){{1,4}}",
            r"(?:{0}:){{4}}(?::{0}){{1,3}}",
            r"(?:{0}:){{5}}(?::{0}){{1,2}}",
            r"(?:{0}:){{6}}(?::{0})",
            r":(?::{0}){{1,6}}",
            r"{0}?::",
            r"(?:0:){{6}}(?:{0}\.){{3}}{0}",
            r"::(?:ffff:)?(?:{0}\.){{3}}{0}",
            r"(?:0:){{5}}ffff:(?:{0}\.){{3}}{0}",
        ]
    ).format(_V6)
    + r")$",
    re.I,
)
_HOSTNAME = re.compile(r"^" + _LABEL + r"(?:\." + _LABEL + r")*$", re.I)


def parse_address(address: str, allow_ranges: bool = False) -> tuple[str, int | None] | None:
    """Split `host[:port]` / `[ipv6]:port` into (host, port) as Ansible's `parse_address` does.

    Returns None when `address` is not a hostname, IPv4 or IPv6 address (optionally containing
    `[x:y]` ranges when `allow_ranges`). The port is not range-checked here.
    """
    port: int | None = None
    for regex in (_BRACKETED_HOSTPORT, _HOSTPORT):
        m = regex.match(address)
        if m:
            if len(m.group(2)) > 9:  # no port; and int() refuses over 4300 digits
                return None
            address, port = m.group(1), int(m.group(2))
    if not any(regex.match(address) for regex in (_IPV4, _IPV6, _HOSTNAME)):
        return None
    if not allow_ranges and "[" in address:
        return None
    return address, port


# --- splitting and ordering -------------------------------------------------------------------

_COLON_TERMS = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")

# A term ending in [n], [-n], [a:b], [a:] (or the removed [a-b]) -- manager.PATTERN_WITH_SUBSCRIPT
_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")


def split_host_pattern(pattern: str | Sequence[str]) -> list[str]:
    """Split a pattern (or a list of them, as a playbook's `hosts:` may be) into its terms."""
    if not isinstance(pattern, str):
        return [term for p in pattern for term in split_host_pattern(p)]
    if "," in pattern:
        terms = pattern.split(",")
    elif parse_address(pattern, allow_ranges=True) is not None:
        terms = [pattern]  # one host or range such as web[1:3] or host:22: not `:`-separated
    else:
        terms = _COLON_TERMS.findall(pattern)
    return [t.strip() for t in terms if t.strip()]


def order_patterns(terms: Sequence[str]) -> list[str]:
    """Unions first (in order), then intersections, then exclusions; `all` if no union."""
    regular = [t for t in terms if t and t[0] not in "&!"]
    intersect = [t for t in terms if t and t[0] == "&"]
    exclude = [t for t in terms if t and t[0] == "!"]
    return (regular or ["all"]) + intersect + exclude


# --- evaluation -------------------------------------------------------------------------------


def select(
    inventory: Selectable, pattern: str | Sequence[str], *, what: str = "host pattern"
) -> list[str]:
    """Host names matching an Ansible host pattern, in Ansible's order.

    `what` names the pattern in error messages ("host pattern", "limit"). Raises ConfigError if a
    term names no group or host, a subscript is out of range, a regex is invalid, or nothing at
    all is selected.
    """
    shown = pattern if isinstance(pattern, str) else ",".join(pattern)
    hosts = _evaluate(inventory, split_host_pattern(pattern), what, shown)
    if not hosts:
        raise ConfigError(f"{what} {shown!r} matches no hosts")
    return hosts


def select_limited(inventory: Selectable, pattern: str | Sequence[str], limit: str) -> list[str]:
    """`select(pattern)` restricted to the hosts `limit` (a `--limit` value) selects.

    `--limit @file` is read as in Ansible. The order stays that of `pattern`.
    """
    hosts = select(inventory, pattern)
    limit = read_limit(limit)
    subset = set(_evaluate(inventory, split_host_pattern(limit), "limit", limit))
    result = [h for h in hosts if h in subset]
    if not result:
        shown = pattern if isinstance(pattern, str) else ",".join(pattern)
        raise ConfigError(f"host pattern {shown!r} with limit {limit!r} matches no hosts")
    return result


def read_limit(value: str) -> str:
    """Expand `@file` terms of a `--limit` value (an Ansible retry file, one host a line).

    Other terms are kept. The result is a comma-separated pattern; a missing file is an error.
    """
    if "@" not in value:
        return value
    terms: list[str] = []
    for term in split_host_pattern(value):
        if not term.startswith("@"):
            terms.append(term)
            continue
        path = term[1:]
        if os.path.isdir(path):
            raise ConfigError(
                "a limit starting with '@' must be a file, not a directory", file=path
            )
        lines = yamlio.read_text(path, "limit file").split("\n")
        terms.extend(line.strip() for line in lines if line.strip())
    if not terms:  # as Ansible: an empty retry file leaves no host to target, not all of them
        raise ConfigError(
            f"limit {value!r} selects no hosts: the limit file is empty",
            hint="an empty retry file means the last run had no failed host: nothing to retry",
        )
    return ",".join(terms)


def _evaluate(inventory: Selectable, terms: Sequence[str], what: str, shown: str) -> list[str]:
    hosts: list[str] = []
    seen: set[str] = set()
    for term in order_patterns(terms):
        # Ansible's shortcut: a plain host name is that host, even if a group has its name
        plain = term in inventory.hosts
        matched = [term] if plain else _match_one(inventory, term, what, shown)
        if term[0] == "!":
            seen.difference_update(matched)
            hosts = [h for h in hosts if h in seen]
        elif term[0] == "&":
            seen.intersection_update(matched)
            hosts = [h for h in hosts if h in seen]
        else:
            for h in matched:
                if h not in seen:
                    seen.add(h)
                    hosts.append(h)
    return hosts


def _match_one(inventory: Selectable, term: str, what: str, shown: str) -> list[str]:
    body = term[1:] if term[0] in "&!" else term
    context = f" in {what} {shown!r}" if shown != term else ""
    if not body:
        raise ConfigError(f"empty term {term!r}{context}")
    expr, subscript = _split_subscript(body, context)
    hosts = _enumerate_matches(inventory, expr)
    if hosts is None:
        raise ConfigError(
            f"{what} term {body!r} matches no group or host{context}",
            hint="check the spelling against `distrib inventory --graph`",
        )
    if not hosts or subscript is None:
        return hosts
    start, end = subscript
    # manager._apply_subscript: the end is inclusive; [i:] runs to the last host; an end of 0 is
    # falsy there, so [i:0] means [i] -- kept for fidelity.
    if end:
        if end == -1:
            end = len(hosts) - 1
        return hosts[start : end + 1]
    try:
        return [hosts[start]]
    except IndexError:
        raise ConfigError(
            f"no hosts matched the subscripted pattern {body!r}{context} "
            f"(it matches {len(hosts)} host{'s' if len(hosts) != 1 else ''})"
        ) from None


def _split_subscript(term: str, context: str) -> tuple[str, tuple[int, int | None] | None]:
    if term[0] == "~":  # a regex keeps its brackets
        return term, None
    m = _SUBSCRIPT.match(term)
    if not m:
        return term, None
    expr, index, start, sep, end = m.groups()
    if max(len(index or ""), len(start or ""), len(end or "")) > 18:
        raise ConfigError(f"subscript in {term!r}{context} is too large")
    if index:
        return expr, (int(index), None)
    if sep == "-":
        raise ConfigError(
            f"subscript [x-y] in {term!r}{context} was removed from Ansible",
            hint=f"use the inclusive form {expr}[{start}:{end}]",
        )
    return expr, (int(start), int(end) if end else -1)


def _enumerate_matches(inventory: Selectable, expr: str) -> list[str] | None:
    """Hosts of every group whose name matches, then hosts whose name matches.

    None when nothing (no group, no host) matched: the term names nothing.
    """
    regex = _compile(expr)
    results: list[str] = []
    # Like Ansible this scans every group name, 'all' and 'ungrouped' included.
    groups = [g for g in inventory.groups if regex.match(g)]
    for g in groups:
        results.extend(inventory.group_hosts(g))
    matched_host = False
    if not groups or expr[0] == "~" or any(c in expr for c in ".?*["):
        for name in inventory.hosts:
            if regex.match(name):
                results.append(name)
                matched_host = True
    if not groups and not matched_host:
        return None
    return results


def _compile(expr: str) -> re.Pattern[str]:
    try:
        if expr[0] == "~":
            return re.compile(expr[1:])
        return re.compile(fnmatch.translate(expr))
    except re.error as exc:
        raise ConfigError(f"invalid host pattern {expr!r}: {exc}") from None
