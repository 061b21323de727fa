"""What the user reads at the end: per-host lines, the PLAY RECAP, and the --json document.

Pure text functions. Colour (ansible-playbook's: green ok, yellow changed, red failed and
unreachable, cyan skipped) is applied only when the caller says so; `use_colour` is the one
place that decides, from the stream and the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import IO, Any

from distrib.engine import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE, HostResult
from distrib.errors import ConfigError, printable
from distrib.executor import RunResult
from distrib.units import human_bytes

COUNTERS = (OK, CHANGED, UNREACHABLE, FAILED, SKIPPED)

# SGR codes as ansible-playbook uses them (its COLOR_OK/CHANGED/ERROR/UNREACHABLE/SKIP).
COLOURS = {OK: "32", CHANGED: "33", FAILED: "31", UNREACHABLE: "1;31", SKIPPED: "36"}
PHASE_ORDER = ("connect", "probe", "upload", "checksum", "load", "verify")


def use_colour(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, never when NO_COLOR is set (any value, no-color.org) or
    TERM=dumb: piped output and CI logs carry no escape codes at all."""
    env = os.environ if environ is None else environ
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, status: str, colour: bool) -> str:
    """`text` in the colour of `status` (unchanged when colour is off or status has none)."""
    code = COLOURS.get(status)
    return f"\033[{code}m{text}\033[0m" if colour and code else text


def timings_text(timings: Mapping[str, float]) -> str:
    """`connect 0.12s, probe 0.05s, upload 1.30s, total 2.10s`: phases in pipeline order."""
    names = [n for n in PHASE_ORDER if n in timings]
    names += sorted(n for n in timings if n not in PHASE_ORDER and n != "total")
    if "total" in timings:
        names.append("total")
    return ", ".join(f"{n} {timings[n]:.2f}s" for n in names)


def host_line(result: HostResult, verbose: int = 0, colour: bool = False) -> str:
    """`changed: [node1] => loaded and verified 2 image(s) (docker 28.5.2, containerd store)
    (4.1 MB sent)`, Ansible-like: the engine, its version and docker's image store follow the
    message when the host was probed (mixed fleets, issue 14).

    With `verbose` >= 1 the host's phase timings follow in brackets."""
    label = "fatal" if result.status == FAILED else result.status
    text = f"{label}: [{result.host}]"
    detail = result.message
    engine = engine_label(result)
    if engine:
        detail += f" ({engine})" if detail else f"({engine})"
    if result.error is not None and result.error.hint:
        detail += f" (hint: {result.error.hint})"
    if result.bytes_sent:
        detail += f" ({human_bytes(result.bytes_sent)} sent)"
    if verbose >= 1 and result.timings:
        detail += f" [{timings_text(result.timings)}]"
    # the message and engine version come from the host: no terminal control reaches the user
    line = printable(f"{text} => {detail}" if detail else text)
    return paint(line, result.status, colour)


def engine_label(result: HostResult) -> str:
    """`docker 28.5.2, containerd store` ("" when the host's engine was never probed)."""
    facts = result.facts
    return facts.label if facts is not None and facts.engine_version else ""


def engine_json(result: HostResult) -> dict[str, str] | None:
    """The host's engine for --json: name, version, store (classic | containerd | "")."""
    facts = result.facts
    if facts is None or not facts.engine_version:
        return None
    return {"name": facts.engine, "version": facts.engine_version, "store": facts.store}


def play_banner(name: str, hosts: object) -> str:
    """`PLAY [name] *****` as ansible-playbook prints it."""
    return f"PLAY [{name}] " + "*" * max(3, 72 - len(name))


