"""Shell text for remote commands: quoting (every remote argument goes through `shlex.quote`)
and several scripts in one command, their outputs split again. Pure.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

# every file and dir distrib makes in a host's remote_tmp starts so (staging, login dirs)
STAGING_PREFIX = "distrib."


def q(arg: str) -> str:
    return shlex.quote(arg)


def join(argv: Sequence[str]) -> str:
    return " ".join(q(a) for a in argv)


# --- several read-only queries in one round trip (issue 16 item 2, issue 15 item 7) ---------
#
# Each remote command costs a shell, an engine CLI start and, on a WAN, a round trip: the probe,
# the identity of the wanted images and (for a delta) the host's layer listing go as ONE
# command, their outputs separated by a marker line and each parsed by its own parser.

PART_MARK = "distrib-part-8d1f"  # a line no probe, inspect or listing prints


def in_parts(scripts: Sequence[str]) -> str:
    """`scripts` run one after the other in one shell, each in a brace group (a single one
    as it is), a line PART_MARK between their outputs. Exit status: the last one's (a script
    that exits on a failure ends the command: its caller reports it, nothing is parsed)."""
    if not scripts:
        raise ValueError("no scripts")
    if len(scripts) == 1:
        return scripts[0]
    # the marker on a line of its own even after a part whose output ends without a newline
    return f"; printf '\\n%s\\n' {PART_MARK}; ".join(f"{{ {s}\n}}" for s in scripts)


def split_parts(stdout: str, count: int) -> list[str]:
    """The outputs of `in_parts`' `count` scripts (ValueError when the marker lines are not
    all there: the command was cut short)."""
    parts = stdout.split(f"\n{PART_MARK}\n")
    if len(parts) != count:
        raise ValueError(f"expected {count} parts, got {len(parts)}: {stdout[-300:]!r}")
    return parts
