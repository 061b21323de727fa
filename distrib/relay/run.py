"""Relay fan-out at run time (issue 9): one batch of a `fanout: relay` play.

1. Probe every host (the engine's own check: identity, decode, disk preflight). Up-to-date
   hosts are `ok` and are left out of the tree; so are hosts that cannot take part (no
   staging space, another engine, no known_hosts entry to hand over): the workstation feeds
   those directly, as in direct mode.
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

import contextlib
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from distrib import commands, local
from distrib.engine import (
    CHANGED,
    CHECK,
    CLEANUP_TIMEOUT,
    DEPLOY,
    FAILED,
    LOAD_TIMEOUT,
    OK,
    PROBE_TIMEOUT,
    UNREACHABLE,
    VERIFY,
    Cancelled,
    Connector,
    HostResult,
    Job,
    Progress,
    QuietProgress,
    deploy,
    lock_host,
    note_wait,
)
from distrib.errors import (
    CommandError,
    ConnectError,
    CorruptEntry,
    DistribError,
    HostError,
    LocalError,
    TransferError,
)
from distrib.plan import HostPlan, PlayPlan
from distrib.relay import fanout
from distrib.relay.tree import WORKSTATION, Node, Tree, draw, plan_tree
from distrib.target import Result, Session
from distrib.units import human_bytes

DIRECT = "direct"
RELAY = "relay"
FANOUTS = (DIRECT, RELAY)
DEFAULT_WIDTH = 3

CHECKSUM_TIMEOUT = 900.0
WATCH_SECONDS = 5.0  # one remote wait per host per this long: no polling traffic to speak of
START_GRACE = 15.0  # beyond the parents' connect timeouts, for a child's stream to start
REFEEDS = 3  # re-parenting attempts per host before it fails
KEY_HOURS = 2  # authorized_keys expiry-time: a crashed workstation's entries die anyway
DISK_MARGIN = 1.1

# member states (the coordinator's view of who can feed whom)
RECEIVING = "receiving"  # in the planned stream
WAITING = "waiting"  # cut off: looking for a source
FEEDING = "feeding"  # being re-fed (from a host or the workstation)
COMPLETE = "complete"  # holds a checked copy: may feed others
BROKEN = "broken"  # gave up


class Payload(Protocol):
    """What is relayed: today the play's archive. The seam for the layer store (issue 8): an
    archive of the union of the layers the tree's hosts lack (layerstore.AssembledArchive has
    this interface; docker load takes an archive holding layers a host already has)."""

    @property
    def key(self) -> str: ...
    @property
    def extension(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size_hint(self) -> int: ...
    def prefix_sha256(self, nbytes: int) -> str: ...
    def chunks(self, offset: int = 0) -> Iterator[bytes]: ...


def payload_for(
    job: Job,
    missing: Sequence[Sequence[str]],
    chains: Sequence[set[tuple[str, ...]] | None],
) -> Payload:
    """The one stream every tree host receives. Without a layer store: the play's archive.
    With one (delta, issue 8): the images some host lacks, with the layers whose chain at
    least one host lacks (the union of what they lack: a layer is left out only when every
    host holds its chain, as docker load skips layers a host already has). `missing[i]` and
    `chains[i]` are host i's missing refs and layer chains (None: unknown, send all layers)."""
    if job.store is None:
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


# --- known_hosts lines handed to relaying hosts ------------------------------------------------


def known_hosts_lines(address: str, port: int, path: str | None) -> list[str]:
    """The workstation's known_hosts lines for one host (hashed entries included), via
    `ssh-keygen -F`; [] when the host is not known (it is then never relayed to)."""
    name = address if port == 22 else f"[{address}]:{port}"
    chosen = os.path.expanduser(path or "~/.ssh/known_hosts")
    if not os.path.exists(chosen):
        return []
    out = local.run(["ssh-keygen", "-F", name, "-f", chosen], check=False, timeout=30)
    return [
        line.strip()
        for line in out.stdout.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def one_time_key(comment: str) -> tuple[bytes, str]:
    """A fresh ed25519 key pair (private key bytes, public key line). ssh-keygen writes into
    a private temp dir that is removed before this returns: the key lives in memory only."""
    directory = tempfile.mkdtemp(prefix="distrib-relay-")
    try:
        path = os.path.join(directory, "key")
        local.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
            timeout=30,
            what="ssh-keygen (relay key)",
        )
        with open(path, "rb") as fh:
            private = fh.read()
        with open(path + ".pub", encoding="ascii") as fh:
            public = fh.read().strip()
        return private, public
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- the run -------------------------------------------------------------------------------------


