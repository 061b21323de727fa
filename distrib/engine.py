"""Per-host steps: connect -> probe -> (skip if up to date) -> upload -> checksum -> load -> verify
-> cleanup. One function, `deploy`, drives one host and never raises for a host problem: every
outcome becomes a HostResult (STYLE: every host's outcome is collected).

The session factory is injected, so the engine is tested against a fake transport and the
integration tests run it against real sshd + dockerd hosts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from distrib import commands, engines, platforms
from distrib.archive import Archive, LocalImage
from distrib.errors import (
    CommandError,
    ConnectError,
    CorruptEntry,
    DistribError,
    HostError,
    LocalError,
    TransferError,
    VerifyError,
    last_lines,
)
from distrib.layerstore import LayerStore, PendingDelta
from distrib.plan import HostPlan
from distrib.target import Result, Session, Target
from distrib.units import human_bytes as _human

OK = "ok"
CHANGED = "changed"
FAILED = "failed"
UNREACHABLE = "unreachable"
SKIPPED = "skipped"

PROBE_TIMEOUT = 60.0
CHECKSUM_TIMEOUT = 900.0
LOAD_TIMEOUT = 3600.0
CLEANUP_TIMEOUT = 30.0
HOST_LOCK_WAIT = 1800.0  # how long a run waits for another one on the same host (issue 19)
UPLOAD_ATTEMPTS = 2  # a checksum mismatch is re-sent once, never loaded
DISK_MARGIN = 1.1  # free space asked for beyond the bytes themselves

AUTO = "auto"
STAGED = "staged"
STREAM = "stream"
TRANSFER_MODES = (AUTO, STAGED, STREAM)

Connector = Callable[[Target], Session]


class Cancelled(DistribError):
    """The run was interrupted (SIGINT/SIGTERM); the host was left clean."""


class Progress:
    """Receives progress events from worker threads. The default does nothing."""

    def phase(self, host: str, phase: str) -> None:
        pass

    def transfer_started(self, host: str, total: int) -> None:
        pass

    def transfer_more(self, host: str, nbytes: int) -> None:
        """The transfer grew by `nbytes` (the next loading step)."""

    def advance(self, host: str, nbytes: int) -> None:
        pass

    def finished(self, result: HostResult) -> None:
        pass


class QuietProgress(Progress):
    """Forwards progress but not `finished`: a step that runs `deploy` as one part of its
    work (a workflow step, a tidy task) reports the host's outcome once, itself."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner

    def phase(self, host: str, phase: str) -> None:
        self.inner.phase(host, phase)

    def transfer_started(self, host: str, total: int) -> None:
        self.inner.transfer_started(host, total)

    def transfer_more(self, host: str, nbytes: int) -> None:
        self.inner.transfer_more(host, nbytes)

    def advance(self, host: str, nbytes: int) -> None:
        self.inner.advance(host, nbytes)


@dataclass
class HostResult:
    host: str
    status: str = SKIPPED
    message: str = ""
    images: dict[str, str] = field(default_factory=dict)  # ref -> image id seen on the host
    states: dict[str, str] = field(default_factory=dict)  # ref -> present | missing | different
    bytes_sent: int = 0
    resumed_from: int = 0  # bytes of an earlier cut-off upload that were kept
    layers_sent: int = 0  # delta: layers shipped (of layers_total the images have)
    layers_total: int = 0
    fed_by: str | None = None  # relay fan-out: "workstation" or the host that fed this one
    bytes_relayed: int = 0  # relay fan-out: bytes this host received from other hosts
    timings: dict[str, float] = field(default_factory=dict)
    error: DistribError | None = None
    facts: commands.Facts | None = None  # the probe's answer: engine, version, store (issue 14)

    @property
    def failed(self) -> bool:
        return self.status in (FAILED, UNREACHABLE)


DEPLOY = "deploy"  # ship what is missing, load, verify
CHECK = "check"  # read-only: report what would be shipped
VERIFY = "verify"  # read-only: report drift (present / missing / different per image)

PRESENT = "present"
MISSING = "missing"
DIFFERENT = "different"
# how a drifted image is named in a host's message (the state names stay in the JSON)
DRIFT_WORDS = {MISSING: "missing", DIFFERENT: "different config", PRESENT: "present"}


def image_state(image: LocalImage, seen: commands.Inspected | None) -> str:
    """present | missing | different: what a host holds under `image`'s tag (issue 14).

    The same content means the same config. Where the host shows a config digest (docker's
    classic store and podman as the image ID, containerd through the manifest) it must be
    ours. docker's containerd store shows none (a manifest digest, and a descriptor): there
    the same manifest digest, or else the same config fingerprint, decides. Equal layer
    diffIDs never do: a CMD, ENV, USER, LABEL or ENTRYPOINT change adds no layer."""
    if seen is None:
        return MISSING
    if seen.containerd_store:
        same = (bool(image.engine_id) and seen.id == image.engine_id) or (
            bool(image.fingerprint) and seen.fingerprint == image.fingerprint
        )
    else:
        same = bool(seen.id) and seen.id == image.id
    return PRESENT if same else DIFFERENT


