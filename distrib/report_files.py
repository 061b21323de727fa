"""Report files of a run (issue 18): `--junit FILE` for CI systems and `--html FILE` for people.

Both are built from the same RunResult/HostResult as `--json` (distrib.report), one entry per
host x image. Pure: each builder returns text; `write` puts it on disk atomically. The HTML page
is self-contained (inline CSS and SVG, no script, no external asset) so it opens offline, in a CI
artifact viewer, or mailed around.
"""

from __future__ import annotations

import html
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from distrib.engine import CHANGED, FAILED, OK, PRESENT, SKIPPED, UNREACHABLE, HostResult
from distrib.errors import printable
from distrib.executor import RunResult
from distrib.report import COUNTERS, PHASE_ORDER, engine_label
from distrib.units import human_bytes

# XML 1.0 allows no C0 controls but tab, newline and carriage return (a host may send any byte)
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
PHASE_COLOURS = {
    "connect": "#8da0cb",
    "probe": "#66c2a5",
    "upload": "#fc8d62",
    "checksum": "#e5c494",
    "load": "#a6d854",
    "verify": "#ffd92f",
    "other": "#b3b3b3",
}
STATUS_COLOURS = {
    OK: "#1a7f37",
    CHANGED: "#9a6700",
    FAILED: "#cf222e",
    UNREACHABLE: "#a40e26",
    SKIPPED: "#0969da",
}


@dataclass(frozen=True)
class Outcome:
    """One host x image: a status of the report's vocabulary, and what to say about it."""

    status: str  # ok | changed | failed | unreachable | skipped
    state: str  # present | missing | different ("" when the host never showed the image)
    message: str


def outcome(result: HostResult, ref: str) -> Outcome:
    """What happened to image `ref` on the host of `result`.

    A host that failed fails each of its images, except those it showed to hold already (a
    verify drift, or a deploy that failed after another image was found present): those pass."""
    state = result.states.get(ref, "")
    if result.status == FAILED and state == PRESENT:
        return Outcome(OK, state, f"{ref} present")
    return Outcome(result.status, state, host_message(result))


def host_message(result: HostResult) -> str:
    """The host's message and hint, safe for XML and a page."""
    message = result.message
    if result.error is not None and result.error.hint:
        message += f" (hint: {result.error.hint})"
    return _clean(message)


def play_images(run: RunResult, planned: Sequence[Sequence[str]] = ()) -> list[list[str]]:
    """Each play's image references: the plan's (`planned`, by play index), else those its
    hosts reported, in first-seen order."""
    out: list[list[str]] = []
    for index, play in enumerate(run.plays):
        refs = list(planned[index]) if index < len(planned) else []
        for r in play.hosts:
            refs.extend(ref for ref in [*r.states, *r.images] if ref not in refs)
        out.append(refs)
    return out


def _clean(text: str) -> str:
    return _XML_INVALID.sub("?", printable(text))


def _seconds(value: float) -> str:
    return f"{value:.3f}"


# -- JUnit ---------------------------------------------------------------------------------


def junit(run: RunResult, planned: Sequence[Sequence[str]] = ()) -> str:
    """JUnit XML: a testsuite per play, a testcase per host x image (classname = play.host,
    name = image). failed -> <failure>, unreachable -> <error> (the test could not run),
    skipped -> <skipped>. A testcase's time is its host's total shared among its images, so the
    times add up to the hosts' time."""
    root = ET.Element("testsuites", name="distrib")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    all_time = 0.0
    for play, refs in zip(run.plays, play_images(run, planned)):
        suite = ET.SubElement(root, "testsuite", name=_clean(play.name))
        counts = dict.fromkeys(totals, 0)
        suite_time = 0.0
        for result in play.hosts:
            host_refs = refs or [""]  # a play that names no image still reports its hosts
            share = result.timings.get("total", 0.0) / len(host_refs)
            for ref in host_refs:
                found = (
                    outcome(result, ref)
                    if ref
                    else Outcome(result.status, "", host_message(result))
                )
                case = ET.SubElement(
                    suite,
                    "testcase",
                    classname=_clean(f"{play.name}.{result.host}"),
                    name=_clean(ref or "(no image)"),
                    time=_seconds(share),
                )
                counts["tests"] += 1
                suite_time += share
                counter = _junit_outcome(case, found, result)
                if counter:
                    counts[counter] += 1
        if play.stopped and play.abort_reason:
            ET.SubElement(suite, "system-err").text = _clean(
                f"play {'aborted' if play.aborted else 'stopped'}: {play.abort_reason}"
            )
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", _seconds(suite_time))
        all_time += suite_time
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _seconds(all_time))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _junit_outcome(case: ET.Element, found: Outcome, result: HostResult) -> str:
    """Add the testcase's outcome element; return the suite counter it adds to ("" for a pass)."""
    if found.status in (FAILED, UNREACHABLE):
        tag = "failure" if found.status == FAILED else "error"
        element = ET.SubElement(case, tag, message=found.message, type=found.status)
        element.text = found.message
        return "failures" if tag == "failure" else "errors"
    if found.status == SKIPPED:
        ET.SubElement(case, "skipped", message=found.message)
        return "skipped"
    detail = found.message
    engine = engine_label(result)
    if engine:
        detail += f" ({engine})"
    ET.SubElement(case, "system-out").text = _clean(f"{found.status}: {detail}")
    return ""


