"""Issue 19: bad files and bad values give one clear error naming the file (and line, key), never
a traceback (exit 250) or a hang. Each case runs the real CLI (`cli.main`) on real files; none
needs a host or the local docker (every error is found before either is used)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distrib import cli, commands, patterns, report, target, transport, yamlio
from distrib.archive import Archive
from distrib.diskspace import DiskGuard
from distrib.engine import FAILED, OK, HostResult
from distrib.errors import (
    EXIT_CONFIG,
    EXIT_HOST_UNREACHABLE,
    CommandError,
    ConfigError,
    ConnectError,
    LocalError,
    TransferError,
    last_lines,
    printable,
)
from distrib.executor import PlayResult, RunResult
from distrib.hostrange import MAX_RANGE_HOSTS
from distrib.inventory import Inventory
from distrib.workflows import archives

INVENTORY = "all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n"
PLAYBOOK = "- hosts: all\n  images: [demo/web:1.0]\n"

# 539 bytes that expand to 9**9 strings once walked (issue 19's reproduction, as group vars)
BOMB = "all:\n  hosts:\n    h1:\n  vars:\n" + "".join(
    f"    {name}: &{name} [{', '.join([prev] * 9)}]\n"
    for name, prev in zip("abcdefghi", ['"lol"', *("*" + c for c in "abcdefgh")])
)


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI in tmp_path; it must fail with a config error (exit 5), no traceback."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = cli.main(list(argv))
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == EXIT_CONFIG, err
    assert err.startswith("ERROR: "), err
    return err


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return name


@pytest.fixture
def inv(tmp_path: Path) -> str:
    return write(tmp_path, "inv.yml", INVENTORY)


# --- item 5: text files that are not UTF-8 ----------------------------------------------------


@pytest.mark.parametrize(
    "content, line",
    [
        (b"\xff\xfe\x00\x01binary", 1),
        (b"- hosts: all\n  images: [caf\xe9:latest]\n", 2),  # Latin-1
    ],
)
def test_binary_or_latin1_playbook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inv: str, content: bytes, line: int
) -> None:
    pb = write(tmp_path, "pb.yml", content)
    err = run(tmp_path, capsys, "plan", "-i", inv, pb)
    assert f"pb.yml:{line}: file is not UTF-8 text" in err


@pytest.mark.parametrize("name", ["inv.yml", "inv.ini", "inv"])
def test_binary_or_latin1_inventory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    write(tmp_path, name, b"[web]\nh\xe9te\n")
    err = run(tmp_path, capsys, "inventory", "-i", name, "--list")
    assert f"{name}:2: inventory file is not UTF-8 text (byte 0xe9" in err


def test_binary_limit_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], inv: str) -> None:
    pb = write(tmp_path, "pb.yml", PLAYBOOK)
    write(tmp_path, "hosts.retry", b"h1\n\x80\n")
    err = run(tmp_path, capsys, "plan", "-i", inv, pb, "--limit", "@hosts.retry")
    assert "hosts.retry:2: limit file is not UTF-8 text" in err


def test_binary_become_password_file_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inv: str
) -> None:
    pb = write(tmp_path, "pb.yml", PLAYBOOK)
    write(tmp_path, "pw", b"\xff\xfesecret\n")
    err = run(tmp_path, capsys, "plan", "-i", inv, pb, "--become-password-file", "pw")
    assert "the become password file pw is not UTF-8 text" in err
    assert "secret" not in err.replace("become password", "")


def test_unreadable_inventory_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # root reads a mode-000 directory, so the refusal is simulated where it would come from
    (tmp_path / "invdir").mkdir()

    def refuse(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "listdir", refuse)
    err = run(tmp_path, capsys, "inventory", "-i", "invdir", "--list")
    assert "invdir: cannot read inventory directory: Permission denied" in err


# --- item 5: keys of the wrong kind ---------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        ("  1: x\n  zzz: y\n", "pb.yml:3: 1: unknown key in play"),
        ("  null: x\n  zzz: y\n", "pb.yml:3: None: unknown key in play"),
        ("  [1, 2]: x\n", "pb.yml:3: a mapping key must be a plain value"),
        ("  ? {a: 1}\n  : x\n", "pb.yml:3: a mapping key must be a plain value"),
    ],
)
def test_odd_keys_in_a_play(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inv: str, extra: str, message: str
) -> None:
    pb = write(tmp_path, "pb.yml", "- hosts: all\n  images: [a:b]\n" + extra)
    assert message in run(tmp_path, capsys, "plan", "-i", inv, pb)


def test_unhashable_key_in_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "inv.yml", "all:\n  hosts:\n    [h1, h2]:\n")
    err = run(tmp_path, capsys, "inventory", "-i", "inv.yml", "--list")
    assert "inv.yml:3: a mapping key must be a plain value (a name or number), not a list" in err


# --- item 5: docker_command -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, message",
    [
        ("5", "docker_command: must be a command (a string or a list of strings), not 5"),
        ('"sudo \'docker"', 'docker_command: cannot split "sudo \'docker" into words'),
        ("[sudo, 3]", "docker_command: must be a command"),
        ("''", "docker_command: must not be empty"),
    ],
)
def test_bad_docker_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    inv = write(tmp_path, "inv.yml", INVENTORY + f"      docker_command: {value}\n")
    pb = write(tmp_path, "pb.yml", PLAYBOOK)
    err = run(tmp_path, capsys, "plan", "-i", inv, pb)
    assert "host 'h1' (defined at inv.yml:3): " + message in err


@pytest.mark.parametrize("key", ["connect_timeout", "io_timeout"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-1", "0", "'soon'", "true"])
def test_bad_timeouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str
) -> None:
    inv = write(tmp_path, "inv.yml", INVENTORY + f"      {key}: {value}\n")
    pb = write(tmp_path, "pb.yml", PLAYBOOK)
    err = run(tmp_path, capsys, "plan", "-i", inv, pb)
    assert f"{key}: must be a number of seconds above 0" in err


# --- item 5: directories that cannot be written ---------------------------------------------


def test_unwritable_cache_even_for_plan(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    inv: str,
) -> None:
    write(tmp_path, "afile", "")
    monkeypatch.setenv("DISTRIB_CACHE_DIR", str(tmp_path / "afile" / "cache"))
    pb = write(tmp_path, "pb.yml", PLAYBOOK)
    err = run(tmp_path, capsys, "plan", "-i", inv, pb)
    assert "the cache directory" in err and "is not writable: Not a directory" in err
    assert "DISTRIB_CACHE_DIR" in err


def test_unwritable_backup_dest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inv: str
) -> None:
    write(tmp_path, "afile", "")
    err = run(tmp_path, capsys, "backup", "-i", inv, "all", "c1", "--dest", "afile/x")
    assert "the backup --dest" in err and "is not writable: Not a directory" in err


# --- item 5: a restore's metadata and manifest with wrong types -----------------------------


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"sha256": "ab", "size": "big"}, "size must be a int, not 'big'"),
        ({"sha256": "ab", "image_id": 7}, "image_id must be a str, not 7"),
        ({"sha256": "ab", "codec": ["gzip"]}, "codec must be a str"),
        ({"sha256": 5}, "is not a distrib backup metadata file"),
        ([1, 2], "is not a distrib backup metadata file"),
    ],
)
def test_restore_metadata_with_wrong_types(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inv: str, meta: object, message: str
) -> None:
    write(tmp_path, "b.tar.gz", b"\x1f\x8b" + bytes(100))
    write(tmp_path, "b.json", json.dumps(meta))
    err = run(tmp_path, capsys, "restore", "-i", inv, "b.tar.gz", "--metadata", "b.json")
    assert message in err


@pytest.mark.parametrize(
    "entry",
    [
        {"Config": "c.json", "RepoTags": 5, "Layers": []},
        {"Config": "c.json", "RepoTags": ["a:1"], "Layers": 7},
        {"Config": "c.json", "RepoTags": [3], "Layers": []},
        {"Config": "c.json", "RepoTags": ["a:1"], "Layers": [{"x": 1}]},
    ],
)
def test_restore_manifest_with_wrong_types(entry: dict[str, object]) -> None:
    config = json.dumps({"rootfs": {"diff_ids": ["sha256:aa"]}}).encode()
    with pytest.raises(archives.ArchiveError, match="manifest.json: "):
        archives.images_from_manifest([entry], {"c.json": config}, {})


# --- item 6: hangs ----------------------------------------------------------------------------


def test_alias_bomb_is_refused_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert len(BOMB) < 600
    write(tmp_path, "bomb.yml", BOMB)
    started = time.monotonic()
    err = run(tmp_path, capsys, "inventory", "-i", "bomb.yml", "--list")
    assert time.monotonic() - started < 5
    assert "bomb.yml:" in err and "expands to more than 2,000,000 values through its aliases" in err


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"x.yml:1: a recursive alias"):
        yamlio.loads("a: &a [1, *a]\n", "x.yml")


def test_aliases_within_the_limit_still_work() -> None:
    data = yamlio.loads("base: &b {user: ops, port: 22}\nweb: *b\ndb: *b\n", "x.yml")
    assert data["web"] == data["db"] == {"user": "ops", "port": 22}
    assert yamlio.expanded_size(yamlio._Loader("a: [1, 2]").get_single_node(), "x") == 5


def test_deep_nesting_is_an_error() -> None:
    with pytest.raises(ConfigError, match="x.yml"):
        yamlio.loads("[" * 100_000, "x.yml")


@pytest.mark.parametrize(
    "line, count",
    [("h[0:99999999]", "100,000,000"), ("h[0:999]x[0:999]", "1,000,000"), ("h[a:z][0:9999]", "260,000")],
)  # fmt: skip
def test_huge_host_range_is_refused_quickly(line: str, count: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        Inventory.from_ini_text(f"[web]\n{line}\n", "hosts.ini")
    assert time.monotonic() - started < 2
    assert str(info.value).startswith(f"hosts.ini:2: host range {line!r} expands to {count} hosts")


def test_host_range_at_the_limit_still_works() -> None:
    inventory = Inventory.from_ini_text(f"[web]\nh[1:{MAX_RANGE_HOSTS}]\n", "hosts.ini")
    assert len(inventory.hosts) == MAX_RANGE_HOSTS


@pytest.mark.parametrize("line", ["h[0:" + "9" * 5000 + "]", "h[²:³]", "h" + ":" + "1" * 5000])
def test_odd_numbers_in_ranges_and_ports(line: str) -> None:
    try:
        Inventory.from_ini_text(f"[web]\n{line}\n", "hosts.ini")
    except ConfigError as exc:
        assert str(exc).startswith("hosts.ini:2:")


# --- item 4: retry files and --limit @file -------------------------------------------------


def clean_run() -> RunResult:
    return RunResult([PlayResult("p", [HostResult("h1", OK, "all images already present")])])


def test_clean_run_writes_no_retry_file_and_removes_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / "play.retry"
    assert report.write_retry_file(clean_run(), str(path)) == []
    assert not path.exists()
    path.write_text("old-host\n")  # from an earlier run: would retry hosts that are fine now
    report.write_retry_file(clean_run(), str(path))
    assert not path.exists()
    failed = RunResult([PlayResult("p", [HostResult("h1", FAILED, "x"), HostResult("h2", OK, "")])])
    assert report.write_retry_file(failed, str(path)) == ["h1"]
    assert path.read_text() == "h1\n"


@pytest.mark.parametrize("limit", ["@empty.retry", "@empty.retry,@blank.retry"])
def test_empty_limit_file_selects_no_hosts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inv: str, limit: str
) -> None:
    write(tmp_path, "empty.retry", "")
    write(tmp_path, "blank.retry", "\n  \n")
    pb = write(tmp_path, "pb.yml", PLAYBOOK)
    err = run(tmp_path, capsys, "plan", "-i", inv, pb, "--limit", limit)
    assert f"limit {limit!r} selects no hosts: the limit file is empty" in err


def test_empty_limit_file_next_to_a_pattern_keeps_the_pattern(tmp_path: Path) -> None:
    write(tmp_path, "empty.retry", "")
    assert patterns.read_limit(f"h1,@{tmp_path / 'empty.retry'}") == "h1"


@pytest.mark.parametrize("where", ["missing-dir/play.retry", "adir"])
def test_unwritable_retry_file_is_refused_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "adir").mkdir()
    # a host that would fail if it were contacted: the refusal must come first
    inv = write(tmp_path, "inv.yml", "all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n"
                "      ansible_port: 1\n")  # fmt: skip
    started = time.monotonic()
    err = run(tmp_path, capsys, "backup", "-i", inv, "all", "c1", "--retry-file", where)
    assert f"--retry-file {where} cannot be written" in err
    assert "h1" not in err and time.monotonic() - started < 5
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").iterdir())


def test_a_retry_file_that_fails_late_keeps_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = write(tmp_path, "inv.yml", "all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n"
                "      ansible_port: 1\n      host_key_checking: off\n")  # fmt: skip

    def vanished(run: RunResult, path: str) -> list[str]:  # its directory removed mid-run
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(report, "write_retry_file", vanished)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = cli.main(["backup", "-i", inv, "all", "c1", "--json", "--retry-file", "r"])
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert code == EXIT_HOST_UNREACHABLE
    assert json.loads(out)["plays"][0]["hosts"]["h1"]["status"] == "unreachable"
    assert "ERROR: cannot write --retry-file r" in err and "Traceback" not in err


# --- item 7: what a host sends, and hosts that do not answer ---------------------------------


def test_terminal_controls_from_a_host_never_reach_the_terminal() -> None:
    hostile = "denied\x1b[2J\x1b[1;1Hok: [web1]\x1b]0;owned\x07\r\x00\x9b31m done"
    assert last_lines(hostile) == "deniedok: [web1]?? done"
    err = CommandError("web1", "docker load", 1, stderr=hostile + "\n")
    assert "\x1b" not in str(err) and "\x07" not in str(err) and "\r" not in str(err)
    line = report.host_line(HostResult("web1", FAILED, "load failed: " + hostile, error=err))
    assert "\x1b" not in line and "\x9b" not in line and "\x00" not in line
    assert "\x1b[31m" in report.host_line(HostResult("web1", FAILED, hostile), colour=True)
    assert printable("tab\tand\nnewline stay") == "tab\tand\nnewline stay"


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server on loopback that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], held
    server.close()
    for conn in held:
        conn.close()


def test_a_server_that_sends_no_banner(
    silent_server: tuple[int, list[socket.socket]], capfd: pytest.CaptureFixture[str]
) -> None:
    port, _ = silent_server
    target = transport.Target("quiet", "127.0.0.1", port=port, connect_timeout=1.5,
                              host_key_checking="off", ssh_config="none")  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        transport.connect(target)
    assert time.monotonic() - started < 10
    assert str(info.value).startswith(f"no SSH banner from 127.0.0.1:{port} within 1.5s")
    # paramiko's own log (with its traceback) is not printed for an ordinary failure
    assert capfd.readouterr().err == ""


def test_closed_port_prints_no_paramiko_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    target = transport.Target("closed", "127.0.0.1", port=1, connect_timeout=2,
                              host_key_checking="off", ssh_config="none")  # fmt: skip
    with pytest.raises(ConnectError, match="connection refused"):
        transport.connect(target)
    assert capfd.readouterr().err == ""


RELAY = (
    "import os, socket, sys, threading; s = socket.create_connection(('127.0.0.1', {port})); "
    "threading.Thread(target=lambda: [s.sendall(b) for b in iter(lambda: os.read(0, 65536), b'')],"
    " daemon=True).start(); [os.write(1, b) for b in iter(lambda: s.recv(65536), b'')]"
)


def test_proxy_command_from_ssh_config_is_used(
    silent_server: tuple[int, list[socket.socket]], tmp_path: Path
) -> None:
    port, held = silent_server
    config = tmp_path / "ssh_config"
    relay = f'{sys.executable} -c "{RELAY.format(port=port)}"'
    # the host name does not resolve: only the ProxyCommand can reach the (silent) server
    config.write_text(f"Host far\n  HostName nowhere.invalid\n  ProxyCommand {relay}\n")
    target = transport.Target("far", "far", connect_timeout=1.5, host_key_checking="off",
                              ssh_config=str(config))  # fmt: skip
    with pytest.raises(ConnectError) as info:
        transport.connect(target)
    assert "no SSH banner from nowhere.invalid:22 (via ProxyCommand" in str(info.value)
    assert len(held) == 1  # the relay connected


@pytest.mark.parametrize(
    "config, where",
    [
        ("Host far\n  ProxyJump b1\n  ProxyCommand nc %h %p\n", ":3: ProxyCommand for far together with a ProxyJump"),
        ("Host far\n  ProxyJump b1,b2\nHost b2\n  ProxyCommand nc %h %p\n", ":4: ProxyCommand for bastion b2, which is reached through another bastion"),
    ],
)  # fmt: skip
def test_proxy_command_that_cannot_be_honoured_is_refused(
    tmp_path: Path, config: str, where: str
) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(config)
    target = transport.Target("far", "far", ssh_config=str(path), host_key_checking="off")
    with pytest.raises(ConnectError) as info:
        transport.connect(target)
    assert str(info.value).startswith(f"{path}{where}")


# --- item 2: output caps and the workstation's disk -------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [(None, target.DEFAULT_MAX_OUTPUT), ("8M", 8_000_000), (2_000_000, 2_000_000)],
)
def test_max_command_output_setting(value: object, expected: int) -> None:
    from distrib.plan import make_plan
    from distrib.playbook import Playbook

    extra = "" if value is None else f"      max_command_output: {value}\n"
    inventory = Inventory.from_yaml_text(INVENTORY + extra, "inv.yml")
    plan = make_plan(inventory, Playbook.from_text(PLAYBOOK))
    assert plan.hosts[0].target.max_output == expected


@pytest.mark.parametrize("value", ["0", "12", "lots", "-5M", "true", ".nan"])
def test_bad_max_command_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    inv = write(tmp_path, "inv.yml", INVENTORY + f"      max_command_output: {value}\n")
    pb = write(tmp_path, "pb.yml", PLAYBOOK)
    err = run(tmp_path, capsys, "plan", "-i", inv, pb)
    assert "max_command_output: must be a size of at least 1M" in err


class Disk:
    """A filesystem's free space as a backup download sees it (the bytes written use it up)."""

    def __init__(self, free: int, total: int = 100 * 1000**3) -> None:
        self.free, self.total = free, total

    def __call__(self, path: str) -> tuple[int, int]:
        return self.free, self.total


