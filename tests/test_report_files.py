"""--junit and --html (issue 18): built from a hand-made RunResult (pure), then the HTML page
shown in a real headless Chromium (screenshot and DOM)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from distrib.commands import Facts
from distrib.engine import CHANGED, FAILED, OK, SKIPPED, HostResult
from distrib.errors import ConnectError, VerifyError
from distrib.executor import PlayResult, RunResult
from distrib.report_files import html_page, junit, outcome, write

WEB, WORKER = "demo/web:1.0", "demo/worker:1.0"
PLANNED = [[WEB, WORKER], [WEB]]
D28 = Facts("28.5.2", frozenset(), store="containerd")


def sample_run() -> RunResult:
    drift = HostResult(
        "node2",
        FAILED,
        f"drift: {WORKER} different config",
        states={WEB: "present", WORKER: "different"},
        error=VerifyError("node2", "drift"),
        timings={"connect": 0.1, "probe": 0.3, "total": 0.5},
        facts=D28,
    )
    err = ConnectError("ghost", "connection timed out after 2s", hint="is the host up?")
    first = PlayResult(
        "roll <out> & \x1b[31mred",
        [
            HostResult(
                "node1",
                CHANGED,
                "loaded and verified 2 image(s)",
                states={WEB: "present", WORKER: "present"},
                bytes_sent=4_100_000,
                layers_sent=2,
                layers_total=7,
                timings={"connect": 0.2, "probe": 0.1, "upload": 2.0, "load": 1.0, "total": 3.5},
                facts=Facts("20.10.24", frozenset()),
            ),
            drift,
            HostResult("ghost", "unreachable", err.message, error=err, timings={"total": 2.0}),
        ],
    )
    second = PlayResult(
        "second",
        [HostResult("node3", SKIPPED, "not started: batch 1 failed")],
        stopped=True,
        abort_reason="batch 1: 1/1 host(s) failed (any_errors_fatal)",
    )
    return RunResult([first, second])


def cases(root: ET.Element) -> dict[tuple[str, str], ET.Element]:
    return {(c.get("classname", ""), c.get("name", "")): c for c in root.iter("testcase")}


def test_outcome_per_image_of_a_drifted_host() -> None:
    drifted = sample_run().plays[0].hosts[1]
    assert outcome(drifted, WEB).status == OK  # shown present: passes
    found = outcome(drifted, WORKER)
    assert (found.status, found.state) == (FAILED, "different")
    assert "different config" in found.message


def test_junit_one_testcase_per_host_and_image() -> None:
    text = junit(sample_run(), PLANNED)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.encode())
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "7",
        "1",
        "2",
        "1",
    )
    first, second = root.findall("testsuite")
    assert first.get("name") == "roll <out> & red"  # escapes stripped, XML escapes by etree
    found = cases(root)
    play = "roll <out> & red"
    assert set(found) == {
        (f"{play}.node1", WEB),
        (f"{play}.node1", WORKER),
        (f"{play}.node2", WEB),
        (f"{play}.node2", WORKER),
        (f"{play}.ghost", WEB),
        (f"{play}.ghost", WORKER),
        ("second.node3", WEB),
    }
    assert list(found[(f"{play}.node1", WEB)])[0].tag == "system-out"
    failure = found[(f"{play}.node2", WORKER)].find("failure")
    assert failure is not None and "different config" in (failure.get("message") or "")
    assert found[(f"{play}.node2", WEB)].find("failure") is None  # present there: passes
    error = found[(f"{play}.ghost", WEB)].find("error")
    assert error is not None and error.get("type") == "unreachable"
    assert "is the host up?" in (error.get("message") or "")
    assert found[("second.node3", WEB)].find("skipped") is not None
    assert "any_errors_fatal" in (second.findtext("system-err") or "")
    # the host's total is shared among its images: the suite's time adds up to the hosts'
    assert float(found[(f"{play}.node1", WEB)].get("time", "")) == pytest.approx(1.75)
    assert float(first.get("time", "")) == pytest.approx(3.5 + 0.5 + 2.0)


def test_junit_survives_any_host_text() -> None:
    run = RunResult([PlayResult("p", [HostResult("h", FAILED, "bad \x00\x07 bytes \ufffe")])])
    root = ET.fromstring(junit(run).encode())  # no plan: a host without images is one case
    case = next(root.iter("testcase"))
    assert case.get("name") == "(no image)"
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == "bad ?? bytes ?"


def test_html_is_self_contained_with_matrix_and_chart() -> None:
    page = html_page(sample_run(), PLANNED, title="distrib run site.yaml")
    assert page.startswith("<!DOCTYPE html>")
    for needle in ("<svg", "node1", "ghost", WORKER, "docker 20.10.24", "4.1 MB", "2/7 layers"):
        assert needle in page, needle
    assert "roll &lt;out&gt; &amp; red" in page and "\x1b" not in page
    # nothing fetched: no script, stylesheet link, image or remote URL but the SVG namespace
    lowered = page.lower()
    assert "<script" not in lowered and "<link" not in lowered and "<img" not in lowered
    assert lowered.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0
    ET.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])  # well-formed SVG


def test_write_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "r.xml"
    target.write_text("old")
    write(str(target), "new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["r.xml"]


# -- in a real browser ---------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(v for j, v in enumerate(line) if j % 4 != 3))
        prev = line
    return width, height, rows


def test_html_report_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "chromium is not installed (scripts/setup.sh installs it: apt-get install chromium)"
        )
    page = tmp_path / "report.html"
    page.write_text(html_page(sample_run(), PLANNED, title="distrib run site.yaml"))
    shot = tmp_path / "shot.png"
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"]
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,800", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.exists() and shot.stat().st_size > 0, "chromium wrote no screenshot"
    width, height, rows = _pixels(shot.read_bytes())
    assert (width, height) == (1200, 800)
    colours = {row[i : i + 3] for row in rows[::4] for i in range(0, len(row), 12)}
    assert len(colours) > 20, "the screenshot is (nearly) blank"
    white = bytes((255, 255, 255))
    inked = sum(1 for row in rows[::4] for i in range(0, len(row), 12) if row[i : i + 3] != white)
    assert inked > 0.01 * (width // 4) * (height // 4), "almost nothing drawn"
    # the upload segment's orange (#fc8d62) is drawn: the chart rendered
    assert any(
        abs(c[0] - 0xFC) < 12 and abs(c[1] - 0x8D) < 12 and abs(c[2] - 0x62) < 12 for c in colours
    ), "no upload bar in the chart"
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    for needle in (
        "PLAY [roll &lt;out&gt; &amp; red]",
        "node2",
        "different",
        "<svg",
        "unreachable",
    ):
        assert needle in dom, needle
