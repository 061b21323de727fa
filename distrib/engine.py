"""Deploy to one host: connect -> probe -> decide -> (delta) -> send -> load -> verify ->
cleanup, a short composition of the host frame (`hostframe.host_frame`), the host session
(`hostsession.HostSession`: every remote command) and the pure decision (`decide`). `deploy`
never raises for a host problem: every outcome becomes a HostResult (STYLE: every host's
outcome is collected).

The session factory is injected, so deploy is tested against fake hosts (tests/fakes.py) and
the integration tests run it against real sshd + dockerd hosts. The records and helpers other
steps share (statuses, Progress, HostResult, the host lock, kept sessions, image_state, the
codec choice) are defined in outcome, hostsession, hostframe and decide, and named here too.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distrib import commands, decide, engines
from distrib.archive import Archive, LocalImage
from distrib.decide import (
    AUTO,
    CHECK,
    DEPLOY,
    DIFFERENT,
    DRIFT_WORDS,
    MISSING,
    PRESENT,
    STAGED,
    STREAM,
    VERIFY,
    Loading,
    choose_codec,
    host_codecs,
    image_state,
)
from distrib.errors import CorruptEntry, HostError, VerifyError
from distrib.hostframe import (
    KeptSessions,
    SessionFactory,
    holding_host_lock,
    host_frame,
    lock_host,
    note_wait,
    probe_facts,
)
from distrib.hostsession import (
    CHECKSUM_TIMEOUT,
    CLEANUP_TIMEOUT,
    HOST_LOCK_WAIT,
    LOAD_TIMEOUT,
    PROBE_TIMEOUT,
    UPLOAD_ATTEMPTS,
    HostSession,
    LoadFailed,
    engine_of,
)
from distrib.layerstore import LayerStore, PendingDelta
from distrib.outcome import (
    CHANGED,
    FAILED,
    OK,
    SKIPPED,
    UNREACHABLE,
    Cancelled,
    Connector,
    HostResult,
    Progress,
    QuietProgress,
)
from distrib.plan import HostPlan
from distrib.units import human_bytes as _human

__all__ = [
    "AUTO", "CHANGED", "CHECK", "CHECKSUM_TIMEOUT", "CLEANUP_TIMEOUT", "DEPLOY", "DIFFERENT",
    "DRIFT_WORDS", "FAILED", "HOST_LOCK_WAIT", "LOAD_TIMEOUT", "MISSING", "OK", "PRESENT",
    "PROBE_TIMEOUT", "SKIPPED", "STAGED", "STREAM", "UNREACHABLE", "UPLOAD_ATTEMPTS", "VERIFY",
    "Cancelled", "Connector", "HostResult", "Job", "KeptSessions", "Progress", "QuietProgress",
    "choose_codec", "deploy", "engine_of", "holding_host_lock", "host_codecs", "image_state",
    "lock_host", "note_wait", "probe_facts",
]  # fmt: skip


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
    open_session: SessionFactory = HostSession,
) -> HostResult:
    """Bring `host` to hold every image of `job`, verified. Never raises for host problems.
    `host_locked`: the caller holds the host lock already (a task of several steps, a relay
    tree host), so this deploy does not take it again (issue 19). `open_session`: the host
    session over the connection (tests pass a fake one: tests/fakes.FakeHostSession)."""
    job = job.for_host(host.name)
    lock = job.mode == DEPLOY and not host_locked
    body = functools.partial(rollout, job=job)
    return host_frame(host, connect, body, progress, cancel, lock=lock, open_session=open_session)


def rollout(hs: HostSession, job: Job) -> None:
    """`deploy`'s body on a host session (the host frame around it makes the outcome)."""
    _Rollout(hs, job.for_host(hs.name)).run()


@dataclass
class _Sending:
    """The payload on its way: an archive (whole, a delta, or a pending delta while the layer
    store fills) and, for a delta, its loading steps (sent one by one when `stepped`)."""

    archive: Any
    steps: Iterable[Any] = ()
    stepped: bool = False


