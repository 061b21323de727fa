"""Runs a plan: plays in order, batches in order, hosts of a batch in parallel (bounded by forks).

One failed host never stops the others; a play stops starting new batches once its failure limit
is exceeded (hosts already done stay done).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from distrib.engine import (
    FAILED,
    SKIPPED,
    UNREACHABLE,
    Connector,
    HostResult,
    Progress,
    deploy,
)
from distrib.errors import (
    EXIT_HOST_FAILED,
    EXIT_HOST_UNREACHABLE,
    EXIT_OK,
    EXIT_PLAY_ABORTED,
)
from distrib.plan import STOP_LIMIT, STOP_NONE, HostPlan, Plan, PlayPlan, batch_verdict

# The per-host step: (host, job, connect, progress, cancel) -> HostResult. `engine.deploy` by
# default; other workflows (registry pull, backup) plug in their own and reuse batching.
HostStep = Callable[[HostPlan, Any, Connector, "Progress | None", threading.Event], HostResult]
# A whole-batch runner (relay fan-out, issue 9): (play, batch, job, connect, progress, cancel)
# -> the batch's results, or None to run that batch host by host with `step`.
BatchStep = Callable[
    [PlayPlan, tuple[HostPlan, ...], Any, Connector, "Progress | None", threading.Event],
    "list[HostResult] | None",
]


@dataclass
class PlayResult:
    name: str
    hosts: list[HostResult] = field(default_factory=list)
    aborted: bool = False  # a failure limit was exceeded (exit 8)
    stopped: bool = False  # no new batches were started
    abort_reason: str = ""


@dataclass
class RunResult:
    plays: list[PlayResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """ansible-playbook's codes: 8 a play aborted, 4 unreachable, 2 failed, 0 all good."""
        results = [h for p in self.plays for h in p.hosts]
        if any(p.aborted for p in self.plays):
            return EXIT_PLAY_ABORTED
        if any(h.status == UNREACHABLE for h in results):
            return EXIT_HOST_UNREACHABLE
        if any(h.status == FAILED for h in results):
            return EXIT_HOST_FAILED
        return EXIT_OK


def run_plan(
    plan: Plan,
    jobs: Mapping[int, Any],
    connect: Connector,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_play: Callable[[PlayPlan], None] | None = None,
    step: HostStep = deploy,
    batch_step: BatchStep | None = None,
) -> RunResult:
    """Execute each play's job (`jobs[index]`: an engine Job, or any task `step` runs, see
    api.tasks) on its hosts; collect every outcome."""
    cancel = cancel or threading.Event()
    run = RunResult()
    for index, play_plan in enumerate(plan.plays):
        if on_play:
            on_play(play_plan)
        run.plays.append(
            _run_play(play_plan, jobs[index], connect, progress, cancel, step, batch_step)
        )
        if cancel.is_set():
            run.interrupted = True
            break
    return run


def _run_play(
    play_plan: PlayPlan,
    job: Any,
    connect: Connector,
    progress: Progress | None,
    cancel: threading.Event,
    step: HostStep,
    batch_step: BatchStep | None = None,
) -> PlayResult:
    play = play_plan.play
    result = PlayResult(play.name)
    for number, batch in enumerate(play_plan.batches, 1):
        if result.stopped or cancel.is_set():
            result.hosts.extend(_skipped(batch, result.abort_reason or "interrupted"))
            continue
        whole = batch_step(play_plan, batch, job, connect, progress, cancel) if batch_step else None
        outcomes = (
            whole
            if whole is not None
            else _run_batch(batch, job, connect, progress, cancel, play_plan.forks, step)
        )
        result.hosts.extend(outcomes)
        failed = sum(1 for r in outcomes if r.failed)
        verdict = batch_verdict(failed, len(batch), play.max_fail_percentage, play.any_errors_fatal)
        if verdict != STOP_NONE:
            result.stopped = True
            result.aborted = verdict == STOP_LIMIT
            why = (
                "any_errors_fatal"
                if play.any_errors_fatal
                else (
                    f"max_fail_percentage {play.max_fail_percentage:g}"
                    if verdict == STOP_LIMIT
                    else verdict
                )
            )
            result.abort_reason = f"batch {number}: {failed}/{len(batch)} host(s) failed ({why})"
    return result


def _run_batch(
    batch: tuple[HostPlan, ...],
    job: Any,
    connect: Connector,
    progress: Progress | None,
    cancel: threading.Event,
    forks: int,
    step: HostStep,
) -> list[HostResult]:
    with ThreadPoolExecutor(
        max_workers=max(1, min(forks, len(batch))), thread_name_prefix="host"
    ) as pool:
        futures = [pool.submit(step, host, job, connect, progress, cancel) for host in batch]
        return [f.result() for f in futures]


def _skipped(batch: tuple[HostPlan, ...], reason: str) -> list[HostResult]:
    return [HostResult(h.name, SKIPPED, f"not started: {reason}") for h in batch]
