"""Per-host steps that keep hosts tidy (issue 18, item 4), run by executor.run_plan through
`workflows.steps.dispatch` like the workflow tasks: each drives one host, never raises for a
host problem, and reports a HostResult (so recap, --json and exit codes are `run`'s).

- `KeepTask` (`keep: N`, `push --keep N`): records what each shipped tag named before
  (`REPO:distrib-prev-TAG`), runs the ordinary deploy, then - only after a successful,
  verified rollout - removes the older tags of the repositories just shipped.
- `PruneTask` (`distrib prune`): the same removal without shipping; `--check` lists only.
- `RollbackTask` (`distrib rollback`): re-point a tag to its previous version, verified.

The decisions and the commands are pure (distrib/tidy.py); this module only runs them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from distrib import commands, engines, tidy
from distrib.engine import (
    CHANGED,
    FAILED,
    OK,
    PRESENT,
    UNREACHABLE,
    Connector,
    HostResult,
    Job,
    Progress,
    QuietProgress,
    deploy,
    engine_of,
    holding_host_lock,
    image_state,
    lock_host,
    note_wait,
)
from distrib.errors import CommandError, ConnectError, DistribError, HostError
from distrib.plan import HostPlan
from distrib.refs import ImageRef
from distrib.target import Session

TIMEOUT = 120.0


class _Host:
    """One host's engine over one session, as the engine user (become)."""

    def __init__(self, host: HostPlan, session: Session, secret: engines.Secret | None) -> None:
        self.host = host
        self.session = session
        self.engine = engine_of(host)
        self.stdin = b""
        if host.become is not None:
            self._become(host.become, secret)

    @property
    def kind(self) -> str:
        return self.engine.kind

    @property
    def argv(self) -> list[str]:
        return self.engine.ctr if self.kind == engines.CONTAINERD else list(self.engine.argv)

    def _become(self, become: engines.Become, secret: engines.Secret | None) -> None:
        out = self.run(engines.become_check(become), "checking sudo", wrap=False)
        state, words = engines.parse_become_check(out)
        if state == engines.NOPASSWD:
            return
        if state != engines.NEEDS_PASSWORD or secret is None:
            raise HostError(
                self.host.name,
                f"become: cannot run the engine as {become.user}: {words or 'no password given'}",
                hint="pass --ask-become-pass or --become-password-file FILE, or a NOPASSWD rule",
            )
        self.engine = replace(self.engine, password=True)
        self.stdin = secret.line()

    def run(self, command: str, what: str, wrap: bool = True) -> str:
        script = self.engine.wrap(command) if wrap else command
        if self.stdin:
            result = self.session.run(script, timeout=TIMEOUT, stdin=self.stdin)
        else:
            result = self.session.run(script, timeout=TIMEOUT)
        if not result.ok:
            raise CommandError(
                self.host.name, script, result.exit_status, result.stdout, result.stderr, what=what
            )
        return result.stdout

    def images(self) -> tidy.HostImages:
        """Tags, their images and creation times, and the images containers use."""
        if self.kind != engines.CONTAINERD:
            return tidy.parse_listing(self.run(tidy.listing(self.argv), "listing images"))
        targets, used = tidy.parse_ctr_listing(
            self.run(tidy.ctr_listing(self.argv), "listing images")
        )
        created = self._ctr_created({d for d, _ in targets.values()})
        return tidy.ctr_host_images(targets, used, created)

    def _blobs(self, digests: set[str]) -> dict[str, bytes]:
        if not digests:
            return {}
        out = self.run(engines.ctr_blobs(self.argv, sorted(digests)), "reading image blobs")
        return engines.parse_blobs(out)

    def _ctr_created(self, targets: set[str]) -> dict[str, float]:
        """target digest -> its config's `created` (index -> manifest -> config)."""
        blobs = self._blobs(targets)
        # a manifest has no `manifests`: index_manifest gives None and it stands for itself
        manifest = {d: engines.index_manifest(blobs.get(d)) or d for d in targets}
        blobs.update(self._blobs({m for m in manifest.values() if m not in blobs}))
        config = {d: engines.manifest_config(blobs.get(m)) for d, m in manifest.items()}
        configs = self._blobs({c for c in config.values() if c})
        return {d: tidy.config_created(configs.get(c or "")) for d, c in config.items()}

    def remove(self, names: list[str]) -> tuple[list[str], dict[str, str]]:
        return tidy.parse_removal(self.run(tidy.removal(self.kind, self.argv, names), "removing"))


