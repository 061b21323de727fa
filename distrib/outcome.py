"""A host's outcome and the progress events a run reports: records shared by every per-host
step (deploy, relay, workflow steps, tidy tasks). No I/O. `distrib.engine` re-exports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from distrib.commands import Facts
from distrib.errors import DistribError
from distrib.target import Session, Target

OK = "ok"
CHANGED = "changed"
FAILED = "failed"
UNREACHABLE = "unreachable"
SKIPPED = "skipped"

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
    facts: Facts | None = None  # the probe's answer: engine, version, store (issue 14)

    @property
    def failed(self) -> bool:
        return self.status in (FAILED, UNREACHABLE)
