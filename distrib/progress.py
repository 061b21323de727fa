"""Progress display. On a terminal: one tqdm bar per host (phase, bytes, rate, ETA), fixed
positions so parallel hosts never garble each other. Elsewhere (CI logs, pipes): one plain line
per host per phase, no escape codes.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import IO

from tqdm import tqdm

from distrib.engine import HostResult, Progress
from distrib.report import host_line
from distrib.units import human_bytes

BAR_FORMAT = (
    "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
)
MAX_BARS = 30  # more hosts than this: one total bar, per-host lines only for outcomes


class LineProgress(Progress):
    """Plain lines to `stream`: `[node1] upload 4.1 MB`, then the host's outcome line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()

    def _say(self, text: str) -> None:
        with self.lock:
            print(text, file=self.stream, flush=True)

    def phase(self, host: str, phase: str) -> None:
        self._say(f"[{host}] {phase}")

    def transfer_started(self, host: str, total: int) -> None:
        self._say(f"[{host}] sending {human_bytes(total)}")

    def finished(self, result: HostResult) -> None:
        self._say(host_line(result))


class BarProgress(Progress):
    """tqdm bars, one per host (or one in total when there are too many hosts)."""

    def __init__(self, hosts: Sequence[str], stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.lock = threading.RLock()
        tqdm.set_lock(self.lock)
        self.per_host = len(hosts) <= MAX_BARS
        width = max((len(h) for h in hosts), default=4)
        self.bars: dict[str, tqdm] = {}  # type: ignore[type-arg]
        self.labels = {h: h.ljust(width) for h in hosts}
        names = hosts if self.per_host else ["total"]
        for position, host in enumerate(names):
            self.bars[host] = tqdm(
                total=0,
                desc=f"{self.labels.get(host, host)} waiting ",
                position=position,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                leave=True,
                file=self.stream,
                dynamic_ncols=True,
                bar_format=BAR_FORMAT,
            )

    def _bar(self, host: str) -> tqdm:  # type: ignore[type-arg]
        return self.bars[host if self.per_host else "total"]

    def phase(self, host: str, phase: str) -> None:
        if self.per_host:
            with self.lock:
                self.bars[host].set_description_str(f"{self.labels[host]} {phase:<8}")

    def transfer_started(self, host: str, total: int) -> None:
        with self.lock:
            bar = self._bar(host)
            if self.per_host:
                bar.reset(total=total)
            else:
                bar.total = (bar.total or 0) + total
                bar.refresh()

    def advance(self, host: str, nbytes: int) -> None:
        with self.lock:
            self._bar(host).update(nbytes)

    def finished(self, result: HostResult) -> None:
        with self.lock:
            if self.per_host:
                bar = self.bars[result.host]
                bar.set_description_str(f"{self.labels[result.host]} {result.status:<8}")
                if not bar.total:
                    bar.total = 1
                    bar.n = 1
                bar.refresh()
            else:
                self.bars["total"].write(host_line(result))

    def close(self) -> None:
        with self.lock:
            for bar in self.bars.values():
                bar.close()


def make_progress(hosts: Sequence[str], stream: IO[str] | None = None) -> Progress:
    stream = stream or sys.stderr
    if stream.isatty():
        return BarProgress(hosts, stream)
    return LineProgress(stream)