@dataclass(frozen=True)
class Job:
    """What to do on each host of a play. `archive` may be None in the read-only modes."""

    images: tuple[LocalImage, ...]
    archive: Archive | None = None
    verify: bool = True
    mode: str = DEPLOY
    codec: str = "gzip"
    facts: Mapping[str, commands.Facts] = field(default_factory=dict)  # probed once per run
    store: LayerStore | None = None  # delta: assemble per host from the layer store
    # issue 6: sudo's password (from a prompt or a file), sent on stdin only; repr hides it
    become_password: engines.Secret | None = None
    # `compression: auto` (issue 14): hosts whose best codec is not this job's get the job of
    # theirs (same images, that codec's archive and layer store)
    others: Mapping[str, Job] = field(default_factory=dict)

    def for_host(self, name: str) -> Job:
        return self.others.get(name, self)

    def variants(self) -> list[Job]:
        """This job and each other codec's, once."""
        out = [self]
        for job in self.others.values():
            if all(job is not seen for seen in out):
                out.append(job)
        return out

    @classmethod
    def deploy(
        cls,
        archive: Archive,
        verify: bool = True,
        facts: Mapping[str, commands.Facts] | None = None,
        store: LayerStore | None = None,
    ) -> Job:
        return cls(archive.images, archive, verify, DEPLOY, archive.codec, dict(facts or {}), store)


def deploy(
    host: HostPlan,
    job: Job,
    connect: Connector,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    host_locked: bool = False,
) -> HostResult:
    """Bring `host` to hold every image of `job`, verified. Never raises for host problems.
    `host_locked`: the caller holds the host lock already (a task of several steps, a relay
    tree host), so this deploy does not take it again (issue 19)."""
    progress = progress or Progress()
    cancel = cancel or threading.Event()
    result = HostResult(host.name)
    started = time.monotonic()
    job = job.for_host(host.name)
    try:
        deployment = _Deployment(host, job, connect, progress, cancel, result)
        deployment.locked = host_locked
        deployment.run()
    except ConnectError as exc:
        result.status, result.error, result.message = UNREACHABLE, exc, exc.message
    except DistribError as exc:
        result.status, result.error, result.message = FAILED, exc, exc.message
    except Exception as exc:  # a bug or an unexpected library error: still only this host
        result.status, result.message = FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
        result.error = HostError(host.name, result.message)
    result.timings["total"] = round(time.monotonic() - started, 3)
    progress.finished(result)
    return result


# --- one distrib run at a time on a host (issue 19) ----------------------------------------


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


def engine_of(host: HostPlan) -> engines.Engine:
    """The host's engine commands (sudo without a password until the become check says)."""
    return engines.Engine(host.engine, tuple(host.docker), host.containerd_namespace, host.become)


def choose_codec(facts: Iterable[commands.Facts | None]) -> str:
    """`compression: auto` for a whole play (a relay tree: one stream): zstd when every
    reachable host can load it, else gzip (which every docker engine reads)."""
    known = [f for f in facts if f is not None]
    if known and all(f.can_decode("zstd") for f in known):
        return "zstd"
    return "gzip"


def host_codecs(facts: Mapping[str, commands.Facts]) -> dict[str, str]:
    """`compression: auto` per host (issue 14): zstd where the host can load it (its engine
    reads it, or a `zstd` is there to pipe through), else gzip."""
    return {name: "zstd" if f.can_decode("zstd") else "gzip" for name, f in facts.items()}


