"""Issue 19 against real hosts, the parts that need their own lab: relay cleanup when a run is
interrupted (SIGINT) or killed, the host lock taken by relay, prune and backup runs, and a
corrupt workstation cache entry rebuilt within the run. Its own lab instance (8, or
$DISTRIB_HARDENING_LAB_INSTANCE): three docker hosts behind a shaped uplink (a relay stream
lasts long enough to be interrupted); what is left on a host is read inside it over ssh."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distrib import commands, local, transport
from distrib.inventory import Inventory
from distrib.lab import config, core, testing
from distrib.lab.state import LabState
from distrib.plan import make_plan
from distrib.playbook import Playbook
from tests.conftest import ROOT, distrib

pytestmark = pytest.mark.lab

HOSTS = ("node1", "node2", "node3")
BIG = "hardening/relay:1"  # 48 MiB of random bytes: about 2 s through the 200 Mbit/s uplink
SMALL = ("demo/web:1.0", "demo/worker:1.0")
STATE: LabState | None = None


def _instance() -> int:
    return config.check_instance(int(os.environ.get("DISTRIB_HARDENING_LAB_INSTANCE", "8")))


@pytest.fixture(scope="module")
def lab8(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = testing.unavailable_reason()
    if reason:
        if os.environ.get("DISTRIB_REQUIRE_LAB") == "1":
            pytest.fail(f"lab required but unavailable: {reason}")
        pytest.skip(reason)
    inventory = tmp_path_factory.mktemp("hardening") / "inventory.yaml"
    global STATE
    STATE = core.up(len(HOSTS), uplink="200mbit", instance=_instance(), inventory=inventory)
    try:
        distrib("lab", "images", check=True)  # demo/web, demo/worker and the busybox base
        context = tmp_path_factory.mktemp("hardening-image")
        (context / "blob").write_bytes(os.urandom(48 * 1024 * 1024))
        (context / "Dockerfile").write_text("FROM distrib/busybox:latest\nCOPY blob /\n")
        subprocess.run(["docker", "build", "-q", "-t", BIG, str(context)],
                       env={**os.environ, "DOCKER_BUILDKIT": "0"}, check=True,
                       capture_output=True)  # fmt: skip
        yield inventory
    finally:
        core.down(instance=_instance())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of the test's own (nothing shared with other runs on this machine)."""
    monkeypatch.setenv("DISTRIB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _on(host: str, script: str) -> str:
    assert STATE is not None
    return local.run(core.ssh_argv(STATE, host, [script]), timeout=120).stdout


def _relay_entries(host: str) -> int:
    out = _on(host, f"grep -c -F {shlex.quote(commands.RELAY_MARK)} .ssh/authorized_keys || true")
    return int(out.strip() or 0)


def _staging(host: str) -> list[str]:
    return _on(host, "ls -A /var/tmp | grep distrib || true").split()


def _clean(*refs: str) -> None:
    for host in HOSTS:
        _on(host, f"docker rmi -f {' '.join(map(shlex.quote, refs))} >/dev/null 2>&1; "
                  "rm -rf /var/tmp/distrib.*; true")  # fmt: skip


def _book(tmp_path: Path, images: tuple[str, ...], fanout: str = "relay", **keys: str) -> Path:
    book = tmp_path / f"{fanout}.yml"
    extra = "".join(f"  {k}: {v}\n" for k, v in keys.items())
    book.write_text(
        f"- hosts: lab\n  images: [{', '.join(images)}]\n  fanout: {fanout}\n"
        f"  relay_width: 1\n{extra}"
    )
    return book


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "distrib", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _when_streaming(proc: subprocess.Popen[str]) -> None:
    """Wait until the relay tree is set up (the last host authorized its parent's key)."""
    deadline = time.monotonic() + 180
    while _relay_entries("node3") == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the relay never set node3 up"
        time.sleep(0.1)


def test_an_interrupted_relay_run_leaves_no_authorized_keys_entry(
    lab8: Path, tmp_path: Path, cache: Path
) -> None:
    """SIGINT mid-stream: the run's entries go first (over the sessions holding the host
    locks, the moment the run is cancelled), then the staging dirs; well within the grace."""
    _clean(BIG)
    proc = _start("run", str(_book(tmp_path, (BIG,))), "-i", str(lab8))
    _when_streaming(proc)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert time.monotonic() - started < 30, "cleanup took the whole grace"
    assert "interrupted" in err
    assert [_relay_entries(h) for h in HOSTS] == [0, 0, 0]
    assert [_staging(h) for h in HOSTS] == [[], [], []]


def test_entries_of_a_killed_relay_run_are_removed_by_the_next_run(
    lab8: Path, tmp_path: Path, cache: Path
) -> None:
    """A run killed outright (no cleanup at all: a crash, a grace cut short) leaves its
    entries, harmless (from= the parent only, a forced command, an expiry-time); the next
    run that takes a host's lock removes them, a plain deploy too."""
    _clean(BIG, *SMALL)
    proc = _start("run", str(_book(tmp_path, (BIG,))), "-i", str(lab8))
    _when_streaming(proc)
    proc.kill()
    proc.communicate(timeout=60)
    left = {h: _relay_entries(h) for h in HOSTS}
    assert left["node3"] == 1, left
    line = _on("node3", f"grep -F {shlex.quote(commands.RELAY_MARK)} .ssh/authorized_keys")
    assert line.startswith("expiry-time=") and ",restrict,command=" in line and "from=" in line
    plain = _book(tmp_path, SMALL, fanout="direct")
    proc2 = distrib("run", str(plain), "-i", str(lab8))
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    assert [_relay_entries(h) for h in HOSTS] == [0, 0, 0]
    assert _on("node1", "grep -c ssh- .ssh/authorized_keys").strip() == "1", "the lab's key stays"


def _hold_locks(lab8: Path, hosts: tuple[str, ...]) -> list[tuple[transport.Session, object]]:
    """Take the host lock of `hosts` from the test itself, so that the runs surely overlap."""
    inventory = Inventory.load([str(lab8)])
    plan = make_plan(inventory, Playbook.from_text("- hosts: lab\n  images: [demo/web:1.0]\n"))
    held = []
    for host in plan.hosts:
        if host.name in hosts:
            session = transport.connect(host.target)
            line, release = session.hold(commands.host_lock("/var/tmp", 60), timeout=60)
            assert line == commands.LOCKED
            held.append((session, release))
    return held


def _waiting() -> int:
    """Runs waiting for a host lock (lab hosts share the machine's process table)."""
    out = subprocess.run(["pgrep", "-c", "-f", "^flock -w 1800 "], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def _release(held: list[tuple[transport.Session, object]]) -> None:
    for session, release in held:
        release()  # type: ignore[operator]
        session.close()


def _overlapping(lab8: Path, runs: list[list[str]], waiters: int) -> list[dict[str, object]]:
    """Start `runs` while the test holds node1's lock; once `waiters` flocks wait, let go.
    Each run's exit code must be 0; returns each run's hosts (its --json)."""
    held = _hold_locks(lab8, ("node1",))
    procs = []
    try:
        procs = [_start(*argv, "--json") for argv in runs]
        deadline = time.monotonic() + 180
        while _waiting() < waiters:
            assert time.monotonic() < deadline, "the runs never waited for the lock"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.2)
        time.sleep(1)
    finally:
        _release(held)
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stdout + stderr
        out.append(json.loads(stdout)["plays"][0]["hosts"])
    return out


def test_two_relay_runs_at_once_both_succeed(lab8: Path, tmp_path: Path, cache: Path) -> None:
    """Both lock the tree's hosts one after another in one order (no deadlock); the first
    relays, the second waits, then finds the images there. Before: they shared the staging
    dir (named after the payload) and reset each other's copy."""
    _clean(*SMALL)
    book = str(_book(tmp_path, SMALL))
    first, second = _overlapping(lab8, [["run", book, "-i", str(lab8)]] * 2, waiters=2)
    for host in HOSTS:
        states = sorted([first[host]["status"], second[host]["status"]])  # type: ignore[index]
        assert states == ["changed", "ok"], (first, second)
    waited = [r["node1"] for r in (first, second)]
    assert all("for another distrib run on this host" in w["message"] for w in waited), waited
    assert [_relay_entries(h) for h in HOSTS] == [0, 0, 0]
    assert [_staging(h) for h in HOSTS] == [[], [], []]


def test_prune_and_backup_wait_for_a_run_on_the_host(
    lab8: Path, tmp_path: Path, cache: Path
) -> None:
    """prune (keep/rollback share its frame) and backup take the host lock too."""
    distrib("run", str(_book(tmp_path, SMALL, fanout="direct")), "-i", str(lab8), "-l", "node1",
            check=True)  # fmt: skip
    _on("node1", "docker rm -f hardening-box >/dev/null 2>&1; "
                 "docker run -d --name hardening-box demo/web:1.0 sleep 600 >/dev/null")  # fmt: skip
    try:
        prune, backup = _overlapping(
            lab8,
            [["prune", "demo/web", "-i", str(lab8), "-l", "node1", "--keep", "1"],
             ["backup", "hardening-box", "-i", str(lab8), "-l", "node1",
              "--dest", str(tmp_path / "backups")]],
            waiters=2,
        )  # fmt: skip
    finally:
        _on("node1", "docker rm -f hardening-box >/dev/null 2>&1; true")
    for result in (prune, backup):
        assert "for another distrib run on this host" in result["node1"]["message"], result
    assert list((tmp_path / "backups").glob("*")), "the backup arrived"


def test_a_corrupt_layer_store_blob_is_rebuilt_within_the_run(
    lab8: Path, tmp_path: Path, cache: Path
) -> None:
    _clean(*SMALL)
    book = str(_book(tmp_path, SMALL, fanout="direct"))
    distrib("run", book, "-i", str(lab8), "-l", "node1", check=True)  # fills the layer store
    stored = (cache / "layers" / "blobs").iterdir()
    blobs = sorted((p for p in stored if p.suffix in (".gz", ".zst")), key=lambda p: p.stat().st_size)
    bad = blobs[-1]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    proc = distrib("run", book, "-i", str(lab8), "-l", "node2,node3", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
    notes = [h["message"] for h in hosts.values()]
    assert any("rebuilt on the workstation and sent again" in n and "is corrupt" in n
               for n in notes), notes  # fmt: skip
    assert all(h["status"] == "changed" for h in hosts.values()), hosts
    assert bad.exists() and bad.read_bytes() != bytes(data), "stored again, intact"


def test_a_corrupt_cached_archive_is_rebuilt_within_the_run(
    lab8: Path, tmp_path: Path, cache: Path
) -> None:
    _clean(*SMALL)
    book = str(_book(tmp_path, SMALL, fanout="direct", delta="'off'"))
    distrib("run", book, "-i", str(lab8), "-l", "node1", check=True)  # caches the archive
    (archive,) = (cache / "archives").glob("*.tar.*")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    proc = distrib("run", book, "-i", str(lab8), "-l", "node2,node3", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
    assert all(h["status"] == "changed" for h in hosts.values()), hosts
    notes = " ".join(h["message"] for h in hosts.values())
    assert "does not match its record" in notes and "rebuilt on the workstation" in notes
    assert archive.read_bytes() != bytes(data)


def test_a_corrupt_entry_read_for_a_relay_tree_is_sent_directly_rebuilt(
    lab8: Path, tmp_path: Path, cache: Path
) -> None:
    """The relayed stream is read from the layer store: a corrupt blob stops the tree (no
    host loads it); after the sweep its hosts are sent directly, the blob stored again."""
    _clean(*SMALL)
    distrib("run", str(_book(tmp_path, SMALL, fanout="direct")), "-i", str(lab8), "-l", "node1",
            check=True)  # fmt: skip
    stored = (cache / "layers" / "blobs").iterdir()
    bad = max((p for p in stored if p.suffix in (".gz", ".zst")), key=lambda p: p.stat().st_size)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    proc = distrib("run", str(_book(tmp_path, SMALL)), "-i", str(lab8), "-l", "node2,node3",
                   "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
    assert all(h["status"] == "changed" for h in hosts.values()), hosts
    notes = " ".join(h["message"] for h in hosts.values())
    assert "relay stopped: the layer store's blob of" in notes and "sent directly" in notes
    assert [_relay_entries(h) for h in HOSTS] == [0, 0, 0]
    assert [_staging(h) for h in HOSTS] == [[], [], []]
