"""Property-based tests (issue 19): any bytes or text into the playbook, inventory (YAML and INI),
host pattern and image reference parsers gives a result or a DistribError -- never another
exception (a traceback for the user), never a hang (each example has a deadline).

Inputs come in three kinds: raw bytes (decoded like a file), arbitrary text, and "near misses":
YAML built from the parsers' own keys and values with random types, which reaches the checks
behind the YAML layer far more often than random text does. About 9,000 examples in all, in
under a minute on two shared cores; HYPOTHESIS_EXAMPLES scales them (e.g. 10 while editing).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distrib import patterns, plan, yamlio
from distrib.errors import DistribError
from distrib.hostrange import expand_host_range
from distrib.inventory import Inventory
from distrib.playbook import _FIELDS, Playbook
from distrib.refs import ImageRef, InvalidReference

SCALE = float(os.environ.get("HYPOTHESIS_EXAMPLES", "1"))


def examples(n: int) -> Any:
    """Settings for one property: `n` examples (scaled), a deadline that catches a hang but not
    a slow shared core, no example database written into the work tree."""
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=timedelta(seconds=3),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def outcome(fn: Any, *args: Any) -> Any:
    """`fn(*args)`, or the DistribError it raised; any other exception fails the property."""
    try:
        return fn(*args)
    except DistribError as exc:
        assert str(exc), "an error must say something"
        return exc


def from_bytes(parse: Any, data: bytes) -> Any:
    """What reading a file does: decode (a clear error if not UTF-8), then parse."""
    return parse(yamlio.decode(data, "f.yml"), "f.yml")


# --- strategies -------------------------------------------------------------------------------

YAML_CHARS = st.sampled_from(list("abc019 -:[]{},&*!|>'\"#%@`?\n\t.~=/\\") + ["\xe9", "\x00"])
yaml_like_text = st.text(YAML_CHARS, max_size=200)
any_text = st.text(max_size=300)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["all", "web", "h1", "h[1:3]", "demo/web:1.0", "gzip", "30%", "sudo", "/tmp"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=3)
    ),
    max_leaves=6,
)
play_keys = st.one_of(st.sampled_from(sorted(_FIELDS)), st.text(max_size=8), st.integers())
plays = st.dictionaries(play_keys, values, max_size=6)
group_keys = st.sampled_from(["hosts", "vars", "children", "host"])
host_names = st.one_of(st.sampled_from(["h1", "h[1:3]", "10.0.0.1:2222", "web"]), scalars)
var_names = st.one_of(st.sampled_from(["ansible_port", "ansible_host", "x"]), scalars)
leaf_groups = st.dictionaries(
    group_keys,
    st.one_of(
        scalars, st.dictionaries(host_names, st.dictionaries(var_names, scalars), max_size=3)
    ),
    max_size=3,
)
groups = st.one_of(
    leaf_groups,
    st.fixed_dictionaries(
        {"children": st.dictionaries(st.text(max_size=6), leaf_groups, max_size=2)}
    ),
)
inventories = st.dictionaries(st.one_of(st.text(max_size=8), scalars), groups, max_size=3)

ini_lines = st.one_of(
    st.sampled_from(
        ["[web]", "[web:vars]", "[web:children]", "[db]", "[x:y]", "[", "]", "# c", ";c", ""]
    ),
    st.builds(
        lambda name, vars_: " ".join([name, *vars_]),
        st.one_of(
            st.sampled_from(["h1", "h[1:3]", "h[a:c]", "h[01:10:2]", "10.0.0.1:22", "[::1]:2"]),
            st.text(max_size=12),
        ),
        st.lists(
            st.builds(lambda k, v: f"{k}={v}", st.text(max_size=6), st.text(max_size=10)),
            max_size=3,
        ),
    ),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=6), st.text(max_size=12)),
)
ini_texts = st.lists(ini_lines, max_size=12).map("\n".join)

PATTERN_PARTS = ["web", "db", "all", "h1", "&", "!", "~", ":", ",", "[", "]", "*", "?", "-1"]
pattern_texts = st.one_of(
    st.lists(st.sampled_from(PATTERN_PARTS) | st.text(max_size=4), max_size=10).map("".join),
    any_text,
)

REF_CHARS = st.sampled_from(list("abcAB09._-/:@ ") + ["sha256:" + "a" * 64, "__", "--"])
ref_texts = st.one_of(st.lists(REF_CHARS, max_size=30).map("".join), any_text)


def dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


# --- the playbook -----------------------------------------------------------------------------


@examples(1500)
@given(st.binary(max_size=300))
def test_playbook_from_any_bytes(data: bytes) -> None:
    outcome(from_bytes, Playbook.from_text, data)


@examples(1500)
@given(st.one_of(any_text, yaml_like_text))
def test_playbook_from_any_text(text: str) -> None:
    outcome(Playbook.from_text, text)


@examples(1000)
@given(st.one_of(plays, st.lists(plays, max_size=3)))
def test_playbook_from_near_misses(data: Any) -> None:
    result = outcome(Playbook.from_text, dump(data))
    if isinstance(result, Playbook):
        assert all(p.hosts and p.name for p in result.plays)


# --- the inventory ----------------------------------------------------------------------------


@examples(1000)
@given(st.one_of(st.binary(max_size=300).map(lambda b: b), yaml_like_text))
def test_yaml_inventory_from_anything(data: bytes | str) -> None:
    if isinstance(data, bytes):
        outcome(from_bytes, Inventory.from_yaml_text, data)
    else:
        outcome(Inventory.from_yaml_text, data)


@examples(1000)
@given(inventories)
def test_yaml_inventory_from_near_misses(data: Any) -> None:
    result = outcome(Inventory.from_yaml_text, dump(data))
    if isinstance(result, Inventory):
        assert "all" in result.groups and "ungrouped" in result.groups
        play = Playbook.from_text("- hosts: all\n  images: [demo:1]\n").plays[0]
        for host in result.hosts.values():  # where to connect: an answer or a clear error
            outcome(plan.host_plan, host, play)


@examples(1000)
@given(st.one_of(ini_texts, any_text))
def test_ini_inventory_from_anything(text: str) -> None:
    result = outcome(Inventory.from_ini_text, text)
    if isinstance(result, Inventory):
        assert set(result.group_hosts("all")) == set(result.hosts)


@examples(500)
@given(st.text(st.sampled_from(list("h[]:0123456789az-_.")), max_size=30))
def test_host_ranges(pattern: str) -> None:
    result = outcome(expand_host_range, pattern)
    if isinstance(result, list):
        assert result and all(isinstance(h, str) for h in result)


# --- host patterns ----------------------------------------------------------------------------

SITE = Inventory.from_yaml_text(
    "all:\n  children:\n    web:\n      hosts:\n        web[1:3]:\n"
    "    db:\n      hosts:\n        h1:\n        db-a:\n",
    "site.yml",
)


@examples(1000)
@given(pattern_texts, st.one_of(st.none(), pattern_texts))
def test_host_patterns(pattern: str, limit: str | None) -> None:
    limit = None if limit is None or "@" in limit else limit  # @ reads files: tested elsewhere
    result = outcome(SITE.select, pattern, limit)
    if isinstance(result, list):
        assert result and all(h.name in SITE.hosts for h in result)
    outcome(patterns.parse_address, pattern, True)


# --- image references -------------------------------------------------------------------------


@examples(1500)
@given(ref_texts)
def test_image_references(text: str) -> None:
    try:
        ref = ImageRef.parse(text)
    except InvalidReference as exc:
        assert str(exc)
        return
    assert ImageRef.parse(str(ref)) == ref  # the normalised form parses to itself
