"""Relay fan-out at run time (issue 9): one batch of a `fanout: relay` play.

1. Probe every host (the engine's own check: identity, decode, disk preflight). Up-to-date
   hosts are `ok` and are left out of the tree; so are hosts that cannot take part (no
   staging space, a codec of their own, no known_hosts entry to hand over, a local connection:
   member.why_direct, member.unfit): the workstation feeds those directly, as in direct mode.
   Any engine may be a member, become or not (issue 15): the relayed stream is the archive,
   each member loads it with its own engine (engines.Engine.member_load).
2. Plan the tree (tree.py), make a one-time ed25519 key pair for the run, and set every tree
   host up: a private staging dir, the key and the children's known_hosts lines on relaying
   hosts, and on every fed host an authorized_keys entry restricted to the parent's address
   and to the receiving command (relay_receive: tee into its own .part and into one fifo per
   child, each read by an `ssh child`).
3. Stream: the workstation uploads into the first hosts; every other host is watched until
   its own copy ended. Then each host checks size and sha256 against the archive before
   anything is loaded; a host cut off (its parent died, or never connected) is re-parented:
   fed from a host of its group holding a checked copy, or from the workstation, resuming
   after a prefix check (as direct mode's resume). Load, verify (the engine's identity check).
4. Whatever happened (success, failure, SIGINT): each host drops its authorized_keys entry as
   soon as its copy ended, and a final sweep over every tree host stops leftover pipelines,
   removes every entry of the run and the staging dir (key included); the local key pair
   never touches the disk beyond ssh-keygen's private temp dir, removed at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from distrib import commands, engines
from distrib.engine import (
    CHANGED,
    CHECK,
    CLEANUP_TIMEOUT,
    DEPLOY,
    PROBE_TIMEOUT,
    Cancelled,
    Connector,
    HostResult,
    Job,
    Progress,
    QuietProgress,
    deploy,
    lock_host,
)
from distrib.errors import DistribError, HostError
from distrib.plan import HostPlan, PlayPlan
from distrib.relay import fanout
from distrib.relay.keys import known_hosts_lines, one_time_key
from distrib.relay.member import Payload, _Member, _ok, run_as_engine, unfit, why_direct
from distrib.relay.stream import _Streams
from distrib.relay.tree import WORKSTATION, Node, draw, plan_tree
from distrib.target import Session

DIRECT = "direct"
RELAY = "relay"
FANOUTS = (DIRECT, RELAY)
DEFAULT_WIDTH = 3


def payload_for(
    job: Job,
    missing: Sequence[Sequence[str]],
    chains: Sequence[set[tuple[str, ...]] | None],
    whole: bool = False,
) -> Payload:
    """The one stream every tree host receives. Without a layer store: the play's archive.
    With one (delta, issue 8): the images some host lacks, with the layers whose chain at
    least one host lacks (the union of what they lack: a layer is left out only when every
    host holds its chain, as docker load skips layers a host already has). `missing[i]` and
    `chains[i]` are host i's missing refs and layer chains (None: unknown, send all layers).
    `whole`: a member loads with podman or containerd, which direct mode sends the play's
    archive, never a store-assembled one (issue 15): the tree gets the play's archive."""
    if job.store is None or (whole and job.archive is not None):
        assert job.archive is not None
        return job.archive
    wanted = {ref for refs in missing for ref in refs}
    images = [i for i in job.images if str(i.ref) in wanted] or list(job.images)
    known = [c for c in chains if c is not None]
    common: set[tuple[str, ...]] | None = (
        set.intersection(*known) if known and len(known) == len(chains) else None
    )
    job.store.wait_filled()  # the relayed stream is one exact archive
    return job.store.assemble(images, common)


