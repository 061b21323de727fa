"""One relay tree host's stream, copy and load (issue 9; issue 15: any engine, become).

The first hosts are uploaded to by the workstation; every other host is watched until its own
copy ended. Then size and sha256 are checked against the archive before anything is loaded
(one command: checksum, rename, the member engine's own load); a host cut off (its parent
died, or never connected) is re-parented: fed from a host of its group holding a checked copy,
or from the workstation, resuming after a prefix check. Then verify (the engine's own check).
"""

from __future__ import annotations

import time

from distrib import commands
from distrib.engine import (
    CHANGED,
    FAILED,
    LOAD_TIMEOUT,
    OK,
    UNREACHABLE,
    VERIFY,
    Cancelled,
    Job,
    Progress,
    deploy,
)
from distrib.errors import ConnectError, CorruptEntry, DistribError, HostError, TransferError
from distrib.relay.member import (
    BROKEN,
    CHECKSUM_TIMEOUT,
    COMPLETE,
    FEEDING,
    KEY_HOURS,
    RECEIVING,
    REFEEDS,
    START_GRACE,
    WAITING,
    WATCH_SECONDS,
    _failed,
    _Member,
    _ok,
)
from distrib.relay.setup import _Setup
from distrib.relay.tree import WORKSTATION
from distrib.target import Result
from distrib.units import human_bytes