def test_backup_download_preflights_the_free_disk() -> None:
    disk = Disk(free=1000**3 + 10 * 1000**2)  # 10 MB above the 1 GB reserve
    guard = DiskGuard("h1", "/backups", disk)
    guard.preflight(estimate=40 * 1000**2)  # 40 MB unpacked: a 10 MB archive may fit
    with pytest.raises(TransferError) as info:
        guard.preflight(estimate=400 * 1000**2)
    assert info.value.host == "h1"
    assert str(info.value).startswith("not enough free disk on the workstation in /backups: ")
    assert "hint: free space there, or pass another --dest" in str(info.value)


def test_backup_download_stops_before_the_disk_is_full() -> None:
    disk = Disk(free=1000**3 + 200 * 1024**2)
    guard = DiskGuard("h1", "/backups", disk)
    guard.preflight(estimate=100)
    with pytest.raises(TransferError, match="the download was stopped, nothing kept"):
        for _ in range(100):  # a host that sends more than it announced
            guard.wrote(8 * 1024**2)
            disk.free -= 8 * 1024**2
    assert disk.free >= 1000**3 - 64 * 1024**2  # stopped within one check of the reserve


def test_small_filesystems_keep_a_proportional_reserve() -> None:
    assert DiskGuard("h", "/", Disk(free=10**9, total=2 * 10**9)).reserve == 10**8
    assert DiskGuard("h", "/", Disk(free=10**9, total=10**13)).reserve == 10**9


