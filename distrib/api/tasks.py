"""The typed work of a play on each of its hosts.

A play's `Task` is either an engine `Job` (deploy, check, verify: `engine.deploy` runs it) or a
`HostTask`, which runs its own step on each host (commit, backup, registry push/pull, prune,
rollback, keep). `run_task` is the one executor step for both; `shipped_job` finds the Job whose
archive and layer store a task ships (to stop their builds with the run, and to report them).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol, Union

from distrib.api.options import Connector
from distrib.engine import HostResult, Job, Progress, deploy
from distrib.plan import HostPlan


class HostTask(Protocol):
    """A play's work that runs its own step on each host (workflows/steps.py, tidy_tasks.py)."""

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult: ...


Task = Union[Job, HostTask]
Tasks = Mapping[int, Task]  # play index -> the play's task


def run_task(
    host: HostPlan,
    task: Task,
    connect: Connector,
    progress: Progress | None,
    cancel: threading.Event,
) -> HostResult:
    """The executor's step: a Job through the engine's deploy, a HostTask through its own."""
    if isinstance(task, Job):
        return deploy(host, task, connect, progress, cancel)
    return task.run_on(host, connect, progress or Progress(), cancel)


def shipped_job(task: Task | None) -> Job | None:
    """The Job whose archive and layer store `task` ships: a Job itself, a KeepTask's inner
    Job; None for the other host tasks (they build no archive of the run's)."""
    from distrib.tidy_tasks import KeepTask

    if isinstance(task, Job):
        return task
    if isinstance(task, KeepTask):
        return task.inner
    return None


def shipped_variants(tasks: Tasks) -> list[Job]:
    """Every Job the run ships: each codec's of a `compression: auto` play (issue 14)."""
    out: list[Job] = []
    for task in tasks.values():
        job = shipped_job(task)
        if job is not None:
            out.extend(job.variants())
    return out
