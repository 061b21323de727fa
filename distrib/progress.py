"""Progress display, written from many worker threads at once.

On a terminal (`BarProgress`): one tqdm bar per host (phase, bytes, rate, ETA) at a fixed
position, plus a TOTAL bar; when the hosts do not fit in the terminal's height, only the TOTAL
bar and one line counting hosts per phase (`upload 12 · load 3 · ok 30`). Every draw holds one
lock, and other text (play banners, -vv command logs) goes through `write`, which lifts the bars,
prints, and redraws them, so lines never interleave with a half-drawn bar.

Elsewhere (CI logs, pipes, `-vvv`): `LineProgress`, one plain line per host per phase, no escape
codes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

from tqdm import tqdm

from distrib.engine import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE, Connector, HostResult
from distrib.engine import Progress as _EngineProgress
from distrib.report import host_line, paint, use_colour
from distrib.target import Result, Session, Target
from distrib.units import human_bytes

BAR_FORMAT = (
    "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
)
IDLE_FORMAT = "{desc}"  # before a transfer there are no bytes: no bar, no rate, no ETA
TERMINAL_MARGIN = 4  # lines kept free for the banner, the prompt and a line of output
STATUSES = (OK, CHANGED, FAILED, UNREACHABLE, SKIPPED)
# The phase summary's order: the report's phases with the engine's and the relay's others
# where they happen (issue 16: `layers` came after `load` at 64 hosts)
SUMMARY_ORDER = (
    "lock", "connect", "probe", "layers", "relay setup", "relay", "re-parent",
    "upload", "stream", "rebuild", "checksum", "load", "verify",
)  # fmt: skip

# The -vv log hook: (host, command). It receives exactly the command string sent over the SSH
# channel. Secrets must never be part of a command: a become password (a later issue) travels on
# the channel's stdin only, so it never reaches argv on the host, this log, or the JSON.
CommandLog = Callable[[str, str], None]


class Progress(_EngineProgress):
    """The engine's progress events, plus what the CLI needs: text that must not garble the
    display, a command log for -vv, and close()."""

    def write(self, text: str, file: IO[str] | None = None) -> None:
        print(text, file=file or sys.stdout, flush=True)

    def log(self, host: str, command: str) -> None:
        pass

    def close(self) -> None:
        pass

    def shown(self, result: HostResult) -> bool:
        """Whether `result`'s outcome line was already printed live (then not again at the
        end); a display with bars prints none."""
        return False


class LineProgress(Progress):
    """Plain lines to `stream`: `[node1] upload`; each host's outcome line goes to `outcomes`
    (default `stream`) as it finishes, and only there: the end of the run does not repeat it
    (issue 18: off a terminal each outcome was printed twice)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        verbose: int = 0,
        colour: bool = False,
        *,
        outcomes: IO[str] | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.colour = colour
        self.outcomes = outcomes or self.stream
        self.outcome_colour = colour if outcomes is None else use_colour(outcomes)
        self.lock = threading.Lock()
        self.printed: Counter[str] = Counter()  # outcome lines printed live (plain text)

    def _say(self, text: str, file: IO[str] | None = None) -> None:
        with self.lock:
            print(text, file=file or self.stream, flush=True)

    def write(self, text: str, file: IO[str] | None = None) -> None:
        self._say(text, file or sys.stdout)

    def log(self, host: str, command: str) -> None:
        self._say(f"[{host}] $ {command}")

    def phase(self, host: str, phase: str) -> None:
        self._say(f"[{host}] {phase}")

    def transfer_started(self, host: str, total: int) -> None:
        self._say(f"[{host}] sending {human_bytes(total)}")

    def finished(self, result: HostResult) -> None:
        line = host_line(result, self.verbose, self.outcome_colour)
        with self.lock:
            self.printed[host_line(result, self.verbose)] += 1
            print(line, file=self.outcomes, flush=True)

    def shown(self, result: HostResult) -> bool:
        # by its text: a step that rewrites a result after finishing it prints the new one
        with self.lock:
            key = host_line(result, self.verbose)
            if self.printed[key] <= 0:
                return False
            self.printed[key] -= 1
            return True


def phase_summary(phases: Iterable[str]) -> str:
    """`connect 2 · upload 12 · ok 30`: how many hosts are in each phase or final status,
    in pipeline order, zero counts left out (the one-line view for too many hosts)."""
    counts: dict[str, int] = {}
    for phase in phases:
        phase = phase.split(" from ")[0]  # `relay from node3`: one count for every source
        counts[phase] = counts.get(phase, 0) + 1
    order = ["waiting", *SUMMARY_ORDER, *STATUSES]
    order += sorted(p for p in counts if p not in order)
    return " · ".join(f"{p} {counts[p]}" for p in order if counts.get(p))