# -- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1f2328}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.meta{color:#57606a;margin-bottom:12px}
table{border-collapse:collapse;margin:8px 0} th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top} th{background:#f6f8fa} td.num{text-align:right}
.st{font-weight:600;color:#fff;border-radius:4px;padding:1px 6px;white-space:nowrap}
.msg{color:#57606a;font-size:12px;max-width:420px}
.counts span{margin-right:12px} .legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"""


def html_page(run: RunResult, planned: Sequence[Sequence[str]] = (), title: str = "") -> str:
    """A self-contained page: per play, a host x image matrix (status, state), each host's
    engine, bytes and timings, and an SVG chart of where each host's time went, by phase."""
    esc = html.escape
    heading = title or "distrib run"
    counts = dict.fromkeys(COUNTERS, 0)
    for play in run.plays:
        for r in play.hosts:
            counts[r.status] = counts.get(r.status, 0) + 1
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(heading)}</h1>",
        f'<div class="meta">exit code {run.exit_code}'
        + (" · interrupted" if run.interrupted else "")
        + f" · {esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</div>",
        '<div class="counts">hosts: '
        + "".join(f"<span>{_badge(k)} {counts[k]}</span>" for k in COUNTERS)
        + "</div>",
    ]
    for play, refs in zip(run.plays, play_images(run, planned)):
        parts.append(f"<h2>PLAY [{esc(_clean(play.name))}]</h2>")
        if play.stopped and play.abort_reason:
            verb = "aborted" if play.aborted else "stopped"
            parts.append(f'<div class="meta">play {verb}: {esc(_clean(play.abort_reason))}</div>')
        parts.append(_matrix_html(play.hosts, refs))
        if any(r.timings.get("total") for r in play.hosts):
            parts.append('<div class="meta">where the time went, per host and phase</div>')
            parts.append(_chart_svg(play.hosts))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#57606a")
    return f'<span class="st" style="background:{colour}">{html.escape(status)}</span>'


def _matrix_html(results: Sequence[HostResult], refs: Sequence[str]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(ref)}</th>" for ref in refs)
    rows = [
        "<table><thead><tr><th>host</th>"
        + head
        + "<th>engine</th><th>sent</th><th>time</th><th>phases</th><th>message</th></tr></thead>"
        "<tbody>"
    ]
    for r in results:
        cells = []
        for ref in refs:
            found = outcome(r, ref)
            state = f" {esc(found.state)}" if found.state else ""
            cells.append(f"<td>{_badge(found.status)}{state}</td>")
        sent = human_bytes(r.bytes_sent) if r.bytes_sent else "-"
        if r.layers_total:
            sent += f" ({r.layers_sent}/{r.layers_total} layers)"
        total = r.timings.get("total")
        rows.append(
            f"<tr><th>{esc(_clean(r.host))}</th>{''.join(cells)}"
            f"<td>{esc(_clean(engine_label(r))) or '-'}</td>"
            f'<td class="num">{esc(sent)}</td>'
            f'<td class="num">{f"{total:.2f}s" if total is not None else "-"}</td>'
            f'<td class="msg">{esc(_phases_text(r))}</td>'
            f'<td class="msg">{esc(host_message(r))}</td></tr>'
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _phases(result: HostResult) -> list[tuple[str, float]]:
    """The host's time by phase, in pipeline order; what no phase accounts for is `other`."""
    out = [(p, result.timings[p]) for p in PHASE_ORDER if result.timings.get(p)]
    known = sum(v for _, v in out)
    rest = result.timings.get("total", known) - known
    if rest > 0.005:
        out.append(("other", rest))
    return out


def _phases_text(result: HostResult) -> str:
    return ", ".join(f"{p} {v:.2f}s" for p, v in _phases(result)) or "-"


def _chart_svg(results: Sequence[HostResult]) -> str:
    """Horizontal stacked bars, one per host, a segment per phase, scaled to the slowest."""
    esc = html.escape
    label_w, bar_w, row_h, top = 160, 640, 22, 8
    longest = max((sum(v for _, v in _phases(r)) for r in results), default=0.0) or 1.0
    height = top + row_h * len(results) + 24
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 70}" '
        f'height="{height}" role="img" aria-label="where the time went, per host">'
    ]
    for row, r in enumerate(results):
        y = top + row * row_h
        out.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="12">'
            f"{esc(_clean(r.host))}</text>"
        )
        x = float(label_w)
        for phase, seconds in _phases(r):
            width = bar_w * seconds / longest
            out.append(
                f'<rect x="{x:.1f}" y="{y + 2}" width="{max(width, 0.5):.1f}" height="{row_h - 6}" '
                f'fill="{PHASE_COLOURS.get(phase, PHASE_COLOURS["other"])}">'
                f"<title>{esc(_clean(r.host))} {esc(phase)} {seconds:.2f}s</title></rect>"
            )
            x += width
        total = sum(v for _, v in _phases(r))
        out.append(f'<text x="{x + 4:.1f}" y="{y + 14}" font-size="11">{total:.2f}s</text>')
    axis_y = top + row_h * len(results) + 14
    out.append(
        f'<text x="{label_w}" y="{axis_y}" font-size="11" fill="#57606a">0 s</text>'
        f'<text x="{label_w + bar_w}" y="{axis_y}" font-size="11" fill="#57606a" '
        f'text-anchor="end">{longest:.2f} s</text></svg>'
    )
    legend = "".join(
        f'<span><i style="background:{c}"></i>{esc(p)}</span>' for p, c in PHASE_COLOURS.items()
    )
    return "\n".join(out) + f'\n<div class="legend">{legend}</div>'


# -- files ---------------------------------------------------------------------------------


def write(path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all (a reader never sees half a report)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
