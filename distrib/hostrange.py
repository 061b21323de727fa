"""Host names in inventories: `web[01:03]` ranges and `name:port`, as Ansible expands them."""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from distrib import patterns
from distrib.errors import ConfigError
from distrib.inventory_records import Where, at

__all__ = ["MAX_RANGE_HOSTS", "expand_host_range", "expand_hostpattern"]

# One inventory line's host range may name at most this many hosts: `h[0:99999999]` (a typo)
# would otherwise build a list of 10^8 names before anything is checked (issue 19).
MAX_RANGE_HOSTS = 100_000


def expand_host_range(pattern: str, where: Where = ("<inventory>", None)) -> list[str]:
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
        return ConfigError(f"malformed host range in {pattern!r}: {why}", **at(where))

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


def _range_too_big(pattern: str, count: int, where: Where) -> ConfigError:
    return ConfigError(
        f"host range {pattern!r} expands to {count:,} hosts, more than the "
        f"{MAX_RANGE_HOSTS:,} one inventory line may define",
        **at(where),
        hint="check the range's bounds (a typo adds digits), or split it over several lines",
    )


def _is_number(text: str) -> bool:
    # ASCII only: str.isdigit() accepts '²', which int() refuses; 18 digits fit any real range
    return text.isascii() and text.isdigit() and len(text) <= 18


def _is_letter(text: str) -> bool:
    return len(text) == 1 and text in string.ascii_letters


def expand_hostpattern(pattern: Any, where: Where) -> tuple[list[str], int | None]:
    """BaseInventoryPlugin._expand_hostpattern: optional `:port`, then ranges."""
    if not isinstance(pattern, str):
        raise ConfigError(
            f"host name {pattern!r} must be a string", **at(where), hint="quote numbers and IPs"
        )
    parsed = patterns.parse_address(pattern, allow_ranges=True)
    name, port = parsed if parsed is not None else (pattern, None)
    return expand_host_range(name, where), port