class _Streams(_Setup):
    def _member(self, m: _Member) -> None:
        result = m.result
        t0 = time.monotonic()
        try:
            try:
                if m.parent is None:
                    self._stream_from_workstation(m)
                else:
                    self._await_stream(m)
            finally:
                # this host's entry authorized its parent only for the planned stream
                if m.parent is not None:
                    self._quietly(m, commands.relay_unauthorize(self.run_id))
            result.timings["relay"] = round(time.monotonic() - t0, 3)
            self._load_and_verify(m, self._complete_copy(m))
        except DistribError as exc:
            if isinstance(exc, CorruptEntry):
                with self.cond:
                    self.corrupt = self.corrupt or exc.message
            self._fail(result, exc)
            self._set_state(m, BROKEN if m.state != COMPLETE else COMPLETE)
        except Exception as exc:  # a bug: still only this host
            self._fail(result, HostError(m.name, f"unexpected error: {type(exc).__name__}: {exc}"))
            self._set_state(m, BROKEN if m.state != COMPLETE else COMPLETE)
        result.timings["total"] = round(time.monotonic() - self.started, 3)  # from the probe
        with self.cond:
            if result.failed and self.corrupt and result.status != UNREACHABLE:
                self.retry.append(m)  # sent directly once the tree is swept
                return
        self._final(result)

    def _stream_from_workstation(self, m: _Member) -> None:
        assert self.payload is not None
        self.progress.phase(m.name, "relay")
        self.progress.transfer_started(m.name, self.payload.size_hint)
        try:
            m.session.upload(
                self._receive_command(m),
                self._chunks(0),
                on_bytes=lambda n: self._count(m, n),
                timeout=LOAD_TIMEOUT,
            )
        except ConnectError:
            if self.cancel.is_set():
                raise
            m.notes.append("connection lost mid-stream")
            m.session.close()
            m.session = self.connect(m.host.target)  # unreachable now: this host fails

    def _await_stream(self, m: _Member) -> None:
        """Wait until this host's own copy ended, or give up on its stream: the parent never
        connected, or nothing arrived for io_timeout (a dead parent or link)."""
        assert self.payload is not None and self.tree is not None
        self.progress.phase(m.name, "relay")
        self.progress.transfer_started(m.name, self.payload.size_hint)
        begun = time.monotonic()
        depth = self.tree.depth(m.name)
        start_limit = START_GRACE + depth * m.host.target.connect_timeout
        size = 0
        changed = begun
        while True:
            if self.cancel.is_set():
                raise Cancelled("interrupted")
            try:
                out = self._run(
                    m, commands.relay_watch(m.directory, m.part, WATCH_SECONDS), "watching"
                )
            except ConnectError:
                # our own connection to the host was cut (its sshd sessions killed, say):
                # the host may well be fine; a fresh connection, else it is unreachable
                if "watch connection lost" in m.notes:
                    raise
                m.notes.append("watch connection lost")
                m.session.close()
                m.session = self.connect(m.host.target)
                continue
            watch = commands.parse_relay_watch(out.stdout)
            now = time.monotonic()
            if watch.size != size:
                if watch.size > size:
                    self.progress.advance(m.name, watch.size - size)
                size, changed = watch.size, now
            if watch.received is not None:
                m.result.bytes_relayed += size
                return
            if not watch.started and now - begun > start_limit:
                m.notes.append(f"{m.parent} never connected")
                break
            if watch.started and now - changed > m.host.target.io_timeout:
                m.notes.append(f"stream from {m.parent} stalled")
                break
        self._run(m, commands.relay_stop(m.directory), "stopping the stalled stream")
        m.result.bytes_relayed += size

    def _complete_copy(self, m: _Member) -> Result:
        """Size, then sha256 against the archive and load in one command (the load's result
        is returned); re-parent until the copy is complete."""
        assert self.payload is not None
        bad_copies = 0
        for attempt in range(REFEEDS + 1):
            size = self._size(m)
            if size == self.payload.size:
                # checksum, rename and load: one remote command (issue 19)
                self.progress.phase(m.name, "load")
                t = time.monotonic()
                codec = str(getattr(self.payload, "codec", self.job.codec))
                # the member's own engine (issue 15): podman's names, containerd's namespace
                # and pin label, sudo (its password line, if any, the command's stdin)
                command = m.engine.member_load(
                    m.part,
                    m.final,
                    self.payload.sha256,
                    codec,
                    m.facts.engine_reads(codec),
                    m.facts.tools,
                )
                out = self._engine_run(m, command, CHECKSUM_TIMEOUT + LOAD_TIMEOUT)
                digest, _ = commands.parse_checked_load(out.stdout)
                if not digest:
                    _ok(m.name, out if not out.ok else _failed(out), "sha256sum before loading")
                if digest == self.payload.sha256:
                    m.result.timings["load"] = round(time.monotonic() - t, 3)
                    self._set_state(m, COMPLETE)  # a checked copy, loaded or not
                    return out
                bad_copies += 1
                if bad_copies >= 2:
                    raise TransferError(
                        m.name,
                        f"checksum mismatch twice (expected {self.payload.sha256[:12]}, "
                        f"host has {digest[:12]}); not loaded",
                    )
                m.notes.append("checksum mismatch: copy discarded")
                self._run(m, commands.remove(m.part), "removing the bad copy")
                size = 0
            elif size > self.payload.size:
                self._run(m, commands.remove(m.part), "removing an oversized copy")
                size = 0
            if attempt == REFEEDS:
                break
            self._refeed(m, size)
        raise TransferError(
            m.name,
            f"copy incomplete after {REFEEDS} re-parenting attempt(s); not loaded",
        )

    def _size(self, m: _Member) -> int:
        out = self._run(m, commands.relay_watch(m.directory, m.part, 0), "sizing the copy")
        return commands.parse_relay_watch(out.stdout).size

    def _resume_offset(self, m: _Member, size: int) -> int:
        """Bytes of the copy that can be kept: the prefix is checked by sha256 (engine's rule)."""
        assert self.payload is not None
        if size <= 0:
            return 0
        remote = commands.parse_sha256(
            self._run(
                m,
                commands.prefix_sha256(m.part, size),
                "checking the partial copy",
                CHECKSUM_TIMEOUT,
            ).stdout
        )
        if remote == self.payload.prefix_sha256(size):
            return size
        self._run(m, commands.remove(m.part), "removing a bad partial copy")
        return 0

    def _refeed(self, m: _Member, size: int) -> None:
        assert self.payload is not None
        self._set_state(m, WAITING)
        self.progress.phase(m.name, "re-parent")
        offset = self._resume_offset(m, size)
        source = self._pick_source(m)
        self._set_state(m, FEEDING)
        before = f" at {human_bytes(offset)}" if offset else ""
        m.result.resumed_from = max(m.result.resumed_from, offset)
        if source is None:
            m.notes.append(f"re-parented to the workstation{before}")
            m.result.fed_by = WORKSTATION
            self.progress.transfer_started(m.name, self.payload.size_hint - offset)
            sent = m.session.upload(
                commands.receive(m.part, append=offset > 0),
                self._chunks(offset),
                on_bytes=lambda n: self._count(m, n),
                timeout=CHECKSUM_TIMEOUT,
            )
            _ok(m.name, sent, "writing the archive on the host")
            return
        try:
            m.notes.append(f"re-parented to {source.name}{before}")
            m.result.fed_by = source.name
            self._feed_from(source, m, offset)
            m.result.bytes_relayed += max(0, self._size(m) - offset)
        except DistribError as exc:
            m.notes.append(f"feed from {source.name} failed: {exc.message}")
            with self.cond:
                self.bad_sources.add(source.name)
        finally:
            with self.cond:
                source.feeds -= 1
                self.cond.notify_all()

    def _pick_source(self, m: _Member) -> _Member | None:
        """A host of m's group holding a checked copy (least busy first); while none does but
        some are still receiving, wait for them; else None: the workstation feeds m."""
        with self.cond:
            while True:
                if self.cancel.is_set():
                    raise Cancelled("interrupted")
                peers = [
                    x
                    for x in self.members.values()
                    if x is not m
                    and x.host_group == m.host_group
                    and x.relay.can_relay
                    and x.name not in self.bad_sources
                ]
                ready = [x for x in peers if x.state == COMPLETE]
                if ready:
                    best = min(ready, key=lambda x: x.feeds)
                    if best.feeds < self.width:
                        best.feeds += 1
                        return best
                elif not any(x.state in (RECEIVING, FEEDING) for x in peers):
                    return None
                self.cond.wait(1.0)

    def _feed_from(self, source: _Member, m: _Member, offset: int) -> None:
        """`source` sends its checked copy from `offset` to m over SSH: m authorizes the run's
        key from source's address for an append-only command, for this feed only."""
        self._run(
            m,
            commands.relay_authorize(
                commands.relay_options(
                    source.relay.address, commands.relay_append(m.directory, m.part)
                ),
                self.public_key,
                self.run_id,
                KEY_HOURS,
            ),
            "authorizing the new parent's key",
        )
        try:
            session = self.connect(source.host.target)
            try:
                self._install_key(source, session)
                self.progress.phase(m.name, f"relay from {source.name}")
                sent = session.run(
                    commands.relay_send(source.final, offset, self._child_argv(source, m)),
                    timeout=CHECKSUM_TIMEOUT,
                )
                _ok(source.name, sent, f"sending the copy to {m.name}")
            finally:
                session.close()
        finally:
            self._quietly(m, commands.relay_unauthorize(self.run_id))

    def _load_and_verify(self, m: _Member, loaded: Result) -> None:
        """After the checked load (`loaded`): its outcome, then verify."""
        assert self.payload is not None
        result = m.result
        if not loaded.ok and self.payload is not self.job.archive:
            # an engine that refuses a partial archive (DESIGN.md): direct mode's own delta
            # path falls back to the full archive for this host
            m.notes.append("delta refused by the engine: sent directly")
            direct = deploy(
                m.host, self.job, self.connect, Progress(), self.cancel, host_locked=True
            )
            for name in ("status", "message", "images", "states", "error"):
                setattr(result, name, getattr(direct, name))
            result.bytes_sent += direct.bytes_sent
            result.message += f" ({', '.join(m.notes)})"
            return
        _ok(m.name, loaded, f"{m.engine.kind} load")
        result.status = CHANGED
        n = len(self.job.images)
        how = ", ".join([f"fed by {result.fed_by}", *m.notes])
        if m.children:
            how += f", relayed to {', '.join(m.children)}"
        if not self.job.verify:
            result.message = f"loaded {n} image(s) (verify off; {how})"
            return
        self.progress.phase(m.name, "verify")
        t = time.monotonic()
        checked = deploy(
            m.host,
            Job(self.job.images, None, True, VERIFY, become_password=self.job.become_password),
            self.connect,
            Progress(),
            self.cancel,
        )
        result.timings["verify"] = round(time.monotonic() - t, 3)
        result.images, result.states = checked.images, checked.states
        if checked.status != OK:
            result.status = checked.status if checked.status == UNREACHABLE else FAILED
            result.error = checked.error
            result.message = f"after loading: {checked.message} ({how})"
            return
        result.message = f"loaded and verified {n} image(s) ({how})"