class _Deployment:
    def __init__(
        self,
        host: HostPlan,
        job: Job,
        connect: Connector,
        progress: Progress,
        cancel: threading.Event,
        result: HostResult,
    ) -> None:
        self.host = host
        self.job = job
        self.connect = connect
        self.progress = progress
        self.cancel = cancel
        self.result = result
        self.docker = list(host.docker)
        self.session: Session | None = None
        self.native = False  # the engine reads the archive's codec itself
        self.archive: Any = job.archive  # what this host is sent (whole, or a delta)
        self.codec = job.codec
        self.delta_refused = False
        # delta (LayerStore): the host's chains, its loading steps (a list, or an iterator
        # while the store fills), whether to send them one by one, how many were loaded
        self.wanted: list[LocalImage] = []
        self.chains: set[tuple[str, ...]] = set()
        self.blobs: frozenset[str] | None = None  # a containerd-store host's content blobs
        self.steps: Iterable[Any] = []
        self.stepped = False
        self.loaded_steps = 0
        self.engine = engine_of(host)
        self.secret_line = b""  # the become password line, when sudo needs one
        self.waited_for_lock = 0.0  # seconds this run waited for another on the host
        self.unlock: Callable[[], None] | None = None  # releases the host lock
        self.locked = False  # the caller holds the host lock (deploy's host_locked)
        self.tools: frozenset[str] = frozenset()
        self.rebuilt = ""  # a corrupt cache entry rebuilt for a retry (issue 19)
        # fewer round trips (issue 16 item 2): the layer listing read with the probe, and the
        # verify read with the cleanup after a load (None: not read that way)
        self.listed: str | None = None
        self.verify_after_load = False
        self.verified: dict[str, commands.Inspected] | None = None

    # -- helpers ---------------------------------------------------------------------------

    def _phase(self, name: str) -> None:
        if self.cancel.is_set():
            raise Cancelled("interrupted")
        self.progress.phase(self.host.name, name)

    def _timed(self, name: str, started: float) -> None:
        self.result.timings[name] = round(time.monotonic() - started, 3)

    def _run(self, command: str, what: str, timeout: float, stdin: bytes = b"") -> Result:
        assert self.session is not None
        if stdin:
            result = self.session.run(command, timeout=timeout, stdin=stdin)
        else:
            result = self.session.run(command, timeout=timeout)
        if not result.ok:
            raise self._failure(result, what, command=command)
        return result

    def _failure(
        self,
        result: Result,
        what: str,
        *,
        command: str | None = None,
        hint: str | None = None,
        nonzero: bool = False,
    ) -> CommandError:
        """This host's CommandError for `result` (`command`: the one to name, when `result`
        holds another, e.g. with the become password line; `nonzero`: an exit 0 counts as 1,
        for output that failed a check after the command succeeded)."""
        status = (result.exit_status or 1) if nonzero else result.exit_status
        return CommandError(
            self.host.name,
            result.command if command is None else command,
            status,
            result.stdout,
            result.stderr,
            what=what,
            hint=hint,
        )

    # -- the steps ---------------------------------------------------------------------------

    def run(self) -> None:
        self._phase("connect")
        t = time.monotonic()
        self.session = self.connect(self.host.target)
        self._timed("connect", t)
        try:
            if self.job.mode == DEPLOY and not self.locked:  # released when the session closes
                self.unlock, waited = lock_host(self.session, self.host)
                if waited >= 1.0:
                    self.result.timings["lock"] = round(waited, 3)
                    self.waited_for_lock = waited
            self._deploy()
            if self.waited_for_lock:
                self.result.message += (
                    f" (waited {self.waited_for_lock:.0f}s for another distrib run on this host)"
                )
        finally:
            if self.unlock is not None:
                self.unlock()
            self.session.close()

    def _deploy(self) -> None:
        self._phase("probe")
        t = time.monotonic()
        if self.host.become is not None:
            self._become(self.host.become)
        images = self.job.images
        facts, found = self._look(images, self.job.facts.get(self.host.name))
        self.tools = facts.tools
        self.result.facts = facts
        if not facts.engine_ok:
            why = self._run_engine(self.engine.version_command(), PROBE_TIMEOUT)
            raise self._failure(
                why,
                "the container engine does not answer",
                hint="is the engine running, and may this user use it (docker group, become)?",
                nonzero=True,
            )
        before, states = self._identity(images, found)
        self._timed("probe", t)
        self.result.images, self.result.states = before, states
        missing = [str(i.ref) for i in images if states[str(i.ref)] != PRESENT]
        if self.job.mode == VERIFY:
            if missing:
                self.result.status = FAILED
                self.result.message = "drift: " + ", ".join(
                    f"{ref} {DRIFT_WORDS[states[ref]]}" for ref in missing
                )
                self.result.error = VerifyError(self.host.name, self.result.message)
            else:
                self.result.status = OK
                self.result.message = f"all {len(images)} image(s) present with the same content"
            return
        if not missing:
            self.result.status = OK
            self.result.message = "all images already present"
            return
        wanted = [i for i in images if str(i.ref) in missing]
        self._refuse_other_platforms(wanted, facts)
        self.archive = self.job.archive
        delta = self.job.store is not None and getattr(facts, "engine", "docker") == "docker"
        if delta:
            self._phase("layers")
            try:
                self._delta(wanted)
            except CorruptEntry as exc:  # a config checked as it was read: rebuilt, once
                self._rebuild(exc, delta)
        codec = self.archive.codec if self.archive is not None else self.job.codec
        if not facts.can_decode(codec):
            raise HostError(
                self.host.name,
                f"archive is {codec}-compressed but the host has no {codec} "
                f"and its engine ({facts.engine} {facts.engine_version}) cannot read it; "
                "nothing was sent",
                hint="use compression: auto or gzip for this play, or install it on the host",
            )
        self.codec = codec
        self.native = facts.engine_reads(codec)
        mode = self._transfer_mode(facts, wanted)
        if self.job.mode == CHECK:
            self.result.status = CHANGED
            if delta and self.archive is not None:
                full = self._full()
                self.result.message = (
                    f"would send {self.result.layers_sent} of {self.result.layers_total} layer(s), "
                    f"{_human(self.archive.size)} (full archive: {_human(full.size)}) for "
                    f"{', '.join(missing)} ({mode} transfer, check mode)"
                )
                return
            size = self.archive.size if self.archive else sum(i.size for i in images)
            kind = "" if self.archive else " uncompressed"
            self.result.message = (
                f"would send {_human(size)}{kind} for {', '.join(missing)} "
                f"({mode} transfer, check mode)"
            )
            return
        self.verify_after_load = self.job.verify
        try:
            self._ship_or_full(mode, delta)
        except CorruptEntry as exc:  # checked as it was read for this host: rebuilt, once
            self._rebuild(exc, delta)
            self._ship_or_full(mode, delta)
        self.result.status = CHANGED
        if self.job.verify:
            self._phase("verify")
            t = time.monotonic()
            # read with the cleanup after the load when there was one (else one more command)
            after, states = self._identity(images, self.verified)
            if self.verified is None:
                self._timed("verify", t)
            self.result.images, self.result.states = after, states
            wrong = [f"{ref} {DRIFT_WORDS[s]}" for ref, s in states.items() if s != PRESENT]
            if wrong:
                raise VerifyError(self.host.name, "after loading: " + "; ".join(wrong))
            self.result.message = f"loaded and verified {len(images)} image(s)"
        else:
            self.result.message = f"loaded {len(images)} image(s) (verify off)"
        if self.result.layers_total:
            self.result.message += (
                f" ({self.result.layers_sent}/{self.result.layers_total} layers sent"
                + ("; delta refused by the engine, full archive sent" if self.delta_refused else "")
                + ")"
            )
        if self.loaded_steps > 1:
            self.result.message += f" (loaded in {self.loaded_steps} steps while sending)"
        if mode == STREAM:
            self.result.message += (
                " (streamed: staging space too small)"
                if (self.host.transfer == AUTO)
                else " (streamed)"
            )
        if self.rebuilt:
            self.result.message += f" (rebuilt on the workstation and sent again: {self.rebuilt})"

    def _ship_or_full(self, mode: str, delta: bool) -> None:
        try:
            self._ship(mode)
        except CommandError:
            if not delta or self.delta_refused or self.cancel.is_set():
                raise
            # Confirmed on first use: this engine refused a partial archive (e.g. docker's
            # containerd image store). Send the full archive, assembled from the same store.
            self.archive = self._full()
            self.steps, self.stepped = [], False
            self.result.layers_sent = len(self.archive.layers)
            self.delta_refused = True
            self._ship(mode)

    def _rebuild(self, exc: CorruptEntry, delta: bool) -> None:
        """A workstation cache entry (a cached archive, a layer-store blob or config) did not
        match its record as it was read for this host, and was removed (issue 19): store or
        build it again and retry, once, in this run. Other hosts that hit it too wait for
        the same rebuild (the store's lock; the archive's one build)."""
        if self.rebuilt or self.cancel.is_set():
            raise exc
        self._phase("rebuild")
        self.rebuilt = exc.message
        if not delta:
            archive = self.job.archive
            if archive is None or not hasattr(archive, "rebuild") or not archive.rebuild():
                raise exc
            self.archive = archive
            return
        store = self.job.store
        assert store is not None
        store.wait_filled()
        store.ensure(self.wanted, self.cancel)
        self.steps, self.stepped = [], False
        if self.delta_refused:
            self.archive = self._full()
            self.result.layers_sent = len(self.archive.layers)
        else:
            self._delta(self.wanted)

    def _ship(self, mode: str) -> None:
        if mode == STREAM:
            self._settle()
            self._stream()
        elif self.stepped:
            self._staged_steps()
        else:
            self._settle()
            self._staged()

    def _delta(self, wanted: list[LocalImage]) -> None:
        """Only the layers whose chain the host lacks, from the layer store (issue 8): an
        exact archive when the store holds everything, else (the store still filling in the
        background) a pending one, sent in loading steps that wait for their blobs."""
        store = self.job.store
        assert store is not None
        self.wanted, (self.chains, self.blobs) = wanted, self._host_chains()
        self.result.layers_total = len({d for image in wanted for d in image.diff_ids})
        if self.blobs is not None:
            # a containerd-store host: which layers can be left out depends on the stored
            # blobs' digests (layerstore, OCI layout), known once they are stored
            store.wait_filled()
        if store.filling:
            self.archive = PendingDelta(wanted, self.chains, store.codec)
            self.steps, self.stepped = store.steps(wanted, self.chains), True
        else:
            self.archive = store.assemble(wanted, self.chains, self.blobs)
            self.steps = list(store.steps(wanted, self.chains, self.blobs))
            self.stepped = len(self.steps) > 1
        self.result.layers_sent = len(self.archive.layers)

    def _full(self) -> Any:
        """The full archive of the wanted images, from the same store (after its fill)."""
        assert self.job.store is not None
        self.job.store.wait_filled()
        return self.job.store.assemble(
            self.wanted, None, frozenset() if self.blobs is not None else None
        )

    def _settle(self) -> None:
        """A pending delta becomes exact (waits for the store's fill): for a whole transfer."""
        if isinstance(self.archive, PendingDelta):
            assert self.job.store is not None
            self.job.store.wait_filled()
            self.archive = self.job.store.assemble(self.wanted, self.chains, self.blobs)

    def _host_chains(self) -> tuple[set[tuple[str, ...]], frozenset[str] | None]:
        """The host's layer chains, and its content blobs on docker's containerd store."""
        # as the engine user (become), like every engine command (issue 6)
        facts = self.result.facts
        containerd_store = facts is not None and facts.store == commands.CONTAINERD_STORE
        text, self.listed = self.listed, None  # read with the probe: once (a rebuild re-lists)
        if text is None:
            listing = self.engine.wrap(commands.host_layers(self.docker, containerd_store))
            text = self._run(
                listing, "listing the host's layers", PROBE_TIMEOUT, self.secret_line
            ).stdout
        return commands.parse_host_layers(text), commands.parse_host_blobs(text)

    def _refuse_other_platforms(self, wanted: list[LocalImage], facts: commands.Facts) -> None:
        """An image built for another platform fails only when run (issue 18, item 3): refuse
        it before sending, one line naming each image's platform and the host's."""
        host = platforms.Platform.of_host(facts.arch)
        refused = platforms.refusals([(str(i.ref), i.platform, i.offered) for i in wanted], host)
        if refused:
            raise HostError(
                self.host.name,
                "; ".join(refused) + "; nothing was sent",
                hint=f"build or pull the images for {host} (play key platform: with "
                "local_pull), or leave this host out of the play",
            )

    def _run_engine(self, command: str, timeout: float) -> Result:
        """An engine command whose failure the caller reports (password on stdin if needed)."""
        assert self.session is not None
        if self.secret_line:
            return self.session.run(command, timeout=timeout, stdin=self.secret_line)
        return self.session.run(command, timeout=timeout)

    def _become(self, become: engines.Become) -> None:
        """Can the SSH user become `become.user` with sudo, and does it need the password?

        Fast and clear in every case: `sudo -n` never prompts, and `sudo -S` reads the one
        password line we send, then sees EOF (DESIGN: never a hang)."""
        name = self.host.name
        who = self.host.target.user or "the SSH user"
        out = self._run(engines.become_check(become), "checking sudo", PROBE_TIMEOUT).stdout
        state, words = engines.parse_become_check(out)
        if state == engines.NOPASSWD:
            return
        if state == engines.NO_SUDO:
            raise HostError(
                name,
                f"become: sudo is not installed on the host ({who} cannot run the engine as "
                f"{become.user})",
                hint="install sudo there, or connect as a user who may use the engine",
            )
        if state == engines.DENIED:
            raise HostError(
                name,
                f"become: {who} may not run commands as {become.user} with sudo: {words}",
                hint="add a sudoers rule for this user on the host",
            )
        secret = become.password or self.job.become_password  # ansible_become_password first
        if secret is None:
            raise HostError(
                name,
                f"become: sudo on the host asks {who} for a password and none was given",
                hint="pass --ask-become-pass or --become-password-file FILE, or give the user "
                "a NOPASSWD sudoers rule",
            )
        assert self.session is not None
        checked = self.session.run(
            engines.become_validate(become), timeout=PROBE_TIMEOUT, stdin=secret.line()
        )
        if not checked.ok:
            if engines.password_rejected(checked.stderr):
                raise HostError(
                    name,
                    f"become: sudo rejected the password of {who} (nothing was changed)",
                    hint="check the password given with --ask-become-pass or "
                    "--become-password-file",
                )
            raise HostError(
                name,
                f"become: {who} may not run commands as {become.user} with sudo: "
                f"{last_lines(checked.stderr) or 'sudo failed'}",
                hint="add a sudoers rule for this user on the host",
            )
        self.engine = replace(self.engine, password=True)
        self.secret_line = secret.line()

    def _transfer_mode(self, facts: commands.Facts, missing: list[LocalImage]) -> str:
        """Disk preflight: fail before a byte is sent when the engine's data root cannot hold
        the images; stream into `docker load` when only the staging area is too small."""
        unpacked = int(sum(i.size for i in missing) * DISK_MARGIN)
        if facts.root_avail is not None and facts.root_avail < unpacked:
            raise HostError(
                self.host.name,
                f"not enough space in the engine's data root {facts.docker_root or '?'}: "
                f"the images need about {_human(unpacked)}, {_human(facts.root_avail)} free; "
                "nothing was sent",
                hint="free space on the host (docker image prune) and run again",
            )
        archive = self.archive
        archive_size = archive.size_hint if archive else sum(i.size for i in missing)
        staging_fits = facts.tmp_avail is None or facts.tmp_avail >= archive_size * DISK_MARGIN
        wanted = self.host.transfer
        if wanted == STAGED and not staging_fits:
            raise HostError(
                self.host.name,
                f"not enough space in {self.host.remote_tmp} for the archive: need "
                f"{_human(archive_size * DISK_MARGIN)}, {_human(facts.tmp_avail or 0)} free; "
                "nothing was sent",
                hint="use transfer: stream (or auto), or another remote_tmp",
            )
        if wanted == AUTO:
            return STAGED if staging_fits else STREAM
        return wanted

    # -- staged transfer: private dir, resumable upload, checksum, then load ------------------

    def _staged(self) -> None:
        archive = self.archive
        assert archive is not None and self.session is not None
        tempdir = commands.staging_dir(self.host.remote_tmp, archive.key)
        part = f"{tempdir}/{commands.ARCHIVE_NAME}{archive.extension}.part"
        final = f"{tempdir}/{commands.ARCHIVE_NAME}{archive.extension}"
        self._phase("upload")
        present = self._make_staging(archive.key, part)
        keep_partial = False
        loaded = False
        try:
            t = time.monotonic()
            offset = self._resume_offset(archive, part, present)
            self._upload(archive, part, offset, announce=True)
            self._timed("upload", t)
            self._phase("load")
            t = time.monotonic()
            self._checked_load(archive, part, final)
            self._timed("load", t)
            loaded = True
        except ConnectError:
            keep_partial = True  # the link is gone: what arrived stays for the next run to resume
            raise
        finally:
            if not keep_partial:
                self._cleanup(tempdir, verify=loaded)

    def _make_staging(self, key: str, part: str) -> int:
        """The private staging dir (after checking remote_tmp: issue 19); the bytes of an
        earlier, cut-off upload already in `part`."""
        out = self._run(
            commands.make_staging(self.host.remote_tmp, key, part),
            "creating the private staging dir",
            PROBE_TIMEOUT,
        ).stdout
        try:
            return commands.parse_staging(out)
        except commands.UnsafeTmp as exc:
            raise HostError(
                self.host.name,
                f"remote_tmp {self.host.remote_tmp} is not safe to stage archives in: "
                f"{exc.problem}; nothing was sent",
                hint="use a remote_tmp that belongs to the SSH user (or root) and that only "
                "its owner may write to (chmod go-w), or a sticky one like /var/tmp",
            ) from None

    def _staged_steps(self) -> None:
        """Staged, one loading step at a time (LayerStore.steps): the host loads step k while
        step k+1 is on the wire. Each step is checked (sha256) before it is loaded, as a whole
        archive is; the last step holds the real config and tag, so the image appears only
        when everything arrived. The untagged stand-in images of the steps are removed in
        every outcome but a lost link; then the next run finds their layers on the host,
        sends only the rest, and removes them."""
        whole = self.archive
        assert whole is not None and self.session is not None
        tempdir = commands.staging_dir(self.host.remote_tmp, whole.key)
        self._phase("upload")
        self._make_staging(whole.key, f"{tempdir}/-")
        loader = _StepLoader(self)
        keep = False
        loaded = False
        started = time.monotonic()
        sent: list[Any] = []
        try:
            for index, step in enumerate(self.steps):
                sent.append(step)
                if index == 0:
                    self.progress.transfer_started(self.host.name, step.size)
                else:
                    self.progress.transfer_more(self.host.name, step.size)
                final = f"{tempdir}/{commands.ARCHIVE_NAME}.{index}{step.extension}"
                self._upload(step, final + ".part", 0, announce=False)
                loader.put(step, final + ".part", final)
            self._timed("upload", started)
            self._phase("load")
            waited = time.monotonic()
            loader.finish()
            self.loaded_steps = len(sent)
            self._timed("load", waited)  # what loading added after the last byte
            loaded = True
        except ConnectError:
            keep = True  # the link is gone: loaded steps and the partial upload stay
            raise
        finally:
            loader.stop()
            if not keep:
                stand_ins = [s.stand_in for s in sent if s.stand_in]
                self._cleanup(tempdir, verify=loaded, stand_ins=stand_ins)

    def _load_step(self, step: Any, part: str, final: str) -> None:
        """Check, load and drop one uploaded step (called by the step loader's thread)."""
        self._checked_load(step, part, final, remove_after=True, quiet=True)

    def _upload(self, archive: Any, part: str, offset: int, announce: bool) -> None:
        """Write `archive` from `offset` into `part` on the host (`announce`: tell the
        progress display the bytes to come; a step's are in the total already)."""
        assert self.session is not None
        if announce:
            self.progress.transfer_started(self.host.name, archive.size_hint - offset)
        sent = self.session.upload(
            commands.receive(part, append=offset > 0),
            self._chunks(archive, offset),
            on_bytes=self._count,
            timeout=CHECKSUM_TIMEOUT,
        )
        if not sent.ok:
            raise self._failure(sent, "writing the archive on the host")

    def _checked_load(
        self, archive: Any, part: str, final: str, remove_after: bool = False, quiet: bool = False
    ) -> None:
        """Checksum, rename and load in one remote command (issue 19: nothing can swap the
        file in between). A copy whose sha256 differs is removed and sent again once, never
        loaded (`quiet`: no phase changes, the step loader's thread)."""
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            load = self.engine.load(final, self.codec, self.native, self.tools)
            command = commands.checked_load(part, final, archive.sha256, load, remove_after)
            out = self._run_engine(command, LOAD_TIMEOUT)
            remote, _ = commands.parse_checked_load(out.stdout)
            if remote == archive.sha256:
                if not out.ok:
                    raise self._failure(out, f"{self.engine.kind} load", command=command)
                return
            if not remote:
                raise self._failure(
                    out, "sha256sum before loading", command=command, nonzero=True
                )
            self._run(commands.remove(part), "removing the bad copy", PROBE_TIMEOUT)
            verify = getattr(archive, "verify", None)
            if verify is not None:  # the workstation's copy, if it was read unchecked: a
                verify()  # CorruptEntry then (rebuilt, and this host retries: _rebuild)
            if attempt == UPLOAD_ATTEMPTS:
                raise TransferError(
                    self.host.name,
                    f"checksum mismatch after {attempt} attempts "
                    f"(expected {archive.sha256[:12]}, host has {remote[:12]}); not loaded",
                )
            if not quiet:
                self._phase("upload")
            self._upload(archive, part, 0, announce=True)
            if not quiet:
                self._phase("load")

    def _resume_offset(self, archive: Any, part: str, present: int) -> int:
        """Bytes of a previous, cut-off upload that can be kept (prefix checked by sha256)."""
        if present <= 0:
            return 0
        # (the local prefix waits for a growing archive to reach `present` bytes)
        remote = commands.parse_sha256(
            self._run(
                commands.prefix_sha256(part, present),
                "checking the partial upload",
                CHECKSUM_TIMEOUT,
            ).stdout
        )
        if remote == archive.prefix_sha256(present):
            self.result.resumed_from = present
            return present
        # longer than the archive, or a different prefix: start over
        self._run(commands.remove(part), "removing a stale partial upload", PROBE_TIMEOUT)
        return 0

    def _chunks(self, archive: Any, offset: int = 0) -> Iterator[bytes]:
        try:
            for chunk in archive.chunks(offset):
                if self.cancel.is_set():
                    raise Cancelled("interrupted during upload")
                yield chunk
        except OSError as exc:  # the workstation's file, not the link (transport: lost)
            raise LocalError(f"reading {archive.path} failed: {exc}") from None

    # -- streamed transfer: straight into docker load, no temp file ----------------------------

    def _stream(self) -> None:
        archive = self.archive
        assert archive is not None and self.session is not None
        self._phase("stream")
        t = time.monotonic()
        self.progress.transfer_started(self.host.name, archive.size_hint)
        loaded = self.session.upload(
            self.engine.stream_load(self.codec, self.native, self.tools),
            self._after_secret(self._chunks(archive)),
            on_bytes=self._count_after_secret(),
            timeout=LOAD_TIMEOUT,
        )
        if not loaded.ok:
            raise self._failure(loaded, f"{self.engine.kind} load (streamed)")
        self._timed("upload", t)

    def _after_secret(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The archive, after sudo's password line when sudo reads one (engines.py)."""
        if self.secret_line:
            yield self.secret_line
        yield from chunks

    def _count_after_secret(self) -> Callable[[int], None]:
        skip = [len(self.secret_line)]  # the password line is not archive bytes

        def count(nbytes: int) -> None:
            dropped = min(skip[0], nbytes)
            skip[0] -= dropped
            if nbytes > dropped:
                self._count(nbytes - dropped)

        return count

    def _count(self, nbytes: int) -> None:
        self.result.bytes_sent += nbytes
        self.progress.advance(self.host.name, nbytes)

    def _cleanup(
        self, tempdir: str, verify: bool = False, stand_ins: list[str] | None = None
    ) -> None:
        """Remove the loading steps' stand-ins (`docker rmi`: untagged, the real image keeps
        its layers; those never loaded are `No such image`: not an error) and our temp dir,
        whatever happened, in one command; a failure here is reported, not raised. After a
        load (`verify`, when the play verifies) the same command reads what the host holds
        now (issue 16 item 2: one round trip less), kept for the verify step."""
        assert self.session is not None
        verify = verify and self.verify_after_load
        steps = [commands.cleanup(tempdir)]
        # the engine's commands under ONE sudo (which reads the one password line there is)
        as_engine_user = (
            [commands.join([*self.engine.argv, "rmi", *stand_ins])] if stand_ins else []
        )
        if verify:
            as_engine_user.append(self.engine.identity_script(self._refs()))
        if as_engine_user:
            steps.append(self.engine.wrap(commands.in_parts(as_engine_user)))
        command = commands.in_parts(steps)
        count = len(steps) - 1 + len(as_engine_user)  # the parts of the output
        t = time.monotonic()
        try:
            # stdin: sudo's password line for the engine commands (read by the first sudo)
            out = self._run_engine(command, CLEANUP_TIMEOUT if not verify else PROBE_TIMEOUT)
        except DistribError as exc:
            if stand_ins:
                self.result.message += (
                    f" (removing the loading steps' images failed: {exc.message})"
                )
            self.result.message += f" (cleanup of {tempdir} failed: {exc.message})"
            return
        if not verify:
            return
        if not out.ok:
            raise self._failure(out, "inspecting images", command=command)
        try:
            text = commands.split_parts(out.stdout, count)[-1]
        except ValueError:
            raise self._failure(
                out, "inspecting images (the output was cut short)", command=command
            ) from None
        self.verified = self._parse_found(text)
        self._timed("verify", t)

    def _refs(self) -> list[Any]:
        return [i.ref for i in self.job.images]

    def _parse_found(self, text: str) -> dict[str, commands.Inspected]:
        """`familiar ref -> what this host holds under it` from the identity script's output."""
        try:
            return self.engine.parse_identity(text, self._refs())
        except commands.InspectError as exc:
            raise HostError(
                self.host.name,
                f"{self.engine.kind} cannot inspect {exc.ref}: {exc.message}",
                hint="is the engine running, and may this user use it?",
            ) from None

    def _look(
        self, images: tuple[LocalImage, ...], known: commands.Facts | None
    ) -> tuple[commands.Facts, dict[str, commands.Inspected] | None]:
        """The probe (unless `known` from a run's probing pass), the identity of `images`
        and, when a delta may follow (a layer store, a docker host, deploy mode), the host's
        layer listing: ONE remote command, as the engine user (issue 16 item 2: a host that
        holds everything costs one command after connecting). The identity is parsed only
        when the engine answers (None otherwise: the caller reports why)."""
        scripts = [] if known is not None else [self.engine.probe_script(self.host.remote_tmp)]
        scripts.append(self.engine.identity_script([i.ref for i in images]) if images else "true")
        listing = (
            self.job.mode == DEPLOY and self.job.store is not None
            and self.engine.kind == engines.DOCKER
        )  # fmt: skip
        if listing:
            store = None if known is None else known.store == commands.CONTAINERD_STORE
            scripts.append(commands.host_layers(self.docker, store))
        command = self.engine.wrap(commands.in_parts(scripts))
        result = self._run(command, "probe", PROBE_TIMEOUT, self.secret_line)
        try:
            parts = commands.split_parts(result.stdout, len(scripts))
        except ValueError:
            raise self._failure(
                result, "probe (its output was cut short)", command=command
            ) from None
        facts = known if known is not None else commands.parse_probe(parts[0])
        if not facts.engine_ok:
            return facts, None
        if listing:
            self.listed = parts[-1]
        return facts, self._parse_found(parts[1 if known is None else 0])

    def _identity(
        self,
        images: tuple[LocalImage, ...],
        found: dict[str, commands.Inspected] | None = None,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """What the host holds under each tag: (ref -> the engine's id, ref -> present |
        missing | different), decided by `image_state` (the config, never the layers).
        `found`: already read (with the probe, or with the cleanup after a load)."""
        if found is None:
            command = self.engine.wrap(self.engine.identity_script([i.ref for i in images]))
            out = self._run(command, "inspecting images", PROBE_TIMEOUT, self.secret_line)
            found = self._parse_found(out.stdout)
        states = {str(i.ref): image_state(i, found.get(i.ref.familiar)) for i in images}
        ids = {str(i.ref): found[i.ref.familiar].id for i in images if i.ref.familiar in found}
        return ids, states


class _StepLoader:
    """Loads checked steps in order on one worker thread while the next are uploaded. After
    a failure nothing more is loaded; `put` and `finish` re-raise it in the deploying thread."""

    def __init__(self, deployment: _Deployment) -> None:
        self._deployment = deployment
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"load-{deployment.host.name}")
        self._loads: list[Future[None]] = []
        self._stopped = threading.Event()  # a failure, or stop(): load nothing more

    def put(self, step: Any, part: str, final: str) -> None:
        for load in self._loads:
            if load.done() and load.exception() is not None:
                load.result()
        self._loads.append(self._pool.submit(self._load, step, part, final))

    def finish(self) -> None:
        """Wait until every step is loaded; raise the first failure."""
        for load in self._loads:
            load.result()

    def stop(self) -> None:
        """Load nothing more; wait for a load in progress (it must not outlive cleanup)."""
        self._stopped.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _load(self, step: Any, part: str, final: str) -> None:
        if self._stopped.is_set():
            return
        try:
            if self._deployment.cancel.is_set():
                raise Cancelled("interrupted")
            self._deployment._load_step(step, part, final)
        except BaseException:
            self._stopped.set()
            raise