def batch_step(
    play_plan: PlayPlan,
    batch: tuple[HostPlan, ...],
    job: Any,
    connect: Connector,
    progress: Progress | None,
    cancel: threading.Event,
) -> list[HostResult] | None:
    """The executor's whole-batch hook: run a `fanout: relay` batch; None for other plays
    (and read-only modes other than check), which then run host by host."""
    play = play_plan.play
    if not isinstance(job, Job):
        return None
    if fanout.for_play(play, len(batch), fanout.payload_bytes(job)).fanout != RELAY:
        return None  # direct, or `fanout: auto` found a tree would not pay (issue 16)
    if job.mode not in (DEPLOY, CHECK) or (job.mode == DEPLOY and job.archive is None):
        return None
    width = int(getattr(play, "relay_width", DEFAULT_WIDTH) or DEFAULT_WIDTH)
    roots = int(getattr(play, "relay_roots", 1) or 1)
    return _Relay(
        batch, job, connect, progress or Progress(), cancel, play_plan.forks, width, roots
    ).run()


def tree_text(results: Sequence[HostResult]) -> str:
    """The tree as it happened (who fed whom), from the results' `fed_by`."""
    fed = [r for r in results if getattr(r, "fed_by", None)]
    parent = {r.host: (None if r.fed_by == WORKSTATION else r.fed_by) for r in fed}
    notes = {r.host: r.status for r in fed}
    return draw(parent, [r.host for r in fed], notes)