# --- item 8: one deploying run at a time per host ----------------------------------------------


@pytest.mark.parametrize("relay", [False, True])
def test_host_lock_command(relay: bool) -> None:
    # once locked: the relay entries an interrupted run left go (unless a relay run is live:
    # it holds ~/.ssh shared, the sweep needs it exclusive at once); a relay run holds it
    sweep = (
        'if [ -d "$HOME/.ssh" ]; then flock -n -x "$HOME/.ssh" sh -c '
        f'{shlex.quote(commands.relay_sweep())} || :; fi'
    )
    held = "echo distrib-locked; read -r _ || :"
    shared = f'flock -s -w 60 "$HOME/.ssh" sh -c {shlex.quote(held)} || {{ {held}; }}'
    hold = (
        f'{sweep}; if mkdir -p -- "$HOME/.ssh" 2>/dev/null; then {shared}; else {held}; fi'
        if relay
        else f"{sweep}; {held}"
    )
    assert commands.host_lock("/var/tmp/", 1800, relay) == (
        "umask 077 && mkdir -p -- /var/tmp && if command -v flock >/dev/null 2>&1; then "
        f"exec flock -w 1800 /var/tmp sh -c {shlex.quote(hold)}; "
        "else echo distrib-no-flock; read -r _ || :; fi"
    )
    assert "'/tmp/a b'" in commands.host_lock("/tmp/a b", 5)  # quoted, never split