class _Rollout:
    """One host's deploy, over its HostSession (built by `deploy`'s host frame)."""

    def __init__(self, hs: HostSession, job: Job) -> None:
        self.hs = hs
        self.job = job
        self.result = hs.result
        self.refs = [i.ref for i in job.images]
        self.wanted: list[LocalImage] = []
        # a delta: the host's layer chains and (docker's containerd store) content blobs
        self.chains: set[tuple[str, ...]] = set()
        self.blobs: frozenset[str] | None = None
        self.rebuilt = ""  # a corrupt cache entry rebuilt for a retry (issue 19)
        self.loaded_steps = 0
        self.action = decide.Action(decide.OK)  # what is being done (decide)

    def run(self) -> None:
        hs, job, result = self.hs, self.job, self.result
        hs.phase("probe")
        t = time.monotonic()
        hs.become(job.become_password)
        listing = job.mode == DEPLOY and job.store is not None  # a delta may follow
        look = hs.facts(job.facts.get(hs.name), self.refs, listing)
        facts = look.facts
        self._states(look.found or {})
        hs.timed("probe", t)
        by_ref = {str(i.ref): i for i in job.images}
        action = decide.what_to_send(job.mode, by_ref, result.states, facts, job.store is not None)
        if action.drift:
            result.status, result.message = FAILED, action.reason
            result.error = VerifyError(hs.name, action.reason)
            return
        if action.refused:
            raise HostError(hs.name, action.reason, hint=action.hint)
        if action.kind == decide.OK:
            result.status, result.message = OK, action.reason
            return
        self.wanted = [by_ref[ref] for ref in action.missing]
        sending = _Sending(job.archive)
        if action.payload == decide.DELTA:
            hs.phase("layers")
            try:
                sending = self._delta(look.listed)
            except CorruptEntry as exc:  # a config checked as it was read: rebuilt, once
                sending = self._rebuild(exc, action)
        archive = sending.archive
        codec = archive.codec if archive is not None else job.codec
        size = archive.size_hint if archive is not None else sum(i.size for i in self.wanted)
        unpacked = sum(i.size for i in self.wanted)
        transfer = self.hs.host.transfer
        action = decide.how_to_send(
            action, facts, codec, size, unpacked, transfer, hs.host.remote_tmp
        )
        if action.refused:
            raise HostError(hs.name, action.reason, hint=action.hint)
        if job.mode == CHECK:
            self._would_send(action, archive)
            return
        loading = Loading(codec, action.native, facts.tools)
        self.action = action
        try:
            found = self._ship_or_full(sending, loading)
        except CorruptEntry as exc:  # checked as it was read for this host: rebuilt, once
            found = self._ship_or_full(self._rebuild(exc, self.action), loading)
        result.status = CHANGED
        self._verify(found)
        self._notes(self.action, transfer)

    def _states(self, found: dict[str, commands.Inspected]) -> None:
        """What the host holds under each tag: ref -> the engine's id, ref -> present |
        missing | different (decided by `image_state`: the config, never the layers)."""
        images = self.job.images
        self.result.states = {str(i.ref): image_state(i, found.get(i.ref.familiar)) for i in images}
        self.result.images = {
            str(i.ref): found[i.ref.familiar].id for i in images if i.ref.familiar in found
        }

    def _would_send(self, action: decide.Action, archive: Any) -> None:
        """Check mode: what a deploy would send, and how."""
        result, missing = self.result, ", ".join(action.missing)
        result.status = CHANGED
        how = f"({action.transfer} transfer, check mode)"
        if action.payload == decide.DELTA and archive is not None:
            full = self._full()
            result.message = (
                f"would send {result.layers_sent} of {result.layers_total} layer(s), "
                f"{_human(archive.size)} (full archive: {_human(full.archive.size)}) for "
                f"{missing} {how}"
            )
            return
        size = archive.size if archive else sum(i.size for i in self.job.images)
        kind = "" if archive else " uncompressed"
        result.message = f"would send {_human(size)}{kind} for {missing} {how}"

    def _verify(self, found: dict[str, commands.Inspected] | None) -> None:
        """After a load: what the host holds now (read with the cleanup when there was one,
        else one more command) must be what was sent."""
        hs, count = self.hs, len(self.job.images)
        if not self.job.verify:
            self.result.message = f"loaded {count} image(s) (verify off)"
            return
        hs.phase("verify")
        if found is None:
            t = time.monotonic()
            found = hs.identity(self.refs)
            hs.timed("verify", t)
        self._states(found)
        wrong = decide.drifted(self.result.states)
        if wrong:
            raise VerifyError(hs.name, "after loading: " + "; ".join(wrong))
        self.result.message = f"loaded and verified {count} image(s)"

    def _notes(self, action: decide.Action, transfer: str) -> None:
        result = self.result
        if result.layers_total:
            refused = "; delta refused by the engine, full archive sent" if action.fallback else ""
            result.message += f" ({result.layers_sent}/{result.layers_total} layers sent{refused})"
        if self.loaded_steps > 1:
            result.message += f" (loaded in {self.loaded_steps} steps while sending)"
        if action.transfer == STREAM:
            result.message += (
                " (streamed: staging space too small)" if transfer == AUTO else (" (streamed)")
            )
        if self.rebuilt:
            result.message += f" (rebuilt on the workstation and sent again: {self.rebuilt})"

    # -- sending -------------------------------------------------------------------------------

    def _ship_or_full(
        self, sending: _Sending, loading: Loading
    ) -> dict[str, commands.Inspected] | None:
        """Send and load; the identity read with the cleanup (None: not read). An engine that
        refuses a delta when loading it (docker's containerd image store, confirmed only on
        first use) gets the full archive, from the same store (decide.after_refused_delta)."""
        try:
            return self._ship(self.action, sending, loading)
        except LoadFailed:
            full = decide.after_refused_delta(self.action, self.hs.cancel.is_set())
            if full is None:
                raise
            self.action = full
            sending = self._full()
            self.result.layers_sent = len(sending.archive.layers)
            return self._ship(full, sending, loading)

    def _ship(
        self, action: decide.Action, sending: _Sending, loading: Loading
    ) -> dict[str, commands.Inspected] | None:
        verify = self.refs if self.job.verify else None
        if action.transfer == STREAM:
            self.hs.stream(self._settle(sending.archive), loading)
            return None
        if sending.stepped:
            found, self.loaded_steps = self.hs.load(
                sending.archive.key, sending.steps, loading, verify
            )
            return found
        return self.hs.stage(self._settle(sending.archive), loading, verify)

    def _delta(self, listed: str | None) -> _Sending:
        """Only the layers whose chain the host lacks, from the layer store (issue 8): an
        exact archive when the store holds everything, else (the store still filling in the
        background) a pending one, sent in loading steps that wait for their blobs.
        `listed`: the host's layer listing read with the probe (None: read it now)."""
        store, wanted = self.job.store, self.wanted
        assert store is not None
        facts = self.result.facts
        containerd_store = facts is not None and facts.store == commands.CONTAINERD_STORE
        self.chains, self.blobs = self.hs.layer_chains(containerd_store, listed)
        self.result.layers_total = len({d for image in wanted for d in image.diff_ids})
        if self.blobs is not None:
            # a containerd-store host: which layers can be left out depends on the stored
            # blobs' digests (layerstore, OCI layout), known once they are stored
            store.wait_filled()
        if store.filling:
            archive: Any = PendingDelta(wanted, self.chains, store.codec)
            sending = _Sending(archive, store.steps(wanted, self.chains), True)
        else:
            archive = store.assemble(wanted, self.chains, self.blobs)
            steps = list(store.steps(wanted, self.chains, self.blobs))
            sending = _Sending(archive, steps, len(steps) > 1)
        self.result.layers_sent = len(archive.layers)
        return sending

    def _full(self) -> _Sending:
        """The full archive of the wanted images, from the same store (after its fill)."""
        store = self.job.store
        assert store is not None
        store.wait_filled()
        blobs: frozenset[str] | None = frozenset() if self.blobs is not None else None
        return _Sending(store.assemble(self.wanted, None, blobs))

    def _settle(self, archive: Any) -> Any:
        """A pending delta becomes exact (waits for the store's fill): for a whole transfer."""
        if isinstance(archive, PendingDelta):
            assert self.job.store is not None
            self.job.store.wait_filled()
            return self.job.store.assemble(self.wanted, self.chains, self.blobs)
        return archive

    def _rebuild(self, exc: CorruptEntry, action: decide.Action) -> _Sending:
        """A workstation cache entry (a cached archive, a layer-store blob or config) did not
        match its record as it was read for this host, and was removed (issue 19): store or
        build it again and retry, once, in this run. Other hosts that hit it too wait for
        the same rebuild (the store's lock; the archive's one build)."""
        if self.rebuilt or self.hs.cancel.is_set():
            raise exc
        self.hs.phase("rebuild")
        self.rebuilt = exc.message
        if action.payload != decide.DELTA and not action.fallback:
            archive = self.job.archive
            if archive is None or not hasattr(archive, "rebuild") or not archive.rebuild():
                raise exc
            return _Sending(archive)
        store = self.job.store
        assert store is not None
        store.wait_filled()
        store.ensure(self.wanted, self.hs.cancel)
        if action.fallback:
            sending = self._full()
            self.result.layers_sent = len(sending.archive.layers)
            return sending
        return self._delta(None)
