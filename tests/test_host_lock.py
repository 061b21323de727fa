"""Issue 19: every step that changes a host takes the host lock once, before anything else,
and releases it; a task made of several steps (keep, registry push) holds one lock for all of
them (its deploy does not lock again). Engine tier: fake hosts whose session can `hold` a
command, as paramiko's can. The lab proves the waiting (tests/test_hardening*_lab.py)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from distrib import commands, engines
from distrib.archive import Archive, LocalImage
from distrib.engine import CHANGED, CHECK, VERIFY, HostResult, Job, Progress, deploy
from distrib.refs import ImageRef
from distrib.target import Result, Target
from distrib.tidy_tasks import KeepTask, PruneTask, RollbackTask
from distrib.workflows import steps
from tests.fakes import FakeFleet, FakeHost, FakeSession
from tests.test_engine import WEB, WORKER, host

LOCK = "umask 077 && mkdir -p -- /var/tmp && if command -v flock"


class LockingSession(FakeSession):
    """A fake session that can hold a command (the host lock), like transport.Session."""

    def hold(self, command: str, *, timeout: float) -> tuple[str, Callable[[], None]]:
        self.host.log.append(command)
        return commands.LOCKED, lambda: self.host.log.append("released")

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        if command.startswith(f"run={commands.RELAY_MARK}"):  # relay_unauthorize
            self.host.log.append(command)
            return Result(command, 0, "", "")
        return super().run(command, timeout=timeout)


class LockingFleet(FakeFleet):
    def __call__(self, target: Target) -> FakeSession:
        super().__call__(target)  # reachable? (raises like the real connect)
        session = LockingSession(self.hosts[target.name], self.docker)
        self.sessions[-1] = session
        return session


def locks(h: FakeHost) -> list[str]:
    return [c for c in h.log if c.startswith(LOCK) or c == "released"]


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    import hashlib

    data = b"archive" * 1000
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)
    images = [LocalImage(ImageRef.parse("demo/web:1.0"), WEB, ("sha256:l1",), 10),
              LocalImage(ImageRef.parse("demo/worker:1.0"), WORKER, ("sha256:l2",), 10)]  # fmt: skip
    return Archive(str(path), "gzip", 6, len(data), hashlib.sha256(data).hexdigest(), images)


def fake(name: str = "a") -> FakeHost:
    return FakeHost(name, archive_images={"demo/web:1.0": WEB, "demo/worker:1.0": WORKER})


def test_a_deploy_locks_first_and_releases(archive: Archive) -> None:
    h = fake()
    result = deploy(host("a"), Job.deploy(archive), LockingFleet(h))
    assert result.status == CHANGED, result.message
    assert h.log[0].startswith(LOCK), "locked before the probe"
    assert locks(h) == [h.log[0], "released"]
    assert "--relay" not in h.log[0] and 'flock -s -w 60 "$HOME/.ssh"' not in h.log[0]


@pytest.mark.parametrize("mode", [CHECK, VERIFY])
def test_read_only_modes_do_not_lock(archive: Archive, mode: str) -> None:
    h = fake()
    deploy(host("a"), Job(archive.images, archive, True, mode), LockingFleet(h))
    assert locks(h) == []


def test_a_deploy_inside_a_locked_task_does_not_lock_again(archive: Archive) -> None:
    h = fake()
    result = deploy(host("a"), Job.deploy(archive), LockingFleet(h), host_locked=True)
    assert result.status == CHANGED and locks(h) == []


def run_task(task: object, h: FakeHost) -> None:
    task.run_on(host("a"), LockingFleet(h), Progress(), threading.Event())  # type: ignore[attr-defined]


TARGET = steps.RegistryTarget("reg.lab:5000", True, None, ())


@pytest.mark.parametrize(
    "make",
    [
        lambda a: PruneTask(("demo/web",), 1),
        lambda a: RollbackTask(ImageRef.parse("demo/web:1.0")),
        lambda a: KeepTask(Job.deploy(a), 1),
        lambda a: steps.BackupTask(("box",), "/nonexistent", "gzip", 6),
        lambda a: steps.PullTask(TARGET, steps.PushOutcome()),
        lambda a: steps.PushTask(Job.deploy(a), TARGET, steps.PushOutcome()),
        lambda a: steps.CommitTask("box", ImageRef.parse("demo/snap:1")),
    ],
    ids=["prune", "rollback", "keep", "backup", "pull", "push", "commit"],
)
def test_every_task_that_changes_a_host_locks_it_once_first(
    archive: Archive, make: Callable[[Archive], object]
) -> None:
    """Whatever the task then does (here the fake host understands little of it: the
    task fails after locking), the lock is taken once, first, and released."""
    h = fake()
    run_task(make(archive), h)
    assert h.log and h.log[0].startswith(LOCK), h.log[:2]
    assert locks(h) == [h.log[0], "released"], h.log


@pytest.mark.parametrize(
    "make",
    [
        lambda: PruneTask(("demo/web",), 1, check=True),
        lambda: RollbackTask(ImageRef.parse("demo/web:1.0"), check=True),
        lambda: steps.PullTask(TARGET, steps.PushOutcome(), check=True),
    ],
    ids=["prune", "rollback", "pull"],
)
def test_check_mode_tasks_do_not_lock(make: Callable[[], object]) -> None:
    h = fake()
    run_task(make(), h)
    assert locks(h) == []


def test_the_relay_lock_keeps_live_entries_and_sweeps_stale_ones(tmp_path: Path) -> None:
    """In a real shell with a private HOME: the lock of any run removes entries a killed relay
    run left; while a relay run holds its lock (a shared flock on ~/.ssh), another run's
    lock (another remote_tmp) leaves that run's entries alone."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    keys = home / ".ssh" / "authorized_keys"
    mine = "ssh-ed25519 AAAA user@laptop\n"

    def entry(run: str) -> str:
        return (f'expiry-time="209901010000Z",from="10.0.0.1",restrict,command="true" '
                f"ssh-ed25519 BBBB {commands.RELAY_MARK}{run}\n")  # fmt: skip

    keys.write_text(mine + entry("stale1"))
    keys.chmod(0o600)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}

    def lock(remote_tmp: str, relay: bool) -> subprocess.Popen[str]:
        (tmp_path / remote_tmp).mkdir(exist_ok=True)
        script = commands.host_lock(str(tmp_path / remote_tmp), 10, relay)
        proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline() == commands.LOCKED + "\n"
        return proc

    relay = lock("a", relay=True)  # sweeps the stale entry, then holds ~/.ssh shared
    assert keys.read_text() == mine
    keys.write_text(mine + entry("live1"))  # what the live relay run installs
    other = lock("b", relay=False)
    assert keys.read_text() == mine + entry("live1"), "a live relay run's entry stays"
    other.communicate("")
    relay.communicate("")  # the relay run ends (or dies): its shared lock goes
    lock("b", relay=False).communicate("")
    assert keys.read_text() == mine, "the next run removed what the ended run left"
    assert oct(keys.stat().st_mode & 0o777) == "0o600"