def _frame(
    host: HostPlan,
    connect: Connector,
    progress: Progress,
    secret: engines.Secret | None,
    result: HostResult,
    body: Callable[[_Host], None],
    lock: bool = True,
) -> None:
    """Connect, take the host lock (issue 19; unless `lock` is false: the caller holds it, or
    nothing is changed), run `body`, close; host problems become the result's status."""
    try:
        session = connect(host.target)
        unlock: Callable[[], None] | None = None
        try:
            waited = 0.0
            if lock:
                unlock, waited = lock_host(session, host)
            own = host.become.password if host.become is not None else None
            body(_Host(host, session, own or secret))  # ansible_become_password first
            note_wait(result, waited)
        finally:
            if unlock is not None:
                unlock()
            session.close()
    except ConnectError as exc:
        result.status, result.error, result.message = UNREACHABLE, exc, exc.message
    except DistribError as exc:
        result.status, result.error, result.message = FAILED, exc, exc.message
    except (tidy.NoPrevious, commands.InspectError) as exc:
        result.status, result.message = FAILED, str(exc)
        result.error = HostError(host.name, result.message)
    except Exception as exc:  # a bug: still only this host
        result.status, result.message = FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
        result.error = HostError(host.name, result.message)


def _finished(result: HostResult, started: float, progress: Progress) -> HostResult:
    """A task's outcome, timed and reported once."""
    result.timings["total"] = round(time.monotonic() - started, 3)
    progress.finished(result)
    return result


def _prune(
    remote: _Host,
    repos: tuple[str, ...],
    keep: int,
    check: bool,
    shipped: tuple[str, ...] = (),
) -> tuple[list[str], list[str], dict[str, str]]:
    """(removed or would-be-removed names, spared `name (why)`, refused `name -> why`)."""
    held = remote.images()
    decided = [
        tidy.plan_removals(held, tidy.stored_repo(remote.kind, repo), keep, shipped)
        for repo in repos
    ]
    names = [t.name for d in decided for t in d.remove]
    spared = [f"{t.name} ({why})" for d in decided for t, why in d.spared]
    if check or not names:
        return names, spared, {}
    removed, failed = remote.remove(names)
    return removed, spared, failed


def _tidy_words(names: list[str], spared: list[str], check: bool) -> str:
    verb = "would remove" if check else "removed"
    text = f"{verb} {', '.join(names)}" if names else "nothing to remove"
    return text + (f"; kept {', '.join(spared)}" if spared else "")


@dataclass(frozen=True)
class PruneTask:
    """`distrib prune REPO... --keep N [--check]` on each host."""

    repos: tuple[str, ...]
    keep: int
    check: bool = False
    become_password: engines.Secret | None = None
    removed: dict[str, list[str]] = field(default_factory=dict)  # host -> names (for --json)

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        result = HostResult(host.name)
        started = time.monotonic()

        def body(remote: _Host) -> None:
            progress.phase(host.name, "prune")
            names, spared, failed = _prune(remote, self.repos, self.keep, self.check)
            self.removed[host.name] = names
            result.message = _tidy_words(names, spared, self.check)
            if self.check:
                result.message += " (check mode)"
            if failed:
                result.status = FAILED
                result.message += "; the engine refused " + "; ".join(
                    f"{n}: {why}" for n, why in failed.items()
                )
                result.error = HostError(host.name, result.message)
            else:
                result.status = CHANGED if names else OK

        _frame(host, connect, progress, self.become_password, result, body, lock=not self.check)
        return _finished(result, started, progress)