def fits(hosts: int, rows: int, margin: int = TERMINAL_MARGIN) -> bool:
    """Whether one bar per host plus the TOTAL bar fit in a terminal of `rows` lines."""
    return hosts + 1 <= rows - margin


class BarProgress(Progress):
    """tqdm bars: one per host plus TOTAL, or TOTAL plus a phase summary when too many hosts."""

    def __init__(
        self,
        hosts: Sequence[str],
        stream: IO[str] | None = None,
        *,
        runs: int | None = None,
        rows: int | None = None,
        colour: bool = False,
    ) -> None:
        self.stream = stream or sys.stderr
        self.colour = colour
        self.lock = threading.RLock()
        tqdm.set_lock(self.lock)  # tqdm's own redraws (refresh, write) take the same lock
        rows = rows if rows is not None else _terminal_rows(self.stream)
        self.per_host = fits(len(hosts), rows)
        self.runs = runs if runs is not None else len(hosts)  # host x play outcomes expected
        self.done = 0
        self.state = dict.fromkeys(hosts, "waiting")
        self.width = max((len(h) for h in [*hosts, "TOTAL"]), default=5)
        self.labels = {h: h.ljust(self.width) for h in hosts}
        self.bars: dict[str, tqdm[Any]] = {}
        self.sending: dict[str, float] = {}  # host -> when its current transfer started
        # Without a bar per host, TOTAL's size is an estimate (issue 16): the bytes of the
        # transfers started so far, plus their mean for each run not started yet (a run that
        # finished without sending counts for nothing). Summed transfers alone read 62 % at the
        # first transfer, 98 % with 2 of 6 hosts not started (tmux, forks 2).
        self.bytes_started = 0
        self.in_transfer: set[str] = set()  # hosts sending in their current run
        self.sent_runs = 0  # finished runs that sent something
        self.quiet_runs = 0  # finished runs that sent nothing
        if self.per_host:
            for position, host in enumerate(hosts):
                self.bars[host] = self._bar(position, f"{self.labels[host]} waiting  ")
        self.total = self._bar(len(self.bars), self._total_desc())
        self.summary = None if self.per_host else self._bar(1, self._summary_desc())

    def _bar(self, position: int, desc: str, fmt: str = IDLE_FORMAT) -> tqdm[Any]:
        return tqdm(
            total=None,
            desc=desc,
            position=position,
            unit="B",
            unit_scale=True,
            unit_divisor=1000,
            leave=True,
            file=self.stream,
            dynamic_ncols=True,
            bar_format=fmt,
            mininterval=0.2,
        )

    def _total_desc(self) -> str:
        return f"{'TOTAL'.ljust(self.width)} {self.done}/{self.runs} "

    def _summary_desc(self) -> str:
        return phase_summary(self.state.values()) or "waiting"

    def _set_state(self, host: str, state: str) -> None:
        self.state[host] = state
        if self.summary is not None:
            self.summary.set_description_str(self._summary_desc())

    def write(self, text: str, file: IO[str] | None = None) -> None:
        # tqdm.write clears every bar, prints, then redraws them (under the shared lock)
        with self.lock:
            tqdm.write(text, file=file or sys.stdout)

    def log(self, host: str, command: str) -> None:
        self.write(f"[{host}] $ {command}", self.stream)

    def phase(self, host: str, phase: str) -> None:
        with self.lock:
            self._set_state(host, phase)
            bar = self.bars.get(host)
            if bar is not None:
                self._freeze_transfer(host, bar)
                bar.set_description_str(f"{self.labels[host]} {phase:<8} ")

    def _freeze_transfer(self, host: str, bar: tqdm[Any]) -> None:
        """A finished transfer keeps its size, time and rate; tqdm's elapsed clock would go on
        through checksum, load and verify and understate the rate."""
        started = self.sending.pop(host, None)
        if started is None:
            return
        seconds = max(time.monotonic() - started, 1e-3)
        text = f"{human_bytes(bar.n)} sent in {seconds:.1f}s ({human_bytes(bar.n / seconds)}/s)  "
        bar.bar_format = "{desc}" + text.replace("{", "{{").replace("}", "}}")

    def transfer_started(self, host: str, total: int) -> None:
        with self.lock:
            bar = self.bars.get(host)
            if bar is not None:
                bar.bar_format = BAR_FORMAT
                bar.reset(total=total)
                self.sending[host] = time.monotonic()
            if self.summary is not None:
                self.bytes_started += total
                self.in_transfer.add(host)
                self._set_total(self._estimate())
            elif not self.total.total:
                self.total.bar_format = BAR_FORMAT
                self.total.reset(total=total)
            else:
                self.total.total += total
                self.total.refresh()

    def _estimate(self) -> int:
        started = self.sent_runs + len(self.in_transfer)
        pending = max(self.runs - self.quiet_runs - started, 0)
        mean = self.bytes_started / started if started else 0
        return max(int(self.bytes_started + mean * pending), int(self.total.n), 1)

    def _set_total(self, total: int) -> None:
        if not self.total.total:
            self.total.bar_format = BAR_FORMAT
            self.total.reset(total=total)
        else:
            self.total.total = total
            self.total.refresh()

    def transfer_more(self, host: str, nbytes: int) -> None:
        with self.lock:
            bar = self.bars.get(host)
            if bar is not None and bar.total:
                bar.total += nbytes
                bar.refresh()
            if self.summary is not None:
                self.bytes_started += nbytes
                self._set_total(self._estimate())
                return
            self.total.total = (self.total.total or 0) + nbytes
            self.total.refresh()

    def advance(self, host: str, nbytes: int) -> None:
        with self.lock:
            bar = self.bars.get(host)
            if bar is not None:
                bar.update(nbytes)
            self.total.update(nbytes)

    def finished(self, result: HostResult) -> None:
        with self.lock:
            self.done += 1
            self._set_state(result.host, result.status)
            if self.summary is not None:
                if result.host in self.in_transfer:
                    self.in_transfer.discard(result.host)
                    self.sent_runs += 1
                else:
                    self.quiet_runs += 1
                if self.total.total:
                    self.total.total = self._estimate()
            self.total.set_description_str(self._total_desc(), refresh=False)
            self.total.refresh()
            bar = self.bars.get(result.host)
            if bar is not None:
                self._freeze_transfer(result.host, bar)
                word = paint(f"{result.status:<8}", result.status, self.colour)
                desc = f"{self.labels[result.host]} {word} "
                if not bar.total:  # nothing was sent: the outcome instead of an empty bar
                    desc += " ".join(result.message.split())
                bar.set_description_str(desc)

    def close(self) -> None:
        with self.lock:
            for host, state in self.state.items():
                bar = self.bars.get(host)
                if state == "waiting" and bar is not None:  # never started: reported skipped
                    word = paint(f"{SKIPPED:<8}", SKIPPED, self.colour)
                    bar.set_description_str(f"{self.labels[host]} {word} ")
            # close in position order: tqdm leaves each bar on its own line, top to bottom
            for bar in [*self.bars.values(), self.total]:
                bar.close()
            if self.summary is not None:
                self.summary.close()


