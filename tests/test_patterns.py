"""Host patterns against Ansible's semantics (lib/ansible/inventory/manager.py and the docs'
"Patterns: targeting hosts and groups"), on the inventory in tests/data/inventory/site.yml."""

from __future__ import annotations

from pathlib import Path

import pytest

from distrib import patterns
from distrib.errors import ConfigError
from distrib.inventory import Inventory

DATA = Path(__file__).parent / "data" / "inventory"

WEB = [f"web0{i}.example.com" for i in range(1, 5)]
DB = [f"db-{c}.example.com" for c in "abc"]
BASTION = "bastion.example.com"
# Ansible's order for `all` (Group.get_hosts): all's own hosts, then its children's (ungrouped,
# prod, edge), then the grandchildren's (web, db) -- breadth first, not definition order.
EVERYONE = [BASTION, "edge1", *WEB, *DB]


@pytest.fixture(scope="module")
def site() -> Inventory:
    return Inventory.load([str(DATA / "site.yml")])


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        # split_host_pattern's own docstring example
        ("a,b[1], c[2:3] , d", ["a", "b[1]", "c[2:3]", "d"]),
        ("a:b", ["a", "b"]),
        ("a:&b:!c", ["a", "&b", "!c"]),
        ("a,&b,!c", ["a", "&b", "!c"]),
        ("web*:db", ["web*", "db"]),
        ("web[1:]:db", ["web[1:]", "db"]),
        ("web[0]:db[-1]", ["web[0]", "db[-1]"]),
        ("  a , , b ", ["a", "b"]),
        # without commas, something that parses as one address is not split on ':'
        ("web[1:3]", ["web[1:3]"]),
        ("host:22", ["host:22"]),
        ("fe80::1", ["fe80::1"]),
        ("[::1]:22", ["[::1]:22"]),
        ("192.0.2.1", ["192.0.2.1"]),
        ("~web.*:db", ["~web.*", "db"]),
        (["a:b", "c"], ["a", "b", "c"]),  # a playbook's `hosts:` list
    ],
)
def test_split_host_pattern(pattern: str | list[str], expected: list[str]) -> None:
    assert patterns.split_host_pattern(pattern) == expected


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (["a", "b"], ["a", "b"]),
        (["!a", "&b", "c", "&d", "e"], ["c", "e", "&b", "&d", "!a"]),
        (["!a"], ["all", "!a"]),  # no union: 'all' is implied
        (["&a", "!b"], ["all", "&a", "!b"]),
    ],
)
def test_order_patterns(terms: list[str], expected: list[str]) -> None:
    assert patterns.order_patterns(terms) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("all", EVERYONE),
        ("*", EVERYONE),
        ("web", WEB),
        ("prod", WEB + DB),
        ("ungrouped", [BASTION]),
        ("edge1", ["edge1"]),
        # unions keep pattern order, not inventory order
        ("web:db", WEB + DB),
        ("db:web", DB + WEB),
        ("db,web", DB + WEB),
        ("edge1:bastion.example.com", ["edge1", BASTION]),
        ("web:web01.example.com", WEB),
        # intersection and exclusion
        ("prod:&db", DB),
        ("prod:!db", WEB),
        ("all:!prod", [BASTION, "edge1"]),
        ("!prod", [BASTION, "edge1"]),
        ("&web", WEB),
        ("web:&prod:!web02.example.com", [WEB[0], WEB[2], WEB[3]]),
        # unions first, then intersections, then exclusions, wherever they are written
        ("!web02.example.com:&prod:web", [WEB[0], WEB[2], WEB[3]]),
        ("!db:edge1:prod", ["edge1", *WEB]),
        ("web:!web01.example.com:db:&prod", WEB[1:] + DB),
        # globs: group names first, then host names (fnmatch, whole name)
        ("web*", WEB),
        ("*.example.com", [BASTION, *WEB, *DB]),
        ("db-?.example.com", DB),
        ("d*", DB),
        ("e*", ["edge1"]),
        ("web0[13].example.com", [WEB[0], WEB[2]]),
        # Ansible matches globs against 'all' too: 'a*' names the group all
        ("a*", EVERYONE),
        # ~regex: re.match, anchored at the start only
        ("~db-[ab]", DB[:2]),
        ("~.*example", [BASTION, *WEB, *DB]),
        ("~(web|edge)", [*WEB, "edge1"]),  # groups web, edge (inventory order), then hosts
        ("~web0[12]", WEB[:2]),  # no subscript parsing for regexes
        # subscripts: index, negative index, inclusive slices
        ("web[0]", [WEB[0]]),
        ("web[-1]", [WEB[3]]),
        ("web[1:2]", WEB[1:3]),
        ("web[2:]", WEB[2:]),
        ("web[0:0]", [WEB[0]]),
        ("web[3:9]", [WEB[3]]),
        ("prod[4]", [DB[0]]),
        ("web[0]:db[-1]", [WEB[0], DB[2]]),
        ("web*[1]", [WEB[1]]),
        ("prod:!web[1:]", [WEB[0], *DB]),
        ("all:&db[0]", [DB[0]]),
    ],
)
def test_select(site: Inventory, pattern: str, expected: list[str]) -> None:
    assert patterns.select(site, pattern) == expected
    assert [h.name for h in site.select(pattern)] == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("nosuch", "'nosuch' matches no group or host"),
        ("web:nosuch", "'nosuch' matches no group or host in host pattern 'web:nosuch'"),
        ("all:!wbe", "'wbe' matches no group or host"),  # a typo in an exclusion is caught
        ("prod:&dbb", "'dbb' matches no group or host"),
        ("nosuch*", "'nosuch*' matches no group or host"),
        ("~example", "'~example' matches no group or host"),  # re.match, not re.search
        ("web[4]", "no hosts matched the subscripted pattern 'web[4]'"),
        ("web[-5]", "no hosts matched the subscripted pattern 'web[-5]'"),
        ("web[1-2]", "was removed from Ansible"),
        ("~web(", "invalid host pattern '~web('"),
        ("web:&db", "host pattern 'web:&db' matches no hosts"),
        ("web:!web", "host pattern 'web:!web' matches no hosts"),
        ("web[9:]", "host pattern 'web[9:]' matches no hosts"),
        ("web:!", "empty term '!'"),
        ("host:22", "'host:22' matches no group or host"),
    ],
)
def test_select_errors_name_the_pattern(site: Inventory, pattern: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        patterns.select(site, pattern)
    assert message in str(info.value)


def test_empty_group_is_not_a_typo() -> None:
    inv = Inventory.from_ini_text("[web]\nw1\n[staging]\n", "t.ini")
    assert patterns.select(inv, "all:!staging") == ["w1"]
    with pytest.raises(ConfigError, match="'staging' matches no hosts"):
        patterns.select(inv, "staging")


def test_host_name_wins_over_group_of_the_same_name() -> None:
    inv = Inventory.from_yaml_text(
        "all:\n  children:\n    web:\n      hosts: {w1: , w2: }\n  hosts:\n    web:\n", "t.yml"
    )
    assert patterns.select(inv, "web") == ["web"]  # Ansible's plain-host shortcut
    assert patterns.select(inv, "web*") == ["w1", "w2", "web"]


@pytest.mark.parametrize(
    ("pattern", "limit", "expected"),
    [
        ("all", "web", WEB),
        ("all", "web:!web01.example.com", WEB[1:]),
        ("prod", "db-a.example.com,web04.example.com", [WEB[3], DB[0]]),  # pattern's order
        ("db:web", "*.example.com", DB + WEB),
        ("web", f"@{DATA / 'site.retry'}", [WEB[1]]),
        ("all", f"@{DATA / 'site.retry'}", [WEB[1], DB[0]]),
        ("all", f"edge1,@{DATA / 'site.retry'}", ["edge1", WEB[1], DB[0]]),
    ],
)
def test_select_with_limit(site: Inventory, pattern: str, limit: str, expected: list[str]) -> None:
    assert [h.name for h in site.select(pattern, limit)] == expected


@pytest.mark.parametrize(
    ("pattern", "limit", "message"),
    [
        ("web", "db", "host pattern 'web' with limit 'db' matches no hosts"),
        ("web", "wbe", "limit term 'wbe' matches no group or host"),
        ("web", "db:wbe", "'wbe' matches no group or host in limit 'db:wbe'"),
        ("web", "@/nonexistent/retry", "/nonexistent/retry: cannot read limit file"),
        ("web", f"@{DATA}", "must be a file, not a directory"),
    ],
)
def test_select_with_limit_errors(site: Inventory, pattern: str, limit: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        site.select(pattern, limit)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("web", "web"),
        ("web:!db", "web:!db"),
        (f"@{DATA / 'site.retry'}", "web02.example.com,db-a.example.com"),
        (f"edge1,@{DATA / 'site.retry'}", "edge1,web02.example.com,db-a.example.com"),
    ],
)
def test_read_limit(value: str, expected: str) -> None:
    assert patterns.read_limit(value) == expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("host", ("host", None)),
        ("host:2222", ("host", 2222)),
        ("web[01:10].example.com:22", ("web[01:10].example.com", 22)),
        ("192.0.2.1", ("192.0.2.1", None)),
        ("192.0.2.1:22", ("192.0.2.1", 22)),
        ("fe80::1", ("fe80::1", None)),
        ("[2001:db8::1]:2222", ("2001:db8::1", 2222)),
        ("10.0.[1:3].1", ("10.0.[1:3].1", None)),
        ("bad host", None),
        ("web[01:]", None),
        ("-web", None),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int | None] | None) -> None:
    assert patterns.parse_address(address, allow_ranges=True) == expected


def test_parse_address_without_ranges() -> None:
    assert patterns.parse_address("web[1:3]") is None
