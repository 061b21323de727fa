"""Per-host steps of the workflows, plugged into executor.run_plan like engine.deploy: each
drives one host and never raises for a host problem; every outcome is a HostResult. They run
on docker, podman and containerd hosts, as the become user (issue 15 item 2); a step an engine
cannot do is refused in one line before anything is changed (workflows/hostcmds.py says which).

- `CommitTask` (workflows/commit.py): commit a container on the host
- `BackupTask` (workflows/backup.py): commit containers, save | compress ON the host, stream the
  bytes back to the workstation (sha256 on both ends), keep the archive and a metadata file
- `PushTask` (workflows/registry.py): ship the play's archive to the registry host
  (engine.deploy), tag, push
- `PullTask` (workflows/registry.py): pull from the registry on each host, tag, verify by
  content identity
- restore is engine.deploy of the backup archive (workflows/cli.py)

A task object is the play's "job"; `dispatch` is the executor step that runs either a task or
the engine's deploy job. This module keeps the names the CLI and flow.py build tasks by.
"""

from __future__ import annotations

import threading
from typing import Any

from distrib.engine import Connector, HostResult, Progress, deploy
from distrib.plan import HostPlan
from distrib.workflows.backup import (
    DOWNLOAD_ATTEMPTS,
    SAVE_TIMEOUT,
    BackupRecord,
    BackupTask,
    HashingSink,
    archived_config_digest,
    archives_extension,
    fetch_limit,
)
from distrib.workflows.commit import FETCH_LEVEL, CommitTask, Noted, commit_and_fetch
from distrib.workflows.frame import (
    CLEANUP_TIMEOUT,
    COMMIT_TIMEOUT,
    PROBE_TIMEOUT,
    DownloadSession,
    HostTask,
    Remote,
    run_step,
)
from distrib.workflows.registry import (
    REGISTRY_TIMEOUT,
    Credentials,
    PullTask,
    PushOutcome,
    PushTask,
    RegistryTarget,
)

__all__ = [
    "CLEANUP_TIMEOUT",
    "COMMIT_TIMEOUT",
    "DOWNLOAD_ATTEMPTS",
    "FETCH_LEVEL",
    "PROBE_TIMEOUT",
    "REGISTRY_TIMEOUT",
    "SAVE_TIMEOUT",
    "BackupRecord",
    "BackupTask",
    "CommitTask",
    "Credentials",
    "DownloadSession",
    "HashingSink",
    "HostTask",
    "Noted",
    "Progress",
    "PullTask",
    "PushOutcome",
    "PushTask",
    "RegistryTarget",
    "Remote",
    "archived_config_digest",
    "archives_extension",
    "commit_and_fetch",
    "dispatch",
    "fetch_limit",
    "run_step",
]


def dispatch(
    host: HostPlan,
    job: Any,
    connect: Connector,
    progress: Progress | None,
    cancel: threading.Event,
) -> HostResult:
    """The executor step for playbooks that mix workflow plays with ordinary ones."""
    if hasattr(job, "run_on"):
        task: HostTask = job
        return task.run_on(host, connect, progress or Progress(), cancel)
    return deploy(host, job, connect, progress, cancel)
