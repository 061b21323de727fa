"""Registry plays: push from one host inside the site, pull on every host (docker, podman,
containerd; as the become user). A credentialed push or pull on a containerd host is refused
before connecting (ctr takes credentials only in argv: hostcmds.NO_CREDENTIALS).

- `PushTask`: ship the play's archive to the registry host (engine.deploy), tag, push
- `PullTask`: pull from the registry on each host, tag, verify by content identity
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from distrib import commands, engines, platforms
from distrib.archive import LocalImage
from distrib.engine import (
    CHANGED,
    OK,
    PRESENT,
    SKIPPED,
    Connector,
    HostResult,
    Job,
    Progress,
    QuietProgress,
    deploy,
    holding_host_lock,
    note_wait,
)
from distrib.errors import CommandError, ConnectError, DistribError, HostError, VerifyError
from distrib.plan import HostPlan
from distrib.target import Result
from distrib.workflows import hostcmds, spec
from distrib.workflows.frame import Remote, refuse, run_step, secret_of

REGISTRY_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Credentials:
    """A registry login. The password is sent on the SSH channel's stdin to
    `docker login --password-stdin` only: never in argv, logs, JSON or messages."""

    username: str
    password: bytes = field(repr=False)

    def __str__(self) -> str:
        return self.username


@dataclass
class PushOutcome:
    """Whether a registry play's push succeeded (its pull play waits on it)."""

    ok: bool | None = None
    reason: str = ""


Pair = tuple[LocalImage, LocalImage]


@dataclass(frozen=True)
class RegistryTarget:
    registry: str
    insecure: bool
    credentials: Credentials | None
    pairs: tuple[tuple[LocalImage, LocalImage], ...]  # (image as shipped, its registry name)

    def check_policy(self, remote: Remote) -> None:
        """docker: plain HTTP only when the play says `insecure: true`, and only when this
        host's engine allows it for this registry (else the failure would come later and
        vaguer). podman and ctr take the play's word as a flag on each command
        (`--tls-verify=false`, `--plain-http`): no engine setting to agree with."""
        if remote.kind != engines.DOCKER:
            return
        host_part = spec.registry_host_part(self.registry)
        settings = commands.parse_registry_probe(
            remote.run(
                commands.registry_probe(remote.docker, host_part), "registry settings"
            ).stdout
        )
        plain = commands.docker_allows_plain_http(self.registry, settings)
        if self.insecure and not plain:
            raise HostError(
                remote.host.name,
                f"the play marks registry {self.registry} insecure (plain HTTP), but this "
                "host's docker engine would only talk HTTPS to it",
                hint=f"allow it on this host's dockerd: insecure-registries "
                f'["{self.registry}"] in /etc/docker/daemon.json (or dockerd '
                f"--insecure-registry {self.registry}), then reload dockerd",
            )
        if plain and not self.insecure:
            raise HostError(
                remote.host.name,
                f"this host's docker engine treats registry {self.registry} as insecure (plain "
                "HTTP or unverified TLS), but the play does not say insecure: true",
                hint="if the registry is meant to be plain HTTP, add insecure: true to the play",
            )

    def command(self, remote: Remote, verb: str, pairs: Sequence[Pair]) -> str:
        """The host's `push` (tag, push) or `pull` (pull, tag) of `pairs`, logged in first
        when there are credentials (the password then comes on stdin)."""
        username = self.credentials.username if self.credentials else None
        if remote.kind == engines.DOCKER:
            if verb == hostcmds.PUSH:
                steps = [["tag", str(i.ref), str(r.ref)] for i, r in pairs]
                steps += [["push", str(r.ref)] for _, r in pairs]
            else:
                steps = [["pull", str(r.ref)] for _, r in pairs]
                steps += [["tag", str(r.ref), str(i.ref)] for i, r in pairs]
            return commands.registry_session(
                remote.docker, self.registry, remote.host.remote_tmp, steps, username
            )
        build = hostcmds.push_commands if verb == hostcmds.PUSH else hostcmds.pull_commands
        refs = [(i.ref, r.ref) for i, r in pairs]
        lines = build(remote.engine, refs, self.insecure, username is not None)
        return hostcmds.registry_session(
            remote.engine, self.registry, remote.host.remote_tmp, lines, self.insecure, username
        )

    def session(self, remote: Remote, verb: str, pairs: Sequence[Pair]) -> Result:
        """Run the `verb` command as the engine user: stdin is sudo's password line (when
        it needs one), then the registry password (when there are credentials)."""
        what = f"{remote.kind} {verb} {'to' if verb == hostcmds.PUSH else 'from'} {self.registry}"
        command = remote.engine.wrap(self.command(remote, verb, pairs))
        if self.credentials is None:
            result = remote.raw(command, REGISTRY_TIMEOUT, engine=False, stdin=remote.stdin)
        else:
            result = remote.session.upload(
                command, [remote.stdin + self.credentials.password], timeout=REGISTRY_TIMEOUT
            )
        if not result.ok:
            raise CommandError(
                remote.host.name,
                command,
                result.exit_status,
                result.stdout,
                result.stderr,
                what=what,
                hint=_registry_hint(self.registry, result.stderr),
            )
        return result