def _terminal_rows(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).lines
    except (OSError, ValueError, AttributeError):
        return 24


def make_progress(
    hosts: Sequence[str],
    stream: IO[str] | None = None,
    *,
    runs: int | None = None,
    verbose: int = 0,
    outcomes: IO[str] | None = None,
) -> Progress:
    """Bars on a terminal, plain lines elsewhere. At -vvv paramiko's debug log shares stderr,
    so plain lines then too (redrawn bars would tear its output apart). Plain lines print each
    host's outcome to `outcomes` (where the run's report goes) as it finishes."""
    stream = stream or sys.stderr
    colour = use_colour(stream)
    if stream.isatty() and verbose < 3:
        return BarProgress(hosts, stream, runs=runs, colour=colour)
    return LineProgress(stream, verbose, colour, outcomes=outcomes)


class _LoggedSession:
    """A Session that reports each command to `log` just before sending it (-vv)."""

    def __init__(self, session: Session, host: str, log: CommandLog) -> None:
        self._session = session
        self._host = host
        self._log = log

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes = b"") -> Result:
        # A become password travels in `stdin`: the log says so, and never shows it.
        if not stdin:
            self._log(self._host, command)
            return self._session.run(command, timeout=timeout)
        self._log(self._host, f"{command}  < become password")
        return self._session.run(command, timeout=timeout, stdin=stdin)

    def upload(
        self,
        command: str,
        chunks: Iterable[bytes],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> Result:
        self._log(self._host, f"{command}  < archive")
        return self._session.upload(command, chunks, on_bytes=on_bytes, timeout=timeout)

    def close(self) -> None:
        self._session.close()

    def __getattr__(self, name: str) -> Any:  # anything else the transport offers
        return getattr(self._session, name)


def logged(connect: Connector, log: CommandLog) -> Connector:
    """Wrap a connector so every remote command is logged as it goes over the wire.

    Done at the session boundary rather than inside the engine, so every step (deploy, check,
    verify and any future executor step) is covered and the engine needs no hook."""

    def connect_logged(target: Target) -> Session:
        return _LoggedSession(connect(target), target.name, log)

    return connect_logged