def matrix(run: RunResult) -> str:
    """Host x image table for `distrib verify`: present / missing / different / unreachable."""
    results = [r for play in run.plays for r in play.hosts]
    refs: list[str] = []
    for r in results:
        refs.extend(ref for ref in r.states if ref not in refs)
    host_width = max([len(r.host) for r in results] + [4])
    widths = [max(len(ref), 11) for ref in refs]
    header = (
        "HOST".ljust(host_width) + "  " + "  ".join(ref.ljust(w) for ref, w in zip(refs, widths))
    )
    lines = [header.rstrip()]
    for r in results:
        cells = [
            (r.states.get(ref) or ("unreachable" if r.status == UNREACHABLE else "?")).ljust(w)
            for ref, w in zip(refs, widths)
        ]
        lines.append((r.host.ljust(host_width) + "  " + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def write_retry_file(run: RunResult, path: str) -> list[str]:
    """Failed and unreachable hosts, one per line: `--limit @PATH` retries just those.

    A run with no failed host writes no file and removes a stale one: an empty retry file
    would be a `--limit` that means nothing (issue 19). Returns the hosts written."""
    hosts = list(dict.fromkeys(r.host for play in run.plays for r in play.hosts if r.failed))
    if not hosts:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return hosts
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{h}\n" for h in hosts))
    return hosts


def check_retry_file(path: str, option: str = "--retry-file") -> None:
    """Refuse a `--retry-file` (or another output `option`: --junit, --html) that could not be
    written, before any host is changed: a directory, a missing directory, a read-only
    filesystem. Leaves an existing file as it is."""
    existed = os.path.lexists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{option} {path} cannot be written: {exc.strerror or exc}",
            hint="pass a path in a writable directory",
        ) from None
    if not existed:
        with contextlib.suppress(OSError):
            os.unlink(path)


def recap(run: RunResult, colour: bool = False) -> str:
    """The PLAY RECAP block: one line per host with Ansible's counters.

    In colour (as ansible-playbook): the host name in its worst outcome's colour, each
    non-zero counter in its own colour; the columns stay aligned either way."""
    counts: dict[str, dict[str, int]] = {}
    for play in run.plays:
        for result in play.hosts:
            row = counts.setdefault(result.host, dict.fromkeys(COUNTERS, 0))
            row[result.status] += 1
            if result.status == CHANGED:
                row[OK] += 1  # Ansible counts a changed task as ok too
    lines = ["PLAY RECAP " + "*" * 69]
    width = max((len(h) for h in counts), default=0) + 2
    width = max(width, 27)
    for host, row in counts.items():
        cells = "  ".join(
            paint(f"{k}={row[k]}", k, colour and row[k] > 0) + " " * (4 - len(str(row[k])))
            for k in COUNTERS
        )
        worst = next((k for k in (UNREACHABLE, FAILED, CHANGED, OK) if row[k]), SKIPPED)
        name = paint(host, worst, colour) + " " * (width - len(host))
        lines.append(f"{name}: {cells}".rstrip())
    for play in run.plays:
        if play.stopped and len(play.hosts) > sum(1 for h in play.hosts if h.status != "skipped"):
            verb = "aborted" if play.aborted else "stopped"
            lines.append(f"play {play.name!r} {verb}: {play.abort_reason}")
    if run.interrupted:
        lines.append("run interrupted")
    return "\n".join(lines)


def to_json(run: RunResult) -> dict[str, Any]:
    """Machine-readable result. Contains no secrets: only statuses, images, sizes, messages."""
    return {
        "exit_code": run.exit_code,
        "interrupted": run.interrupted,
        "plays": [
            {
                "name": play.name,
                "aborted": play.aborted,
                "stopped": play.stopped,
                "abort_reason": play.abort_reason or None,
                "hosts": {
                    r.host: {
                        "status": r.status,
                        "message": r.message,
                        "engine": engine_json(r),  # {name, version, store} once probed
                        "hint": r.error.hint if r.error else None,
                        "images": r.images,
                        "states": r.states,
                        "bytes_sent": r.bytes_sent,
                        "resumed_from": r.resumed_from,
                        "fed_by": r.fed_by,  # relay fan-out: workstation | host (else null)
                        "bytes_relayed": r.bytes_relayed,  # received from other hosts
                        "layers_sent": r.layers_sent,
                        "layers_total": r.layers_total,
                        "timings": r.timings,
                    }
                    for r in play.hosts
                },
            }
            for play in run.plays
        ],
    }


def dumps(run: RunResult) -> str:
    return json.dumps(to_json(run), indent=2, sort_keys=False)
