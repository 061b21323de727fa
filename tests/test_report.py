"""Pure tests of what the user reads: host lines, colour, the recap, the --json schema, and the
progress helpers (line output without escape codes, phase summary, -vv command log)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from distrib.commands import Facts
from distrib.engine import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE, HostResult
from distrib.errors import (
    EXIT_HOST_FAILED,
    EXIT_HOST_UNREACHABLE,
    EXIT_OK,
    EXIT_PLAY_ABORTED,
    ConnectError,
)
from distrib.executor import PlayResult, RunResult
from distrib.progress import BarProgress, LineProgress, fits, logged, phase_summary
from distrib.report import (
    dumps,
    host_line,
    paint,
    recap,
    timings_text,
    to_json,
    use_colour,
    write_retry_file,
)
from distrib.target import Result, Target

ESC = re.compile(r"\x1b\[[0-9;]*m")
WEB = "sha256:" + "1" * 64


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


C28 = Facts("28.5.2", frozenset(), store="containerd")  # docker's containerd image store


def changed(host: str = "node1") -> HostResult:
    return HostResult(
        host,
        CHANGED,
        "loaded and verified 1 image(s)",
        images={"demo/web:1.0": WEB},
        states={"demo/web:1.0": "present"},
        bytes_sent=4_100_000,
        timings={"total": 2.5, "upload": 1.25, "connect": 0.125, "load": 0.5, "probe": 0.05},
    )


def unreachable(host: str = "ghost") -> HostResult:
    err = ConnectError(host, "connection timed out after 2s", hint="is the host up?")
    return HostResult(host, UNREACHABLE, err.message, error=err, timings={"total": 2.0})


def sample_run() -> RunResult:
    first = PlayResult(
        "roll out",
        [
            changed("node1"),
            HostResult("node2", OK, "all images already present", facts=C28),
            unreachable(),
        ],
    )
    second = PlayResult(
        "second",
        [
            HostResult("node1", FAILED, "docker load failed"),
            HostResult("node3", SKIPPED, "not started"),
        ],
        aborted=True,
        stopped=True,
        abort_reason="batch 1: 1/1 host(s) failed (max_fail_percentage 0)",
    )
    return RunResult([first, second])


# -- colour decision -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tty", "env", "expected"),
    [
        (True, {}, True),
        (True, {"TERM": "xterm-256color"}, True),
        (True, {"NO_COLOR": "1"}, False),
        (True, {"NO_COLOR": ""}, False),  # any value, even empty, turns colour off
        (True, {"TERM": "dumb"}, False),
        (False, {}, False),
        (False, {"TERM": "xterm-256color"}, False),
    ],
)
def test_use_colour(tty: bool, env: dict[str, str], expected: bool) -> None:
    stream = Tty() if tty else io.StringIO()
    assert use_colour(stream, env) is expected


@pytest.mark.parametrize(
    ("status", "code"),
    [(OK, "32"), (CHANGED, "33"), (FAILED, "31"), (UNREACHABLE, "1;31"), (SKIPPED, "36")],
)
def test_paint_uses_ansible_colours(status: str, code: str) -> None:
    assert paint("x", status, True) == f"\x1b[{code}mx\x1b[0m"
    assert paint("x", status, False) == "x"


def test_paint_unknown_status_is_plain() -> None:
    assert paint("x", "upload", True) == "x"


# -- host lines and verbosity --------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "verbose", "expected"),
    [
        (changed(), 0, "changed: [node1] => loaded and verified 1 image(s) (4.1 MB sent)"),
        (
            changed(),
            1,
            "changed: [node1] => loaded and verified 1 image(s) (4.1 MB sent) "
            "[connect 0.12s, probe 0.05s, upload 1.25s, load 0.50s, total 2.50s]",
        ),
        (
            unreachable(),
            0,
            "unreachable: [ghost] => connection timed out after 2s (hint: is the host up?)",
        ),
        (HostResult("n", FAILED, "boom"), 0, "fatal: [n] => boom"),
        # mixed fleets (issue 14): engine, version and docker's image store follow the message
        (
            HostResult("n", OK, "all images already present", facts=C28),
            0,
            "ok: [n] => all images already present (docker 28.5.2, containerd store)",
        ),
        (
            HostResult(
                "n",
                CHANGED,
                "loaded",
                bytes_sent=4_100_000,
                facts=Facts("20.10.24", frozenset(), store="classic"),
            ),
            0,
            "changed: [n] => loaded (docker 20.10.24) (4.1 MB sent)",
        ),
        (
            HostResult(
                "n",
                FAILED,
                "drift: x:1 different config",
                facts=Facts("4.3.1", frozenset(), engine="podman"),
            ),
            0,
            "fatal: [n] => drift: x:1 different config (podman 4.3.1)",
        ),
        (
            HostResult("n", UNREACHABLE, "refused", facts=Facts("", frozenset())),
            0,
            "unreachable: [n] => refused",
        ),
        (HostResult("n", SKIPPED, ""), 2, "skipped: [n]"),
    ],
)
def test_host_line(result: HostResult, verbose: int, expected: str) -> None:
    assert host_line(result, verbose) == expected


def test_host_line_in_colour_is_the_same_text_wrapped() -> None:
    line = host_line(changed(), 1, colour=True)
    assert line.startswith("\x1b[33m") and line.endswith("\x1b[0m")
    assert ESC.sub("", line) == host_line(changed(), 1)


@pytest.mark.parametrize(
    ("timings", "expected"),
    [
        ({}, ""),
        ({"total": 1.0}, "total 1.00s"),
        ({"verify": 0.2, "connect": 0.1, "total": 1.0}, "connect 0.10s, verify 0.20s, total 1.00s"),
        ({"zz": 1.0, "aa": 2.0, "probe": 0.3}, "probe 0.30s, aa 2.00s, zz 1.00s"),
    ],
)
def test_timings_text(timings: dict[str, float], expected: str) -> None:
    assert timings_text(timings) == expected


# -- recap ---------------------------------------------------------------------------------


def test_recap_counts_like_ansible_and_names_the_abort() -> None:
    text = recap(sample_run())
    lines = text.splitlines()
    assert lines[0].startswith("PLAY RECAP ***")
    rows = {ln.split(":")[0].strip(): ln for ln in lines[1:5]}
    # changed counts as ok too; node1 appears in two plays
    assert re.search(r"ok=1\s+changed=1\s+unreachable=0\s+failed=1\s+skipped=0", rows["node1"])
    assert re.search(r"ok=1\s+changed=0", rows["node2"])
    assert "unreachable=1" in rows["ghost"]
    assert "skipped=1" in rows["node3"]
    assert "play 'second' aborted: batch 1: 1/1 host(s) failed (max_fail_percentage 0)" in text


def test_recap_in_colour_keeps_columns_aligned() -> None:
    plain = recap(sample_run())
    coloured = recap(sample_run(), colour=True)
    assert "\x1b[" in coloured
    assert ESC.sub("", coloured) == plain
    # zero counters stay uncoloured, the host name takes its worst outcome's colour
    ghost = next(ln for ln in coloured.splitlines() if "ghost" in ln)
    assert ghost.startswith("\x1b[1;31mghost\x1b[0m")
    assert "\x1b[32mok=0" not in coloured


# -- JSON schema ---------------------------------------------------------------------------

HOST_KEYS = {
    "status",
    "message",
    "hint",
    "images",
    "states",
    "bytes_sent",
    "resumed_from",
    "layers_sent",
    "layers_total",
    "fed_by",  # relay fan-out (issue 9)
    "bytes_relayed",
    "timings",
    "engine",  # {name, version, store} once probed (issue 14)
}
PLAY_KEYS = {"name", "aborted", "stopped", "abort_reason", "hosts"}


def check_schema(doc: dict[str, Any]) -> None:
    """The documented --json shape (README, "Output, JSON, exit codes")."""
    assert set(doc) == {"exit_code", "interrupted", "plays"}
    assert isinstance(doc["exit_code"], int) and isinstance(doc["interrupted"], bool)
    for play in doc["plays"]:
        assert set(play) == PLAY_KEYS
        assert isinstance(play["name"], str)
        assert isinstance(play["aborted"], bool) and isinstance(play["stopped"], bool)
        assert play["abort_reason"] is None or isinstance(play["abort_reason"], str)
        for name, host in play["hosts"].items():
            assert isinstance(name, str)
            assert set(host) == HOST_KEYS
            assert host["status"] in {OK, CHANGED, FAILED, UNREACHABLE, SKIPPED}
            assert isinstance(host["message"], str)
            assert host["hint"] is None or isinstance(host["hint"], str)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in host["images"].items())
            assert set(host["states"].values()) <= {"present", "missing", "different"}
            assert isinstance(host["bytes_sent"], int) and host["bytes_sent"] >= 0
            assert isinstance(host["resumed_from"], int) and host["resumed_from"] >= 0
            assert isinstance(host["layers_sent"], int) and isinstance(host["layers_total"], int)
            assert all(isinstance(v, float) for v in host["timings"].values())
            engine = host["engine"]
            assert engine is None or (
                set(engine) == {"name", "version", "store"}
                and engine["store"] in {"classic", "containerd", ""}
            )


def test_json_shape_from_a_hand_built_run() -> None:
    doc = json.loads(dumps(sample_run()))
    check_schema(doc)
    assert doc["exit_code"] == EXIT_PLAY_ABORTED
    first, second = doc["plays"]
    assert first["hosts"]["node1"] == {
        "status": "changed",
        "message": "loaded and verified 1 image(s)",
        "hint": None,
        "images": {"demo/web:1.0": WEB},
        "states": {"demo/web:1.0": "present"},
        "bytes_sent": 4_100_000,
        "resumed_from": 0,
        "layers_sent": 0,
        "layers_total": 0,
        "fed_by": None,
        "bytes_relayed": 0,
        "timings": {"total": 2.5, "upload": 1.25, "connect": 0.125, "load": 0.5, "probe": 0.05},
        "engine": None,
    }
    assert first["hosts"]["node2"]["engine"] == {
        "name": "docker",
        "version": "28.5.2",
        "store": "containerd",
    }
    assert first["hosts"]["ghost"]["hint"] == "is the host up?"
    assert (first["aborted"], first["stopped"], first["abort_reason"]) == (False, False, None)
    assert (second["aborted"], second["stopped"]) == (True, True)
    assert list(first["hosts"]) == ["node1", "node2", "ghost"]  # play order kept


@pytest.mark.parametrize(
    ("results", "code"),
    [
        ([HostResult("a", OK), HostResult("b", CHANGED)], EXIT_OK),
        ([HostResult("a", OK), HostResult("b", FAILED)], EXIT_HOST_FAILED),
        ([HostResult("a", FAILED), HostResult("b", UNREACHABLE)], EXIT_HOST_UNREACHABLE),
    ],
)
def test_json_exit_code_matches_run(results: list[HostResult], code: int) -> None:
    doc = to_json(RunResult([PlayResult("p", results)]))
    check_schema(doc)
    assert doc["exit_code"] == code


def test_retry_file_lists_failed_and_unreachable_once(tmp_path: Any) -> None:
    path = tmp_path / "retry"
    write_retry_file(sample_run(), str(path))
    assert path.read_text() == "ghost\nnode1\n"


# -- progress helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        ([], ""),
        (["waiting", "waiting"], "waiting 2"),
        (["ok", "upload", "load", "upload", "changed"], "upload 2 · load 1 · ok 1 · changed 1"),
        (["verify", "connect", "failed", "odd"], "connect 1 · verify 1 · failed 1 · odd 1"),
        (["load", "layers", "probe", "lock"], "lock 1 · probe 1 · layers 1 · load 1"),
        (
            ["relay from node2", "relay", "relay setup", "relay from node7", "re-parent"],
            "relay setup 1 · relay 3 · re-parent 1",
        ),
    ],
)
def test_phase_summary(phases: list[str], expected: str) -> None:
    assert phase_summary(phases) == expected


def test_phase_summary_orders_every_reported_phase() -> None:
    from distrib.progress import SUMMARY_ORDER
    from distrib.report import PHASE_ORDER

    assert [p for p in SUMMARY_ORDER if p in PHASE_ORDER] == list(PHASE_ORDER)


@pytest.mark.parametrize(
    ("hosts", "rows", "expected"),
    [(3, 24, True), (19, 24, True), (20, 24, False), (200, 50, False), (1, 5, False)],
)
def test_fits(hosts: int, rows: int, expected: bool) -> None:
    assert fits(hosts, rows) is expected


def test_line_progress_one_line_per_phase_without_escapes() -> None:
    out = io.StringIO()
    progress = LineProgress(out, verbose=1)
    for phase in ("connect", "probe", "upload"):
        progress.phase("node1", phase)
    progress.transfer_started("node1", 4_100_000)
    progress.advance("node1", 1000)  # byte counts never print a line
    progress.log("node1", "docker load")
    progress.finished(changed())
    assert out.getvalue().splitlines() == [
        "[node1] connect",
        "[node1] probe",
        "[node1] upload",
        "[node1] sending 4.1 MB",
        "[node1] $ docker load",
        host_line(changed(), 1),
    ]
    assert "\x1b" not in out.getvalue()


def test_bar_progress_summarises_when_hosts_do_not_fit() -> None:
    out = Tty()
    hosts = [f"node{i}" for i in range(40)]
    progress = BarProgress(hosts, out, rows=24)
    assert not progress.per_host and not progress.bars
    progress.phase("node1", "upload")
    progress.transfer_started("node1", 1000)
    progress.advance("node1", 1000)
    progress.finished(changed("node2"))
    progress.close()
    text = out.getvalue()
    assert "upload 1" in text and "changed 1" in text and "TOTAL" in text


def test_summary_total_estimates_the_runs_not_started_yet() -> None:
    """Issue 16: with 40 hosts and 2 transfers started, TOTAL is not 2 transfers' worth."""
    progress = BarProgress([f"node{i}" for i in range(40)], Tty(), rows=24)
    progress.transfer_started("node1", 1000)
    assert progress.total.total == 40_000  # 1 run started, 39 more like it
    progress.transfer_started("node2", 3000)
    assert progress.total.total == 4000 + 2000 * 38
    progress.finished(HostResult("node3", OK, "all images already present"))
    assert progress.total.total == 4000 + 2000 * 37  # a run that sent nothing
    progress.transfer_more("node2", 1000)
    assert progress.total.total == 5000 + 2500 * 37
    progress.advance("node1", 1000)
    progress.finished(changed("node1"))
    assert progress.total.total == 5000 + 2500 * 37 and progress.total.n == 1000
    for i in [0, *range(4, 40)]:
        progress.finished(HostResult(f"node{i}", OK, "all images already present"))
    progress.advance("node2", 4000)
    progress.finished(changed("node2"))
    assert progress.total.total == progress.total.n == 5000  # all done: exact
    progress.close()


