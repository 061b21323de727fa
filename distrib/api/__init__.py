"""distrib as a library: what the command line runs, without parsing or printing.

    from distrib import api

    run = api.Rollout(api.Options(inventory=["hosts.yml"]), Playbook.load("site.yml"))
    result = run.run()            # every host's outcome: result.hosts, result.exit_code

`Options` are a run's inputs (the flags); `Secrets` the one holder of its passwords; a run kind
(`Rollout`, `Verify`, `TaskRun`) plans (`plan()`, no connection) and runs (`run(progress)`),
returning a `RunResult` the caller reports (distrib.cli prints it as ansible-playbook does).
"""

from __future__ import annotations

from distrib.api.inputs import Inputs, ansible_cfg, has_inventory, keep_cache_in_bounds
from distrib.api.options import Connector, Options, Secrets
from distrib.api.runner import ProgressFactory, RunResult, write_reports
from distrib.api.runs import Rollout, Run, TaskRun, Verify
from distrib.api.tasks import HostTask, Task, Tasks, run_task

__all__ = [
    "Connector",
    "HostTask",
    "Inputs",
    "Options",
    "ProgressFactory",
    "Rollout",
    "Run",
    "RunResult",
    "Secrets",
    "Task",
    "TaskRun",
    "Tasks",
    "Verify",
    "ansible_cfg",
    "has_inventory",
    "keep_cache_in_bounds",
    "run_task",
    "write_reports",
]