@dataclass(frozen=True)
class RollbackTask:
    """`distrib rollback IMAGE:TAG [--to TAG]`: re-point the tag on each host, verified."""

    ref: ImageRef
    to: str | None = None
    check: bool = False
    become_password: engines.Secret | None = None

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        result = HostResult(host.name)
        started = time.monotonic()

        def body(remote: _Host) -> None:
            progress.phase(host.name, "rollback")
            name = engines.stored_name(remote.kind, self.ref)
            held = remote.images()
            previous = tidy.previous_version(held, name, self.to)
            current = held.get(name)
            if current is not None and current.image == previous.image:
                result.status = OK
                result.message = f"{name} already names {previous.name}'s image"
                return
            if self.check:
                result.status = CHANGED
                result.message = f"would point {name} at {previous.name} (check mode)"
                return
            remote.run(tidy.repoint(remote.kind, remote.argv, name, previous.name), "rollback")
            progress.phase(host.name, "verify")
            after = remote.images().get(name)
            if after is None or after.image != previous.image:
                raise HostError(
                    host.name,
                    f"after rollback {name} names {after.image if after else 'nothing'}, "
                    f"not {previous.image}",
                )
            result.status = CHANGED
            result.images[str(self.ref)] = after.image
            result.states[str(self.ref)] = PRESENT
            result.message = f"{name} now names {previous.name}'s image, verified"

        _frame(host, connect, progress, self.become_password, result, body, lock=not self.check)
        return _finished(result, started, progress)


@dataclass(frozen=True)
class KeepTask:
    """A deploy job with `keep: N`: prev tags recorded before, older tags removed after."""

    inner: Job
    keep: int
    become_password: engines.Secret | None = None

    # what cli._execute reads from a job: the archive and layer store (abort, report lines)
    @property
    def archive(self) -> Any:
        return self.inner.archive

    @property
    def store(self) -> Any:
        return self.inner.store

    def variants(self) -> list[Job]:
        return self.inner.variants()

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        job = self.inner
        if self.become_password is not None:
            job = replace(job, become_password=self.become_password)
        images = job.for_host(host.name).images
        # one lock for record, deploy and prune (issue 19): no other run in between
        try:
            with holding_host_lock(host, connect) as waited:
                result = self._steps(host, job, images, connect, progress, cancel)
                note_wait(result, waited())
        except DistribError as exc:
            status = UNREACHABLE if isinstance(exc, ConnectError) else FAILED
            result = HostResult(host.name, status, exc.message, error=exc)
        progress.finished(result)
        return result

    def _steps(
        self,
        host: HostPlan,
        job: Job,
        images: tuple[Any, ...],
        connect: Connector,
        progress: Progress,
        cancel: threading.Event,
    ) -> HostResult:
        before = HostResult(host.name)

        def record(remote: _Host) -> None:
            progress.phase(host.name, "keep")
            seen = remote.engine.identity(
                lambda c: remote.run(c, "inspecting images", wrap=False),
                [i.ref for i in images],
            )
            changing = [
                engines.stored_name(remote.kind, i.ref)
                for i in images
                if i.ref.familiar in seen and image_state(i, seen[i.ref.familiar]) != PRESENT
            ]
            if changing:
                remote.run(tidy.record_previous(remote.kind, remote.argv, changing), "keep")

        _frame(host, connect, progress, self.become_password, before, record, lock=False)
        if before.error is not None:
            return before
        result = deploy(host, job, connect, QuietProgress(progress), cancel, host_locked=True)
        if result.failed or not job.verify or cancel.is_set():
            return result
        started = time.monotonic()
        after = HostResult(host.name)
        repos = tuple(dict.fromkeys(i.ref.name for i in images))

        def prune(remote: _Host) -> None:
            progress.phase(host.name, "keep")
            shipped = tuple(engines.stored_name(remote.kind, i.ref) for i in images)
            names, spared, failed = _prune(remote, repos, self.keep, False, shipped)
            result.message += f"; keep {self.keep}: {_tidy_words(names, spared, False)}"
            if failed:
                raise HostError(
                    host.name,
                    "keep: the engine refused "
                    + "; ".join(f"{n}: {why}" for n, why in failed.items()),
                )
            if names and result.status == OK:
                result.status = CHANGED

        _frame(host, connect, progress, self.become_password, after, prune, lock=False)
        if after.error is not None:
            result.status, result.error = after.status, after.error
            result.message += f"; keep failed: {after.message}"
        result.timings["keep"] = round(time.monotonic() - started, 3)
        return result


def with_keep(plays: Any, jobs: dict[int, Any]) -> dict[int, Any]:
    """Each deploy job of a play with `keep` wrapped in a KeepTask (check mode: unchanged)."""
    from distrib.engine import DEPLOY

    out = dict(jobs)
    for index, play_plan in enumerate(plays):
        keep = getattr(play_plan.play, "keep", None)
        job = jobs.get(index)
        if keep and isinstance(job, Job) and job.mode == DEPLOY:
            out[index] = KeepTask(job, keep)
    return out
