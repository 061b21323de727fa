"""Relay fan-out, the pure part: which host feeds which (issue 9). No I/O.

The workstation feeds a few first hosts; each host, while it is still receiving, forwards the
stream to up to `width` children. Hosts with a `relay_group` relay only within their group and
each group is entered ONCE from the workstation, so the slow cross-site link carries one copy
per group. Hosts without a group form one implicit group, entered `roots` times (default
ONCE, issue 16: the workstation's uplink carries one copy; a play may ask for more roots when
its uplink is not the bottleneck).

Only hosts that need the archive are planned (the caller probes first: up-to-date hosts are
`ok` and receive nothing, which is what saves the bytes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

WORKSTATION = "workstation"


@dataclass(frozen=True)
class Node:
    """A host that needs the archive, as the planner sees it."""

    name: str
    group: str | None = None  # relay_group; None: the implicit group
    can_relay: bool = True  # has ssh + mkfifo + tee -p: may forward to children


@dataclass(frozen=True)
class Tree:
    """`parent[name]` is the host that feeds `name`, or None for the workstation."""

    parent: Mapping[str, str | None]
    order: tuple[str, ...]  # every planned host, in inventory order

    def children(self, name: str | None) -> list[str]:
        """Hosts fed by `name` (None: by the workstation), in inventory order."""
        return [h for h in self.order if self.parent[h] == name]

    @property
    def roots(self) -> list[str]:
        return self.children(None)

    def depth(self, name: str) -> int:
        """1 for a host the workstation feeds, 2 for its children, ..."""
        level = 1
        up = self.parent[name]
        while up is not None:
            level += 1
            up = self.parent[up]
        return level

    def relays(self) -> list[str]:
        """Hosts that forward to at least one child."""
        fed = {p for p in self.parent.values() if p is not None}
        return [h for h in self.order if h in fed]


def plan_tree(nodes: Sequence[Node], width: int, roots: int = 1) -> Tree:
    """Breadth-first fan-out per group, in inventory order.

    The workstation feeds one host per `relay_group` and `roots` hosts of the ungrouped ones.

    Within a group, hosts that can relay are placed first (breadth-first keeps the tree
    shallow: a failure cuts off fewer hosts, and every level adds a little latency); hosts
    that cannot relay become leaves. Hosts left over when no relay has room (every relay
    full and only non-relaying hosts remain) are fed by the workstation.
    """
    if width < 1:
        raise ValueError(f"relay width must be at least 1, not {width}")
    if roots < 1:
        raise ValueError(f"relay roots must be at least 1, not {roots}")
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError("a host is listed twice")
    groups: dict[str | None, list[Node]] = {}
    for node in nodes:
        groups.setdefault(node.group, []).append(node)
    parent: dict[str, str | None] = {}
    for group, members in groups.items():
        entries = roots if group is None else 1
        ordered = [n for n in members if n.can_relay] + [n for n in members if not n.can_relay]
        first, rest = ordered[:entries], deque(ordered[entries:])
        feeders: deque[Node] = deque()
        for root in first:
            parent[root.name] = None
            if root.can_relay:
                feeders.append(root)
        while rest:
            if not feeders:  # no relay has room: the workstation feeds the rest
                for node in rest:
                    parent[node.name] = None
                break
            feeder = feeders.popleft()
            for _ in range(min(width, len(rest))):
                child = rest.popleft()
                parent[child.name] = feeder.name
                if child.can_relay:
                    feeders.append(child)
    return Tree(parent, tuple(names))


def draw(
    parent: Mapping[str, str | None],
    order: Iterable[str] | None = None,
    notes: Mapping[str, str] | None = None,
) -> str:
    """The tree as text, the workstation at the top:

    workstation
    └── node1
        ├── node2
        └── node3 (re-parented from node2)
    """
    notes = notes or {}
    hosts = list(order) if order is not None else list(parent)
    kids: dict[str | None, list[str]] = {}
    for host in hosts:
        up = parent.get(host)
        kids.setdefault(up if up in parent else None, []).append(host)
    lines = [WORKSTATION]

    def walk(name: str | None, prefix: str, seen: frozenset[str]) -> None:
        children = kids.get(name, [])
        for i, child in enumerate(children):
            last = i == len(children) - 1
            note = f" ({notes[child]})" if notes.get(child) else ""
            lines.append(f"{prefix}{'└── ' if last else '├── '}{child}{note}")
            if child not in seen:  # (a cycle cannot be planned; never loop on bad input)
                walk(child, prefix + ("    " if last else "│   "), seen | {child})

    walk(None, "", frozenset())
    return "\n".join(lines)
