"""The kinds of run: a playbook rollout, a verify, and a given task on each play's hosts (the
workflows, tidy tasks and restore). Each is planned first (`plan()`: no connection; the secrets
are read then, unless only the hosts are listed) and run once (`run(progress)`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from distrib.api.inputs import Inputs, local_images
from distrib.api.options import Options, Secrets
from distrib.api.runner import ProgressFactory, RunResult, execute, make_connector, no_extra
from distrib.api.tasks import Task, Tasks
from distrib.plan import Plan

__all__ = ["Rollout", "Run", "TaskRun", "Verify"]


class Run:
    """A playbook's plan, then its tasks on the planned hosts."""

    def __init__(self, options: Options, playbook: Any) -> None:
        self.options = options
        self.playbook = playbook
        self.inputs = Inputs(options)
        self._plan: Plan | None = None
        self._secrets: Secrets | None = None

    def plan(self) -> Plan:
        """The plan (hosts, batches, settings per play); ConfigError for any input problem.
        Then the secrets are read (prompts come after input errors, before any connection),
        unless the run only lists its hosts."""
        if self._plan is None:
            self._plan = self.inputs.plan(self.playbook)
            if not self.options.list_hosts:
                self.secrets()
        return self._plan

    def secrets(self) -> Secrets:
        if self._secrets is None:
            self._secrets = self.options.secrets()
            if self.options.connect is None:  # SSH: encrypted keys are opened there
                from distrib import transport

                passphrase = self._secrets.key_passphrase
                transport.set_key_passphrase(passphrase.reveal() if passphrase else None)
        return self._secrets

    def run(self, progress: ProgressFactory | None = None) -> RunResult:
        plan = self.plan()
        return self._run(plan, self.secrets(), progress)

    def _run(self, plan: Plan, secrets: Secrets, progress: ProgressFactory | None) -> RunResult:
        raise NotImplementedError


class TaskRun(Run):
    """Each play's given task on its hosts (`tasks`: play index -> Task); `extra()` adds keys
    to the --json document (backups, removed tags)."""

    def __init__(
        self,
        options: Options,
        playbook: Any,
        tasks: Tasks,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(options, playbook)
        self.tasks = tasks
        self.extra = extra or no_extra

    def _run(self, plan: Plan, secrets: Secrets, progress: ProgressFactory | None) -> RunResult:
        return execute(self.options, plan, self.tasks, secrets, progress, self.extra)


class Verify(Run):
    """Whether hosts hold `images` with the workstation's content (nothing shipped)."""

    def __init__(self, options: Options, images: Sequence[str], hosts: str = "all") -> None:
        from distrib.playbook import Playbook, adhoc_play

        play = adhoc_play(hosts, list(images), name="verify")
        super().__init__(options, Playbook("<command line>", (play,)))

    def _run(self, plan: Plan, secrets: Secrets, progress: ProgressFactory | None) -> RunResult:
        from distrib.engine import VERIFY, Job

        found = local_images(self.playbook, sys.stdout)
        play = self.playbook.plays[0]
        images = tuple(found[s.ref] for s in play.images)
        job = Job(images, None, True, VERIFY)
        return execute(self.options, plan, {0: job}, secrets, progress)


class Rollout(Run):
    """A playbook's rollout (or its check): local images (pulled, committed), one archive and
    layer store per play, registry plays, `keep`, then every host in parallel."""

    def _run(self, plan: Plan, secrets: Secrets, progress: ProgressFactory | None) -> RunResult:
        from distrib.engine import KeptSessions

        kept = KeptSessions()  # the probing pass's sessions, reused by the deploy (issue 16)
        try:
            return self._run_plays(plan, secrets, progress, kept)
        finally:
            kept.close()  # those no step asked for (a host left out, a run cut short)

    def _run_plays(
        self, plan: Plan, secrets: Secrets, progress: ProgressFactory | None, kept: Any
    ) -> RunResult:
        from distrib import archive as archive_mod
        from distrib.api.jobs import play_jobs
        from distrib.workflows import flow as workflow_flow

        check = self.options.check
        out = self.options.out or sys.stdout
        connect = make_connector(self.options, secrets)
        archive_mod.ensure_cache_dir()  # archives and layers are written there (even by plan)
        found = local_images(self.playbook, out, check)
        # plays with a commit step or a registry target (issue 7): resolved before connecting,
        # then each commit runs and its image joins the local images
        flow = workflow_flow.prepare(plan, self.inputs.inventory, check)
        plan = flow.run_commits(plan, found, out, connect)
        # one archive per play: saved + compressed once, on first use, while hosts already
        # receive its first bytes (cached across runs by image identity and codec)
        jobs = play_jobs(plan, found, connect, kept, out, check)
        # a registry play becomes its push play and its pull play (workflows/flow.py)
        plan, expanded, _ = flow.expand(plan, jobs)
        tasks: dict[int, Task] = dict(expanded)
        if not check and any(p.play.keep for p in plan.plays):  # issue 18: keep N tags per repo
            from distrib.tidy_tasks import with_keep

            tasks = with_keep(plan.plays, tasks)
        return execute(self.options, plan, tasks, secrets, progress, lambda: flow.json, kept)