def _registry_hint(registry: str, stderr: str) -> str:
    text = stderr.lower()
    if "server gave http response to https client" in text:
        return f"{registry} speaks plain HTTP: mark the play insecure: true"
    if "unauthorized" in text or "authentication required" in text or "no basic auth" in text:
        return "check registry_username and registry_password_file"
    return f"is the registry {registry} running and reachable from this host?"


@dataclass
class PushTask:
    """On the registry host: ship the play's archive (engine.deploy: checked, loaded,
    verified), then tag each image with its registry name and push it."""

    deploy_job: Job
    target: RegistryTarget
    outcome: PushOutcome
    check: bool = False
    become_password: Any = field(default=None, repr=False)  # set by cli: sudo's, stdin only

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        # one lock for the three steps (issue 19): no other run between shipping and pushing
        try:
            refuse(host, hostcmds.PUSH, self.target.credentials is not None)  # before anything
            if self.check:  # read-only
                result = self._steps(host, connect, progress, cancel)
            else:
                with holding_host_lock(host, connect) as waited:
                    result = self._steps(host, connect, progress, cancel)
                    note_wait(result, waited())
        except DistribError as exc:
            result = HostResult(host.name, "unreachable" if isinstance(exc, ConnectError)
                                else "failed", exc.message, error=exc)  # fmt: skip
            self.outcome.ok, self.outcome.reason = False, self._failed_on(host)
        progress.finished(result)
        return result

    def _steps(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        # the registry policy first: a host whose engine would refuse (or silently downgrade)
        # the registry is told so before a byte of the archive is sent
        secret = secret_of(self)
        checked = run_step(
            host, connect, progress, cancel, self._preflight, finish=False, lock=False,
            secret=secret,
        )  # fmt: skip
        if checked.failed:
            self.outcome.ok, self.outcome.reason = False, self._failed_on(host)
            checked.message = f"{checked.message}; nothing was sent"
            return checked
        quiet = QuietProgress(progress)
        job = self.deploy_job
        if secret is not None and job.become_password is None:  # sudo's password, for the load
            job = replace(job, become_password=secret)
        shipped = deploy(host, job, connect, quiet, cancel, host_locked=True)
        if shipped.failed:
            self.outcome.ok, self.outcome.reason = False, self._failed_on(host)
            shipped.message = f"not pushed: {shipped.message}"
            return shipped
        result = run_step(
            host,
            connect,
            progress,
            cancel,
            lambda remote: self._push(remote, shipped),
            finish=False,
            lock=False,
            secret=secret,
        )
        result.bytes_sent = shipped.bytes_sent
        result.resumed_from = shipped.resumed_from
        for earlier in (checked, shipped):
            for name, seconds in earlier.timings.items():
                if name != "connect":  # the push's own connect stays; totals add up
                    result.timings[name] = round(result.timings.get(name, 0.0) + seconds, 3)
        self.outcome.ok = not result.failed
        if result.failed:
            self.outcome.reason = self._failed_on(host)
        return result

    def _failed_on(self, host: HostPlan) -> str:
        return f"the push to {self.target.registry} failed on {host.name}"

    def _preflight(self, remote: Remote) -> None:
        remote.phase("registry")
        self.target.check_policy(remote)
        remote.done("registry")

    def _push(self, remote: Remote, shipped: HostResult) -> None:
        names = ", ".join(str(reg.ref) for _, reg in self.target.pairs)
        if self.check:
            remote.result.status = CHANGED
            remote.result.message = f"{shipped.message}; would push {names}"
            return
        remote.phase("push")
        pushed = self.target.session(remote, hostcmds.PUSH, self.target.pairs)
        remote.done("push")
        digests = commands.parse_push(pushed.stdout)
        remote.result.images.update({str(r.ref): r.id for _, r in self.target.pairs})
        # A push is reported as a change: the output cannot tell a new tag from an old one
        # when every layer already exists (docker_image in Ansible says changed too).
        remote.result.status = CHANGED
        detail = ", ".join(
            f"{reg.ref.tag} {digest[:19]}" for (_, reg), digest in zip(self.target.pairs, digests)
        )
        remote.result.message = f"pushed {names}" + (f" (manifests {detail})" if detail else "")


@dataclass
class PullTask:
    """On each host of a registry play: pull what it lacks, tag it with the play's names,
    verify both names by content identity (the config: engine.image_state)."""

    target: RegistryTarget
    outcome: PushOutcome
    check: bool = False
    become_password: Any = field(default=None, repr=False)  # set by cli: sudo's, stdin only

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        if self.outcome.ok is False:
            result = HostResult(host.name, SKIPPED, f"not pulled: {self.outcome.reason}")
            progress.finished(result)
            return result
        return run_step(
            host, connect, progress, cancel, self._pull, lock=not self.check,
            step=hostcmds.PULL, secret=secret_of(self),
            credentials=self.target.credentials is not None,
        )  # fmt: skip

    def _pull(self, remote: Remote) -> None:
        remote.phase("probe")
        _refuse_other_platforms(remote, [i for i, _ in self.target.pairs], remote.probe())
        wanted = [image for pair in self.target.pairs for image in pair]
        states = remote.identity(wanted)
        remote.done("probe")
        todo = [
            (i, r)
            for i, r in self.target.pairs
            if states[str(i.ref)] != PRESENT or states[str(r.ref)] != PRESENT
        ]
        if not todo:
            remote.result.status = OK
            remote.result.message = "all images already present"
            return
        remote.phase("registry")
        self.target.check_policy(remote)
        remote.done("registry")
        names = ", ".join(str(r.ref) for _, r in todo)
        if self.check:
            remote.result.status = CHANGED
            remote.result.message = f"would pull {names} (check mode)"
            return
        remote.phase("pull")
        self.target.session(remote, hostcmds.PULL, todo)
        remote.done("pull")
        remote.phase("verify")
        states = remote.identity(wanted)
        remote.done("verify")
        remote.result.status = CHANGED
        wrong = [f"{ref} {state}" for ref, state in states.items() if state != PRESENT]
        if wrong:
            raise VerifyError(remote.host.name, "after pulling: " + "; ".join(wrong))
        remote.result.message = (
            f"pulled and verified {len(todo)} image(s) from {self.target.registry}"
        )


def _refuse_other_platforms(
    remote: Remote, images: Sequence[LocalImage], facts: commands.Facts
) -> None:
    """A host of a registry play pulls what the registry host pushed: an image for another
    platform is refused before the pull (issue 18, item 3), as engine.deploy refuses it."""
    host = platforms.Platform.of_host(facts.arch)
    refused = platforms.refusals([(str(i.ref), i.platform, i.offered) for i in images], host)
    if refused:
        raise HostError(
            remote.host.name,
            "; ".join(refused) + "; nothing was pulled",
            hint=f"push an image for {host} too (a play per platform), or leave this host out",
        )