def test_bar_progress_per_host_when_they_fit() -> None:
    out = Tty()
    progress = BarProgress(["node1", "node2"], out, rows=24, colour=True)
    assert progress.per_host and set(progress.bars) == {"node1", "node2"}
    progress.phase("node1", "upload")
    progress.transfer_started("node1", 1000)
    progress.advance("node1", 500)
    progress.finished(HostResult("node2", OK, "all images already present"))
    progress.close()
    text = out.getvalue()
    assert "\x1b[32mok" in text and "all images already present" in text


class RecordingSession:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        self.calls.append(command)
        return Result(command, 0, "", "")

    def upload(
        self, command: str, chunks: Any, *, on_bytes: Any = None, timeout: Any = None
    ) -> Result:
        self.calls.append(command)
        for chunk in chunks:
            if on_bytes:
                on_bytes(len(chunk))
        return Result(command, 0, "", "")

    def close(self) -> None:
        self.calls.append("close")


def test_logged_connector_logs_each_command_as_sent() -> None:
    session = RecordingSession()
    seen: list[tuple[str, str]] = []
    connect = logged(lambda target: session, lambda host, cmd: seen.append((host, cmd)))
    wrapped = connect(Target("node1", "10.0.0.1"))
    wrapped.run("docker images")
    counted: list[int] = []
    wrapped.upload("cat > /x", [b"abc"], on_bytes=counted.append)
    wrapped.close()
    assert session.calls == ["docker images", "cat > /x", "close"]
    assert seen == [("node1", "docker images"), ("node1", "cat > /x  < archive")]
    assert counted == [3]