@pytest.mark.parametrize(
    "line, held",
    [("distrib-locked", True), ("distrib-locked\r", True), ("distrib-no-flock", False)],
)
def test_parse_lock(line: str, held: bool) -> None:
    assert commands.parse_lock(line) is held


def test_parse_lock_refuses_anything_else() -> None:
    with pytest.raises(ValueError, match="unexpected lock output"):
        commands.parse_lock("flock: /var/tmp: No such file")


# --- item 3 (archives only): a cache entry is checked as it is read for sending ---------------


def cached_archive(tmp_path: Path, data: bytes, key: str = "k" * 32) -> tuple[Path, Path, str]:
    directory = tmp_path / "cache" / "archives"
    directory.mkdir(parents=True, exist_ok=True)
    path, meta = directory / f"{key}.tar.gz", directory / f"{key}.json"
    path.write_bytes(data)
    meta.write_text("{}")
    return path, meta, hashlib.sha256(data).hexdigest()


def test_an_intact_cached_archive_reads_as_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTRIB_CACHE_DIR", str(tmp_path / "cache"))
    data = os.urandom(3 * 1024 * 1024 + 7)
    path, _, digest = cached_archive(tmp_path, data)
    archive = Archive(str(path), "gzip", 6, len(data), digest, cached=True, key="k" * 32)
    assert b"".join(archive.chunks()) == data
    assert b"".join(archive.chunks()) == data  # a second reader is not hashed again


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupt_cached_archive_is_reported_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    monkeypatch.setenv("DISTRIB_CACHE_DIR", str(tmp_path / "cache"))
    data = os.urandom(2 * 1024 * 1024)
    path, meta, digest = cached_archive(tmp_path, data)
    bad = data[:-1] if damage == "truncate" else data[:1000] + b"\0" + data[1001:]
    path.write_bytes(bad)
    archive = Archive(str(path), "gzip", 6, len(data), digest, cached=True, key="k" * 32)
    sent = bytearray()
    with pytest.raises(LocalError) as info:
        for block in archive.chunks():
            sent += block
    assert len(sent) < len(data)  # the upload ends with the error: no host gets a whole file
    assert "does not match its record" in str(info.value)
    assert "removed from the cache: rebuilt for a retry, or by the next run" in str(info.value)
    assert not path.exists() and not meta.exists()
    with pytest.raises(LocalError):  # every other reader of it stops too
        b"".join(archive.chunks())


def test_a_corrupt_backup_outside_the_cache_is_never_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTRIB_CACHE_DIR", str(tmp_path / "cache"))
    backup = tmp_path / "backups" / "web.tar.gz"
    backup.parent.mkdir()
    backup.write_bytes(b"x" * 1000)
    archive = Archive(str(backup), "gzip", 6, 1000, "0" * 64, cached=True)
    with pytest.raises(LocalError, match="does not match its record") as info:
        b"".join(archive.chunks())
    assert "removed" not in str(info.value) and backup.exists()
