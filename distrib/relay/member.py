"""A relay run's shared state and its tree members (issue 9; issue 15: any engine, become).

`_Base` holds what every part of the run shares (the members, the coordinator's condition,
the payload, the run's key) and the small helpers they all use; setup.py and stream.py add
the steps, run.py the orchestration. `why_direct` is the pure rule that keeps a host out of
the tree (the workstation then feeds it, as in direct mode).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from distrib import commands, engines
from distrib.engine import (
    CLEANUP_TIMEOUT,
    FAILED,
    PROBE_TIMEOUT,
    UNREACHABLE,
    Cancelled,
    Connector,
    HostResult,
    Job,
    Progress,
    note_wait,
)
from distrib.errors import CommandError, ConnectError, DistribError, LocalError
from distrib.plan import HostPlan
from distrib.relay.tree import Tree
from distrib.target import Result, Session

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


def unfit(host: HostPlan) -> str:
    """Why `host` cannot be a tree member whatever it holds ("" when it can): the workstation
    feeds it directly. Any engine may (docker, podman, containerd), become or not (issue 15):
    what is relayed is the archive; each member loads it with its own engine."""
    if host.transfer == "stream":
        return "transfer: stream"
    if host.target.connection == "local":  # the workstation itself (issue 17)
        return "connection local"
    if any(c.isspace() or c in "\"'\\%" for c in host.remote_tmp):
        return "remote_tmp unusable in ssh options"
    return ""


def why_direct(
    facts: commands.Facts,
    relay: commands.RelayFacts,
    known: bool,
    tree_codec: str,
    host_codec: str,
    size: int,
) -> str:
    """Why a probed host that needs the images is fed directly ("" : it joins the tree). The
    tree shares ONE stream in `tree_codec` (compression auto picks one every host of a relay
    play can load); a host whose own codec differs, or whose engine cannot read the stream
    and has no tool to unpack it, is sent its own archive directly."""
    if host_codec != tree_codec:
        return f"loads {host_codec}, the tree's stream is {tree_codec}"
    if not facts.can_decode(tree_codec):
        return f"{facts.engine} cannot load the tree's {tree_codec} stream"
    if not relay.can_receive:
        return "no sha256sum on the host"
    if relay.tmp_avail is not None and relay.tmp_avail < size * DISK_MARGIN:
        return "staging space too small"
    if not known:
        return "its host key is not in the workstation's known_hosts"
    return ""


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
    # its own engine (issue 15: podman, containerd, become) and, when sudo asks for one, the
    # password: sent as the load's stdin only (Secret's repr hides it)
    engine: engines.Engine = field(default_factory=engines.Engine)
    secret: engines.Secret | None = None

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def host_group(self) -> str | None:
        value = getattr(self.host, "relay_group", None)
        return str(value) if value not in (None, "") else None


class _Base:
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

    def _engine_run(self, m: _Member, command: str, timeout: float) -> Result:
        return run_as_engine(m.session, command, m.secret, timeout)

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


def run_as_engine(
    session: Session, command: str, secret: engines.Secret | None, timeout: float
) -> Result:
    """An engine command (wrapped by its Engine): sudo's password line, when it needs one, is
    the command's stdin, never its argv, a log or a file (engines.py)."""
    if secret is not None:
        return session.run(command, timeout=timeout, stdin=secret.line())
    return session.run(command, timeout=timeout)


def _failed(result: Result) -> Result:
    """`result` as a failure (a command that printed nothing it should have)."""
    return Result(result.command, result.exit_status or 1, result.stdout, result.stderr)


def _ok(host: str, result: Result, what: str) -> Result:
    if not result.ok:
        raise CommandError(
            host, result.command, result.exit_status, result.stdout, result.stderr, what=what
        )
    return result
