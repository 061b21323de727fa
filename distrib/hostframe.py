"""The host frame (issue 15 item 1): connect to a host, take the host lock, run a body on a
`HostSession`, and turn whatever happens into the host's outcome (STYLE: every host's outcome
is collected). Deploy uses it; it is general enough for the workflow steps and relay (issue
15: `workflows/steps._step` and `relay/run` are the same frame written twice more). Also the
sessions a run's probing pass keeps open for the steps that follow."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from distrib import commands
from distrib.errors import CommandError, ConnectError, DistribError, HostError
from distrib.hostsession import HOST_LOCK_WAIT, PROBE_TIMEOUT, HostSession, engine_of
from distrib.outcome import FAILED, UNREACHABLE, Cancelled, Connector, HostResult, Progress
from distrib.plan import HostPlan
from distrib.target import Session, Target

# (host, connection, progress, cancel, the host's result) -> its HostSession
SessionFactory = Callable[[HostPlan, Session, Progress, threading.Event, HostResult], HostSession]


def host_frame(
    host: HostPlan,
    connect: Connector,
    body: Callable[[HostSession], None],
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    *,
    lock: bool = True,
    finish: bool = True,
    open_session: SessionFactory = HostSession,
    relay: bool = False,
) -> HostResult:
    """Connect to `host`, take the host lock (unless the caller holds it: `lock` false), run
    `body` on a HostSession, close. Never raises for a host problem: a ConnectError makes
    the host unreachable, any other error failed (an unexpected one named as such), with
    the timings (connect, lock, total); `progress.finished` gets the outcome unless
    `finish` is false (more of the step follows). `open_session`: what works the host over
    the connection (tests pass a fake host session: tests/fakes.py; workflows/steps' `_Remote`
    could be one); `relay`: the lock of a relay tree host (lock_host)."""
    progress = progress or Progress()
    cancel = cancel or threading.Event()
    result = HostResult(host.name)
    started = time.monotonic()
    try:
        if cancel.is_set():
            raise Cancelled("interrupted")
        progress.phase(host.name, "connect")
        t = time.monotonic()
        session = connect(host.target)
        result.timings["connect"] = round(time.monotonic() - t, 3)
        unlock: Callable[[], None] | None = None
        try:
            waited = 0.0
            if lock:  # released when the session closes, too
                unlock, waited = lock_host(session, host, relay)
            body(open_session(host, session, progress, cancel, result))
            note_wait(result, waited)
        finally:
            if unlock is not None:
                unlock()
            session.close()
    except ConnectError as exc:
        result.status, result.error, result.message = UNREACHABLE, exc, exc.message
    except DistribError as exc:
        result.status, result.error, result.message = FAILED, exc, exc.message
    except Exception as exc:  # a bug or an unexpected library error: still only this host
        result.status, result.message = FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
        result.error = HostError(host.name, result.message)
    result.timings["total"] = round(time.monotonic() - started, 3)
    if finish:
        progress.finished(result)
    return result


def lock_host(
    session: Session, host: HostPlan, relay: bool = False
) -> tuple[Callable[[], None] | None, float]:
    """Take the host lock (commands.host_lock: flock on remote_tmp, held by a command on
    `session` until released or the session closes), waiting for another run up to
    HOST_LOCK_WAIT. Returns (release, or None when the transport cannot hold a command (test
    fakes), seconds waited). Every step that stages, loads, removes or tags on a host takes
    it: deploys, relay tree hosts, backup, commit, registry push and pull, keep, prune and
    rollback (another run's cleanup would remove this one's files or stand-in images).
    Taking it removes authorized_keys entries an interrupted relay run left; a relay run
    (`relay`) also keeps others from removing its own (commands.host_lock)."""
    hold = getattr(session, "hold", None)
    if hold is None:  # a transport without long-lived commands (test fakes)
        return None, 0.0
    t = time.monotonic()
    command = commands.host_lock(host.remote_tmp, HOST_LOCK_WAIT, relay)
    try:
        # kept: paramiko closes a channel (so frees the lock) when its object is collected
        line, unlock = hold(command, timeout=HOST_LOCK_WAIT + PROBE_TIMEOUT)
    except CommandError as exc:
        raise HostError(
            host.name,
            f"another distrib run has held this host for more than {HOST_LOCK_WAIT:g}s "
            f"(flock in {host.remote_tmp}, exit {exc.exit_status}); nothing was done",
            hint="wait for the other run to finish, then run again",
        ) from None
    try:
        commands.parse_lock(line)
    except ValueError as exc:
        unlock()
        raise HostError(host.name, f"cannot lock the host: {exc}") from None
    return unlock, time.monotonic() - t


def note_wait(result: HostResult, waited: float) -> None:
    """A wait of a second or more for another run: in the timings and the host's line."""
    if waited >= 1.0:
        result.timings["lock"] = round(result.timings.get("lock", 0.0) + waited, 3)
        result.message += f" (waited {waited:.0f}s for another distrib run on this host)"


@contextlib.contextmanager
def holding_host_lock(host: HostPlan, connect: Connector) -> Iterator[Callable[[], float]]:
    """Hold the host lock on a session of its own for a task of several steps (each on its
    own session; their deploy is told `host_locked`). Yields a function giving the seconds
    waited. ConnectError/HostError as `connect` and `lock_host` raise them."""
    session = connect(host.target)
    unlock: Callable[[], None] | None = None
    try:
        unlock, waited = lock_host(session, host)
        yield lambda: waited
    finally:
        if unlock is not None:
            unlock()
        session.close()


class KeptSessions:
    """Sessions a run's probing pass leaves open for the steps that follow (issue 16 item 3:
    one SSH connection per host per run). Each is handed out once, by `connector`, to the
    first step that connects to its host (and is checked alive first: a link that died while
    it waited is replaced by a new connection); `close` closes those never asked for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def keep(self, name: str, session: Session) -> None:
        with self._lock:
            old = self._sessions.pop(name, None)
            self._sessions[name] = session
        if old is not None:  # a host probed by two plays: the newer session is kept
            old.close()

    def connector(self, connect: Connector) -> Connector:
        """`connect`, but a host's kept session first."""

        def connect_kept(target: Target) -> Session:
            with self._lock:
                session = self._sessions.pop(target.name, None)
            if session is not None:
                alive = getattr(session, "alive", None)
                if alive is None or alive():
                    return session
                session.close()
            return connect(target)

        return connect_kept

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            with contextlib.suppress(Exception):  # closing: nothing left to report
                session.close()


def probe_facts(
    host: HostPlan, connect: Connector, kept: KeptSessions | None = None
) -> commands.Facts | None:
    """Connect and probe one host (engine, tools, disk); None when it cannot be reached or
    its engine does not answer (the deploy step reports that host properly). With `kept`,
    the session of a host that answered stays open there for the deploy."""
    try:
        session = connect(host.target)
    except DistribError:
        return None
    keep = False
    try:
        out = session.run(engine_of(host).probe(host.remote_tmp), timeout=PROBE_TIMEOUT)
        facts = commands.parse_probe(out.stdout)
        keep = kept is not None and facts.engine_ok
        return facts if facts.engine_ok else None
    except DistribError:
        return None
    finally:
        if keep and kept is not None:
            kept.keep(host.name, session)
        else:
            session.close()