@dataclass
class _Member:
    host: HostPlan
    result: HostResult
    facts: commands.Facts
    relay: commands.RelayFacts
    known: list[str]  # the workstation's known_hosts lines for this host
    session: Session
    directory: str = ""
    part: str = ""
    final: str = ""
    parent: str | None = None
    children: list[str] = field(default_factory=list)
    state: str = RECEIVING
    feeds: int = 0  # re-parented hosts it is feeding right now
    has_key: bool = False
    chains: set[tuple[str, ...]] | None = None  # layer chains held (delta), None: unknown
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def host_group(self) -> str | None:
        value = getattr(self.host, "relay_group", None)
        return str(value) if value not in (None, "") else None


class _Relay:
    def __init__(
        self,
        batch: tuple[HostPlan, ...],
        job: Job,
        connect: Connector,
        progress: Progress,
        cancel: threading.Event,
        forks: int,
        width: int,
        roots: int = 1,
    ) -> None:
        self.batch = batch
        self.job = job
        self.connect = connect
        self.progress = progress
        self.cancel = cancel
        self.forks = max(1, forks)
        self.width = width
        self.roots = roots  # ungrouped hosts the workstation feeds (issue 16: one by default)
        self.run_id = secrets.token_hex(8)
        self.members: dict[str, _Member] = {}
        self.results: dict[str, HostResult] = {}
        self.cond = threading.Condition()
        self.bad_sources: set[str] = set()
        self.public_key = ""
        self.private_key = b""
        self.payload: Payload | None = None
        self.tree: Tree | None = None
        self.started = time.monotonic()
        self.corrupt = ""  # a corrupt cache entry the payload was read from (issue 19)
        self.retry: list[_Member] = []  # tree hosts it failed: sent directly afterwards
        # host locks (issue 19): name -> (the session holding it, its release, seconds waited)
        self.locks: dict[str, tuple[Session, Callable[[], None] | None, float]] = {}

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
        probe_job = Job(
            self.job.images,
            None,
            self.job.verify,
            CHECK,
            self.job.codec,
            self.job.facts,
            self.job.store,
            self.job.become_password,
        )
        checked = deploy(host, probe_job, self.connect, Progress(), self.cancel)
        if checked.status != CHANGED:
            self._final(checked)
            return checked
        self.results[host.name] = checked
        why = self._unfit(host)
        if why:
            checked.fed_by = WORKSTATION
            checked.message += f" (direct: {why})"
            return None
        try:
            session = self.connect(host.target)
        except DistribError as exc:
            return self._fail(checked, exc)
        try:
            facts = commands.parse_probe(
                _ok(
                    host.name,
                    session.run(
                        commands.probe(list(host.docker), host.remote_tmp), timeout=PROBE_TIMEOUT
                    ),
                    "probe",
                ).stdout
            )
            relay = commands.parse_relay_probe(
                _ok(
                    host.name,
                    session.run(commands.relay_probe(host.remote_tmp), timeout=PROBE_TIMEOUT),
                    "relay probe",
                ).stdout
            )
            chains = None
            if self.job.store is not None:
                listing = session.run(
                    commands.host_layers(
                        list(host.docker), facts.store == commands.CONTAINERD_STORE
                    ),
                    timeout=PROBE_TIMEOUT,
                )
                chains = commands.parse_host_layers(listing.stdout) if listing.ok else None
                if commands.parse_host_blobs(listing.stdout) is not None:
                    # the containerd store refuses a classic archive that leaves layers
                    # out (issue 14): the relayed stream holds every layer for this tree
                    chains = None
        except DistribError as exc:
            session.close()
            return self._fail(checked, exc)
        known = known_hosts_lines(host.target.address, host.target.port, host.target.known_hosts)
        size = (
            self.job.archive.size_hint if self.job.archive else sum(i.size for i in self.job.images)
        )
        why = (
            "no sha256sum on the host"
            if not relay.can_receive
            else "staging space too small"
            if relay.tmp_avail is not None and relay.tmp_avail < size * DISK_MARGIN
            else "its host key is not in the workstation's known_hosts"
            if not known
            else ""
        )
        if why:
            session.close()
            checked.fed_by = WORKSTATION
            checked.message += f" (direct: {why})"
            return None
        return _Member(host, checked, facts, relay, known, session, chains=chains)

    @staticmethod
    def _unfit(host: HostPlan) -> str:
        if host.transfer == "stream":
            return "transfer: stream"
        if host.target.connection == "local":  # the workstation itself (issue 17)
            return "connection local"
        if getattr(host, "engine", "docker") != "docker":
            return f"engine {getattr(host, 'engine', '?')}"
        if getattr(host, "become", None) is not None:
            return "become"
        if any(c.isspace() or c in "\"'\\%" for c in host.remote_tmp):
            return "remote_tmp unusable in ssh options"
        return ""

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

    def _revoke_when_cancelled(self, over: threading.Event) -> None:
        """On SIGINT/SIGTERM, before anything else: every tree host drops the run's
        authorized_keys entries at once, over the session holding its host lock (no connect
        to wait for), while the hosts' own steps still wind down; the final sweep does it
        again. The 30 s grace of an interrupted run is then spent on the rest (issue 19)."""
        while not over.is_set():
            if self.cancel.wait(0.2):
                break
        if over.is_set() or not self.members:
            return

        def revoke(m: _Member) -> None:
            held = self.locks.get(m.name)
            session = held[0] if held is not None else m.session
            with contextlib.suppress(Exception):  # every host is tried; the sweep follows
                session.run(commands.relay_unauthorize(self.run_id), timeout=CLEANUP_TIMEOUT)

        with ThreadPoolExecutor(max_workers=len(self.members), thread_name_prefix="revoke") as pool:
            list(pool.map(revoke, list(self.members.values())))

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

    # -- setup ---------------------------------------------------------------------------------

    def _child_argv(self, parent: _Member, child: _Member) -> list[str]:
        t = child.host.target
        return commands.relay_ssh(
            t.address,
            t.port,
            child.relay.user,
            f"{parent.directory}/{commands.RELAY_KEY}",
            f"{parent.directory}/{commands.RELAY_KNOWN_HOSTS}",
            t.connect_timeout,
        )

    def _receive_command(self, m: _Member) -> str:
        kids = [self._child_argv(m, self.members[c]) for c in m.children]
        return commands.relay_receive(m.directory, m.part, kids)

    def _setup(self, m: _Member) -> bool:
        """Staging dir, relay files and the authorized_keys entry of one host; False (and a
        failed result) when it cannot be set up: its children then re-parent."""
        try:
            self.progress.phase(m.name, "relay setup")
            s = m.session
            assert self.payload is not None
            out = self._run(
                m,
                commands.make_staging(m.host.remote_tmp, self.payload.key, m.part),
                "creating the private staging dir",
            )
            try:
                commands.parse_staging(out.stdout)
            except commands.UnsafeTmp as exc:
                raise HostError(
                    m.name,
                    f"remote_tmp {m.host.remote_tmp} is not safe to stage archives in: "
                    f"{exc.problem}; nothing was sent",
                ) from None
            self._run(m, commands.relay_reset(m.directory, m.part), "resetting the staging dir")
            if m.children:
                self._install_key(m, s)
            if m.parent is not None:
                parent = self.members[m.parent]
                self._run(
                    m,
                    commands.relay_authorize(
                        commands.relay_options(parent.relay.address, self._receive_command(m)),
                        self.public_key,
                        self.run_id,
                        KEY_HOURS,
                    ),
                    "authorizing the parent's key",
                )
            return True
        except DistribError as exc:
            self._fail(m.result, exc)
            self._set_state(m, BROKEN)
            return False

    def _install_key(self, m: _Member, session: Session) -> None:
        """The run's private key and the known_hosts lines of every tree host of its group,
        into the host's private staging dir (0600), over stdin."""
        with self.cond:
            if m.has_key:
                return
        lines = [
            line
            for other in self.members.values()
            if other.host_group == m.host_group and other is not m
            for line in other.known
        ]
        for name, data in (
            (commands.RELAY_KEY, self.private_key),
            (commands.RELAY_KNOWN_HOSTS, "".join(f"{x}\n" for x in lines).encode()),
        ):
            if not data:
                raise HostError(m.name, "the run's key is gone (interrupted)")
            sent = session.upload(
                commands.relay_install(m.directory, name), [data], timeout=PROBE_TIMEOUT
            )
            _ok(m.name, sent, f"installing {name}")
        with self.cond:
            m.has_key = True

    # -- one tree host -------------------------------------------------------------------------

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
                load = commands.load(
                    list(m.host.docker), m.final, codec, m.facts.engine_reads(codec)
                )
                out = m.session.run(
                    commands.checked_load(m.part, m.final, self.payload.sha256, load),
                    timeout=CHECKSUM_TIMEOUT + LOAD_TIMEOUT,
                )
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
        if not loaded.ok and self.job.store is not None:
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
        _ok(m.name, loaded, "docker load")
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
            m.host, Job(self.job.images, None, True, VERIFY), self.connect, Progress(), self.cancel
        )
        result.timings["verify"] = round(time.monotonic() - t, 3)
        result.images, result.states = checked.images, checked.states
        if checked.status != OK:
            result.status = checked.status if checked.status == UNREACHABLE else FAILED
            result.error = checked.error
            result.message = f"after loading: {checked.message} ({how})"
            return
        result.message = f"loaded and verified {n} image(s) ({how})"

    # -- the final sweep -----------------------------------------------------------------------

    def _sweep(self, m: _Member) -> None:
        """Drop every authorized_keys entry of the run first (issue 19: what matters most if
        the grace of an interrupted run runs out), stop any pipeline left, remove the staging
        dir (archive, key, known_hosts), whatever happened: over the session holding the
        host lock (no connect to wait for), else (or when that link is gone) a fresh one."""
        held = self.locks.get(m.name)
        if held is not None:
            try:
                self._sweep_over(m, held[0])
                return
            except ConnectError:
                pass  # that link is gone: a fresh one
            except DistribError as exc:
                m.result.message += f" (relay cleanup failed: {exc.message})"
                return
        try:
            session = self.connect(m.host.target)
        except DistribError as exc:
            m.result.message += f" (relay cleanup impossible: {exc.message})"
            return
        try:
            self._sweep_over(m, session)
        except DistribError as exc:
            m.result.message += f" (relay cleanup failed: {exc.message})"
        finally:
            session.close()

    def _sweep_over(self, m: _Member, session: Session) -> None:
        for command in (
            commands.relay_unauthorize(self.run_id),
            commands.relay_stop(m.directory),
            commands.cleanup(m.directory),
        ):
            out = session.run(command, timeout=CLEANUP_TIMEOUT)
            if not out.ok:
                m.result.message += f" (relay cleanup: {out.stderr.strip()[-200:]})"

    # -- helpers -------------------------------------------------------------------------------

    def _chunks(self, offset: int) -> Iterator[bytes]:
        assert self.payload is not None
        try:
            for chunk in self.payload.chunks(offset):
                if self.cancel.is_set():
                    raise Cancelled("interrupted during upload")
                yield chunk
        except OSError as exc:  # the workstation's file, not the link (transport: lost)
            raise LocalError(f"reading the relayed archive failed: {exc}") from None

    def _count(self, m: _Member, nbytes: int) -> None:
        m.result.bytes_sent += nbytes
        self.progress.advance(m.name, nbytes)

    def _run(self, m: _Member, command: str, what: str, timeout: float = PROBE_TIMEOUT) -> Result:
        return _ok(m.name, m.session.run(command, timeout=timeout), what)

    def _quietly(self, m: _Member, command: str) -> None:
        with contextlib.suppress(DistribError):  # the final sweep tries again, fresh
            m.session.run(command, timeout=CLEANUP_TIMEOUT)

    def _set_state(self, m: _Member, state: str) -> None:
        with self.cond:
            m.state = state
            self.cond.notify_all()

    def _fail(self, result: HostResult, exc: DistribError) -> HostResult:
        result.status = UNREACHABLE if isinstance(exc, ConnectError) else FAILED
        result.error, result.message = exc, exc.message
        return result

    def _final(self, result: HostResult) -> None:
        held = self.locks.get(result.host)
        if held is not None:
            note_wait(result, held[2])
        self.results[result.host] = result
        self.progress.finished(result)


def _failed(result: Result) -> Result:
    """`result` as a failure (a command that printed nothing it should have)."""
    return Result(result.command, result.exit_status or 1, result.stdout, result.stderr)


def _ok(host: str, result: Result, what: str) -> Result:
    if not result.ok:
        raise CommandError(
            host, result.command, result.exit_status, result.stdout, result.stderr, what=what
        )
    return result


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