class _Relay(_Streams):
    """One relay batch: _Base's state, _Setup's setup and sweep, _Streams' hosts."""

    # -- orchestration -------------------------------------------------------------------------

    def run(self) -> list[HostResult]:
        self.started = time.monotonic()
        direct: list[HostPlan] = []
        try:
            unlocked = self._lock_hosts() if self.job.mode == DEPLOY else {}
            hosts = [h for h in self.batch if h.name not in unlocked]
            for result in unlocked.values():
                self._final(result)
            with ThreadPoolExecutor(max_workers=min(self.forks, len(hosts)) or 1) as pool:
                for host, outcome in zip(hosts, pool.map(self._probe, hosts)):
                    if isinstance(outcome, _Member):
                        self.members[host.name] = outcome
                    else:
                        self._unlock(host.name)  # not in the tree: deployed (and locked) alone
                        if outcome is None:
                            direct.append(host)
            self._plan()
            if self.job.mode == CHECK:
                self._check_results(direct)
            else:
                self._deploy(direct)
        finally:
            for member in self.members.values():
                member.session.close()
            for name in list(self.locks):
                self._unlock(name)
        return [self.results[h.name] for h in self.batch]

    def _lock_hosts(self) -> dict[str, HostResult]:
        """Take the host lock of every host (issue 19), each on a session of its own that
        lives until the end (the tree hosts' sessions may be replaced on a lost link). One
        host after another in one global order (address, port, remote_tmp): two relay runs
        over the same hosts never wait for each other in a circle. Returns the final result
        of each host that could not be reached or locked."""

        def connect(host: HostPlan) -> Session | DistribError:
            try:
                return self.connect(host.target)
            except DistribError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(self.forks, len(self.batch)) or 1) as pool:
            opened = dict(zip([h.name for h in self.batch], pool.map(connect, self.batch)))
        failed: dict[str, HostResult] = {}
        order = sorted(self.batch, key=lambda h: (h.target.address, h.target.port, h.remote_tmp))
        for host in order:
            session = opened[host.name]
            if isinstance(session, DistribError):
                failed[host.name] = self._fail(HostResult(host.name), session)
                continue
            self.progress.phase(host.name, "lock")
            try:
                if self.cancel.is_set():
                    raise Cancelled("interrupted")
                unlock, waited = lock_host(session, host, relay=True)
            except DistribError as exc:
                session.close()
                failed[host.name] = self._fail(HostResult(host.name), exc)
                continue
            self.locks[host.name] = (session, unlock, waited)
        return failed

    def _unlock(self, name: str) -> None:
        held = self.locks.pop(name, None)
        if held is None:
            return
        session, unlock, _ = held
        if unlock is not None:
            unlock()
        session.close()

    def _probe(self, host: HostPlan) -> _Member | HostResult | None:
        """The engine's check on one host; a member of the tree, a final result (ok, failed,
        unreachable), or None: changed, but fed directly by the workstation."""
        self.progress.phase(host.name, "probe")
        own = self.job.for_host(host.name)  # compression auto: a codec of its own?
        probe_job = Job(
            own.images,
            None,
            own.verify,
            CHECK,
            own.codec,
            own.facts,
            own.store,
            self.job.become_password,
        )
        checked = deploy(host, probe_job, self.connect, Progress(), self.cancel)
        if checked.status != CHANGED:
            self._final(checked)
            return checked
        self.results[host.name] = checked
        facts = checked.facts  # what the check probed: engine, version, tools, space
        why = unfit(host) or ("" if facts is not None else "the engine was not probed")
        if why or facts is None:
            self._direct_note(checked, why)
            return None
        engine = engines.Engine(
            host.engine, tuple(host.docker), host.containerd_namespace, host.become
        )
        try:
            session = self.connect(host.target)
        except DistribError as exc:
            return self._fail(checked, exc)
        try:
            out = _ok(
                host.name,
                session.run(engine.member_probe(host.remote_tmp), timeout=PROBE_TIMEOUT),
                "relay probe",
            )
            try:
                relay, sudo = engine.parse_member_probe(out.stdout)
            except ValueError:
                raise HostError(host.name, "relay probe: its output was cut short") from None
            secret = self._become_secret(host, sudo)
            if secret is not None:
                engine = replace(engine, password=True)
            chains = None
            if self.job.store is not None:
                chains = self._chains(session, engine, secret, facts)
        except DistribError as exc:
            session.close()
            return self._fail(checked, exc)
        known = known_hosts_lines(host.target.address, host.target.port, host.target.known_hosts)
        size = (
            self.job.archive.size_hint if self.job.archive else sum(i.size for i in self.job.images)
        )
        why = why_direct(facts, relay, bool(known), self.job.codec, own.codec, size)
        if why:
            session.close()
            self._direct_note(checked, why)
            return None
        return _Member(
            host, checked, facts, relay, known, session, chains=chains, engine=engine, secret=secret
        )

    @staticmethod
    def _direct_note(checked: HostResult, why: str) -> None:
        """`checked` goes direct: fed by the workstation, its line says why (one line)."""
        checked.fed_by = WORKSTATION
        checked.message += f" (direct: {why})"

    def _become_secret(self, host: HostPlan, sudo: str) -> engines.Secret | None:
        """sudo's password when the host's rule needs one (the check validated it already;
        it goes on the load's stdin only), else None."""
        if sudo == engines.NOPASSWD:
            return None
        secret = (host.become.password if host.become else None) or self.job.become_password
        if sudo != engines.NEEDS_PASSWORD or secret is None:
            raise HostError(host.name, "become: sudo changed its answer since the check")
        return secret

    @staticmethod
    def _chains(
        session: Session,
        engine: engines.Engine,
        secret: engines.Secret | None,
        facts: commands.Facts,
    ) -> set[tuple[str, ...]] | None:
        """The layer chains a docker member holds (a relayed delta leaves out only the layers
        every member holds); None: unknown or not docker (every layer is sent)."""
        command = engine.member_layers(facts.store == commands.CONTAINERD_STORE)
        if command is None:
            return None
        listing = run_as_engine(session, command, secret, PROBE_TIMEOUT)
        if not listing.ok or commands.parse_host_blobs(listing.stdout) is not None:
            # the containerd store refuses a classic archive that leaves layers out
            # (issue 14): the relayed stream holds every layer for this tree
            return None
        return commands.parse_host_layers(listing.stdout)

    def _plan(self) -> None:
        nodes = [
            Node(m.name, m.host_group, m.relay.can_relay and bool(m.relay.address))
            for m in self.members.values()
        ]
        self.tree = plan_tree(nodes, self.width, self.roots)
        for member in self.members.values():
            member.parent = self.tree.parent[member.name]
            member.children = self.tree.children(member.name)
            member.result.fed_by = member.parent or WORKSTATION

    def _check_results(self, direct: list[HostPlan]) -> None:
        for host in direct:
            self._final(self.results[host.name])
        for member in self.members.values():
            via = member.parent or "the workstation"
            kids = f", relays to {', '.join(member.children)}" if member.children else ""
            member.result.message += f" (check mode; fed by {via}{kids})"
            self._final(member.result)

    def _deploy(self, direct: list[HostPlan]) -> None:
        assert self.tree is not None
        over = threading.Event()
        watcher = threading.Thread(
            target=self._revoke_when_cancelled, args=(over,), name="relay-revoke", daemon=True
        )
        watcher.start()
        try:
            self._deploy_tree(direct)
        finally:
            over.set()
            watcher.join(CLEANUP_TIMEOUT)
            self._send_directly_after_corrupt_entry()  # (every tree host gets its outcome)

    def _send_directly_after_corrupt_entry(self) -> None:
        """The relayed payload was a corrupt cache entry (issue 19: found as it was read, and
        removed): the tree hosts it failed are sent directly, after the sweep, each as a
        direct deploy, which rebuilds the entry and retries once; their line says why."""
        retry, self.retry = self.retry, []
        if not retry or self.cancel.is_set():
            for m in retry:
                self._final(m.result)
            return

        def direct(m: _Member) -> None:
            result = deploy(
                m.host, self.job, self.connect, QuietProgress(self.progress), self.cancel,
                host_locked=True,
            )  # fmt: skip
            result.fed_by = WORKSTATION
            result.message += f" (relay stopped: {self.corrupt}; sent directly)"
            self._final(result)

        with ThreadPoolExecutor(max_workers=min(self.forks, len(retry)) or 1) as pool:
            list(pool.map(direct, retry))

    def _deploy_tree(self, direct: list[HostPlan]) -> None:
        assert self.tree is not None
        members = list(self.members.values())
        with ThreadPoolExecutor(
            max_workers=max(1, len(self.members) + len(direct)), thread_name_prefix="relay"
        ) as pool:
            direct_futures = [pool.submit(self._direct, h) for h in direct]
            try:
                if self.members:
                    self.payload = payload_for(
                        self.job,
                        [
                            [r for r, st in m.result.states.items() if st != "present"]
                            for m in members
                        ],
                        [m.chains for m in members],
                        whole=any(m.engine.kind != engines.DOCKER for m in members),
                    )
                    for m in self.members.values():
                        m.directory = commands.staging_dir(m.host.remote_tmp, self.payload.key)
                        name = f"{commands.ARCHIVE_NAME}{self.payload.extension}"
                        m.final = f"{m.directory}/{name}"
                        m.part = f"{m.final}.part"
                    self.private_key, self.public_key = one_time_key(
                        f"{commands.RELAY_MARK}{self.run_id}"
                    )
                    ready = list(pool.map(self._setup, self.members.values()))
                    futures = [
                        pool.submit(self._member, m)
                        for m, ok in zip(self.members.values(), ready)
                        if ok
                    ]
                    for f in futures:
                        f.result()
            finally:
                self.private_key = b""
                if self.members:
                    list(pool.map(self._sweep, self.members.values()))
            for f in direct_futures:
                f.result()

    def _direct(self, host: HostPlan) -> None:
        result = deploy(host, self.job, self.connect, self.progress, self.cancel)
        result.fed_by = WORKSTATION
        note = self.results[host.name].message
        if "(direct: " in note:
            result.message += " " + note[note.index("(direct: ") :]
        self.results[host.name] = result


__all__ = [
    "DEFAULT_WIDTH",
    "DIRECT",
    "FANOUTS",
    "RELAY",
    "batch_step",
    "known_hosts_lines",
    "one_time_key",
    "payload_for",
    "tree_text",
]
