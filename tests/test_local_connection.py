"""`ansible_connection: local` (issue 17, item 4): transport.connect gives a LocalSession that
runs each command in the workstation's own shell, with the same operations and errors as an
SSH session (run with stdin, upload into a command, download its stdout, a held command,
timeouts, output cap). Real processes, no SSH."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from distrib import transport
from distrib.errors import CommandError, HostError
from distrib.target import Target

LOCAL = Target(name="me", address="localhost", connection="local", max_output=10_000)


def test_connect_gives_a_local_session_without_ssh() -> None:
    session = transport.connect(LOCAL)
    try:
        result = session.run("echo out; echo err >&2; exit 3")
        assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert session.run("cat", stdin=b"password-line\n").stdout == "password-line\n"
    finally:
        session.close()


def test_upload_streams_into_a_command(tmp_path: Path) -> None:
    target = tmp_path / "received"
    session = transport.connect(LOCAL)
    sent: list[int] = []
    chunks = [b"a" * 300_000, b"b" * 5]
    result = session.upload(f"cat > {target}", chunks, on_bytes=sent.append)
    assert result.ok and target.read_bytes() == b"".join(chunks) and sum(sent) == 300_005
    early = session.upload("head -c 1 >/dev/null; echo gone >&2; exit 7", [b"x" * 2_000_000] * 4)
    assert (early.exit_status, early.stderr) == (7, "gone\n")  # stopped reading: its error


def test_download_hands_stdout_over_in_chunks() -> None:
    session = transport.connect(LOCAL)
    got = bytearray()
    result = session.download("head -c 700000 /dev/zero; echo done >&2", got.extend)
    assert result.ok and len(got) == 700_000 and result.stderr == "done\n"


def test_timeout_kills_the_command_and_its_children() -> None:
    session = transport.connect(LOCAL)
    started = time.monotonic()
    with pytest.raises(HostError, match="timed out after 0.5s"):
        session.run("sleep 30 & sleep 30", timeout=0.5)
    assert time.monotonic() - started < 5


def test_output_past_the_cap_is_refused() -> None:
    session = transport.connect(LOCAL)
    with pytest.raises(HostError, match="more than 10,000 bytes"):
        session.run("head -c 50000 /dev/zero")


def test_hold_keeps_a_command_running_until_released(tmp_path: Path) -> None:
    marker = tmp_path / "ended"
    session = transport.connect(LOCAL)
    line, release = session.hold(f"echo locked; cat >/dev/null; touch {marker}", timeout=5)
    assert line == "locked" and not marker.exists()
    release()
    assert marker.exists()
    with pytest.raises(CommandError):
        session.hold("echo nope >&2; exit 4", timeout=5)
    with pytest.raises(HostError, match="no answer within 0.5s"):
        session.hold("sleep 10", timeout=0.5)
    session.close()


def test_a_silent_download_times_out() -> None:
    session = transport.connect(LOCAL)
    started = time.monotonic()
    with pytest.raises(HostError, match="timed out after 0.5s"):
        session.download("sleep 30", lambda block: None, timeout=0.5)
    assert time.monotonic() - started < 5