def test_a_relay_run_locks_its_tree_hosts_in_one_order() -> None:
    """Two relay runs over the same hosts take their locks one host after another in the
    same global order (address, port, remote_tmp), so neither waits for the other in a
    circle; the relay flavour of the lock also holds ~/.ssh shared."""
    from distrib.relay.run import _Relay

    hosts = tuple(host(n) for n in ("c", "a", "b"))
    fleet = LockingFleet(*(fake(n) for n in ("a", "b", "c")))
    order: list[str] = []
    original = LockingSession.hold

    def hold(self: LockingSession, command: str, *, timeout: float) -> tuple[str, Callable[[], None]]:
        order.append(self.host.name)
        assert 'flock -s -w 60 "$HOME/.ssh"' in command
        return original(self, command, timeout=timeout)

    LockingSession.hold = hold  # type: ignore[method-assign]
    try:
        relay = _Relay(hosts, Job((), None), fleet, Progress(), threading.Event(), 5, 2)
        assert relay._lock_hosts() == {}
    finally:
        LockingSession.hold = original  # type: ignore[method-assign]
    assert order == ["a", "b", "c"]  # a.lab < b.lab < c.lab
    for name in list(relay.locks):
        relay._unlock(name)
    assert all(locks(fleet.hosts[n])[-1] == "released" for n in "abc")


def test_become_hosts_lock_as_the_ssh_user(archive: Archive) -> None:
    """The lock (and its sweep of the SSH user's own authorized_keys) never runs under sudo."""
    h = fake()
    plan = host("a")
    from dataclasses import replace

    plan = replace(plan, become=engines.Become())
    deploy(plan, Job.deploy(archive), LockingFleet(h))
    assert h.log[0].startswith(LOCK) and "sudo" not in h.log[0]


def test_a_cancelled_relay_run_revokes_its_keys_at_once_over_the_lock_sessions() -> None:
    """Ctrl-C's grace may run out while a tree host is stuck in a long command (a re-feed, a
    load): the run's authorized_keys entries must not wait for it. The moment the run is
    cancelled every tree host drops them, over the session holding its host lock."""
    from distrib.relay.run import _Member, _Relay

    hosts = tuple(host(n) for n in ("a", "b"))
    fleet = LockingFleet(fake("a"), fake("b"))
    cancel = threading.Event()
    relay = _Relay(hosts, Job((), None), fleet, Progress(), cancel, 5, 2)
    assert relay._lock_hosts() == {}
    busy = FakeSession(FakeHost("busy"), ["docker"])  # the member sessions: not used
    for h in hosts:
        relay.members[h.name] = _Member(h, HostResult(h.name), commands.parse_probe(""),
                                        commands.parse_relay_probe(""), [], busy)  # fmt: skip
    over = threading.Event()
    watcher = threading.Thread(target=relay._revoke_when_cancelled, args=(over,))
    watcher.start()
    cancel.set()
    watcher.join(5)
    assert not watcher.is_alive()
    revoke = commands.relay_unauthorize(relay.run_id)
    for name in ("a", "b"):
        log = fleet.hosts[name].log
        assert log[0].startswith(LOCK) and log[1:2] == [revoke], (name, log)
    assert busy.host.log == []
    for name in list(relay.locks):
        relay._unlock(name)


def test_a_relay_run_that_ends_normally_revokes_nothing_more() -> None:
    from distrib.relay.run import _Relay

    relay = _Relay((host("a"),), Job((), None), LockingFleet(fake("a")), Progress(),
                   threading.Event(), 5, 2)  # fmt: skip
    over = threading.Event()
    over.set()
    relay._revoke_when_cancelled(over)  # returns at once: the sweep did it
