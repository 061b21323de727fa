"""What `distrib run` adds for plays with a `commit:` step or a `registry:` target.

Three hooks, called by cli.cmd_run in this order:

1. `prepare(plan, inventory, check)`: everything that can be wrong is found before anything
   connects - the commit host and the registry host are inventory hosts (resolved without
   --limit, like Ansible's delegate_to), credentials are readable.
2. `Flow.run_commits(plan, found, out)`: each play's commit step runs on its host, and the
   committed image is streamed into the workstation's docker (so it is archived, cached and
   verified like any local image); the play then ships it. A failed commit stops the run
   before anything is shipped. Check mode commits nothing.
3. `Flow.expand(plan, jobs)`: a registry play becomes two plays - "push" on the registry host
   (ship the archive there, tag, push) and, with `pull: true`, the play's own hosts pulling
   in parallel (skipped when the push failed). Other plays are left as they are.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from distrib.archive import LocalImage
from distrib.engine import CHANGED, Connector
from distrib.errors import EXIT_HOST_FAILED, ConfigError, DistribError
from distrib.plan import HostPlan, InventoryLike, Plan, PlayPlan, host_plan
from distrib.playbook import ImageSpec, Located, Play
from distrib.workflows import spec, steps

USERNAME_VAR = "registry_username"
PASSWORD_FILE_VAR = "registry_password_file"


class CommitFailed(DistribError):
    """A playbook's commit step failed: nothing was shipped (exit 2, a host failed)."""

    exit_code = EXIT_HOST_FAILED


@dataclass(frozen=True)
class RegistrySetup:
    host: HostPlan  # the registry host: loads the archive, tags, pushes
    credentials: steps.Credentials | None


@dataclass
class Flow:
    check: bool
    commit_hosts: dict[int, HostPlan] = field(default_factory=dict)  # play index -> host
    registries: dict[int, RegistrySetup] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)  # for --json

    @property
    def json(self) -> dict[str, Any]:
        return {"commits": self.commits} if self.commits else {}

    def run_commits(
        self,
        plan: Plan,
        found: dict[Any, LocalImage],
        out: IO[str],
        connect: Connector | None = None,
    ) -> Plan:
        """Run each play's commit step; return the plan with the committed images added to
        their plays (and to `found`)."""
        if not self.commit_hosts:
            return plan
        if connect is None:
            from distrib import transport

            connect = transport.connect
        plays = list(plan.plays)
        for index, host in self.commit_hosts.items():
            play = plays[index].play
            commit = play.commit
            assert commit is not None
            what = f"{commit.container} on {host.name} as {commit.image}"
            if self.check:
                print(f"COMMIT [{host.name}] would commit {what} (check mode)", file=out)
                continue
            print(f"COMMIT [{host.name}] committing {what} and fetching it", file=out)
            task = steps.CommitTask(commit.container, commit.image, commit.message, commit.author)
            result, image = steps.commit_and_fetch(host, task, connect, threading.Event())
            self.commits.append(
                {
                    "play": play.name,
                    "host": host.name,
                    "container": commit.container,
                    "image": str(commit.image),
                    "image_id": result.images.get(str(commit.image)),
                    "status": result.status,
                    "message": result.message,
                }
            )
            if result.failed or image is None:
                hint = result.error.hint if result.error else None
                raise CommitFailed(
                    f"commit step of play {play.name!r} failed on {host.name}: {result.message}; "
                    "nothing was shipped",
                    hint=hint,
                )
            print(f"COMMIT [{host.name}] {result.message}", file=out)
            found[image.ref] = image
            where = Located(commit.file, commit.line)
            added = dataclasses.replace(play, images=(*play.images, ImageSpec(image.ref, where)))
            plays[index] = dataclasses.replace(plays[index], play=added)
        return Plan(tuple(plays))

    def expand(
        self, plan: Plan, jobs: Mapping[int, Any]
    ) -> tuple[Plan, dict[int, Any], Callable[..., Any] | None]:
        """The plan, jobs and executor step to run (step None: the engine's deploy)."""
        if not self.registries and not (self.check and self.commit_hosts):
            return plan, dict(jobs), None
        plays: list[PlayPlan] = []
        out_jobs: dict[int, Any] = {}
        for index, play_plan in enumerate(plan.plays):
            play = play_plan.play
            job = jobs[index]
            if self.check and index in self.commit_hosts and not play.images:
                assert play.commit is not None
                note = (
                    f"would receive {play.commit.image} committed from "
                    f"{play.commit.container} on {self.commit_hosts[index].name} (check mode)"
                )
                job = steps.Noted(CHANGED, note)
            setup = self.registries.get(index)
            if setup is None or isinstance(job, steps.Noted):
                out_jobs[len(plays)] = job
                plays.append(play_plan)
                continue
            assert play.registry is not None
            pairs = tuple(
                (
                    image,
                    _renamed(image, spec.registry_ref(image.ref, play.registry, play.namespace)),
                )
                for image in job.images
            )
            target = steps.RegistryTarget(play.registry, play.insecure, setup.credentials, pairs)
            outcome = steps.PushOutcome()
            push_play = dataclasses.replace(play, name=f"{play.name}: push to {play.registry}")
            out_jobs[len(plays)] = steps.PushTask(job, target, outcome, self.check)
            plays.append(PlayPlan(push_play, (setup.host,), ((setup.host,),), 1))
            if play.pull:
                out_jobs[len(plays)] = steps.PullTask(target, outcome, self.check)
                plays.append(play_plan)
        return Plan(tuple(plays)), out_jobs, steps.dispatch


def _renamed(image: LocalImage, ref: Any) -> LocalImage:
    return dataclasses.replace(image, ref=ref)


def prepare(plan: Plan, inventory: Callable[[], InventoryLike], check: bool) -> Flow:
    """Resolve commit hosts, registry hosts and credentials; ConfigError (file:line) when
    something is wrong. The inventory is read only when a play needs it."""
    flow = Flow(check)
    loaded: list[InventoryLike] = []

    def inv() -> InventoryLike:
        if not loaded:
            loaded.append(inventory())
        return loaded[0]

    for index, play_plan in enumerate(plan.plays):
        play = play_plan.play
        if play.commit is not None:
            flow.commit_hosts[index] = _one_host(
                inv(), play.commit.host, play, "commit.host", play.commit.file, play.commit.line
            )
        if play.registry is not None:
            pattern = play.registry_host or _default_registry_host(inv(), play, play_plan)
            host = _one_host(
                inv(), pattern, play, "registry_host", play.where.file, play.where.line
            )
            host_vars = _vars_of(inv(), host.name)
            merged = {**host_vars, **play.vars}
            flow.registries[index] = RegistrySetup(host, _credentials(merged, play))
    return flow


def _one_host(
    inventory: InventoryLike, pattern: str, play: Play, key: str, file: str, line: int
) -> HostPlan:
    try:
        hosts = inventory.select(pattern)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=file, line=line, key=key) from None
    if len(hosts) != 1:
        raise ConfigError(
            f"{pattern!r} must name exactly one inventory host, it matches {len(hosts)}",
            file=file,
            line=line,
            key=key,
        )
    return host_plan(hosts[0], play)


def _vars_of(inventory: InventoryLike, name: str) -> Mapping[str, Any]:
    return inventory.select(name)[0].vars


def _default_registry_host(inventory: InventoryLike, play: Play, play_plan: PlayPlan) -> str:
    """Without `registry_host`: the inventory host the registry runs on (by address), else
    the play's first host."""
    assert play.registry is not None
    address = spec.registry_host_part(play.registry)
    for host in inventory.select("all"):
        if address in (host.name, str(host.vars.get("ansible_host", ""))):
            return host.name
    if play_plan.hosts:
        return play_plan.hosts[0].name
    raise ConfigError(
        "registry play has no host to push from: set registry_host",
        file=play.where.file,
        line=play.where.line,
    )


def _credentials(merged: Mapping[str, Any], play: Play) -> steps.Credentials | None:
    """`registry_username` with `registry_password_file` (read here, on the workstation), or a
    prompt on a terminal. The password is kept in memory only, for the hosts' stdin."""
    username = merged.get(USERNAME_VAR)
    password_file = merged.get(PASSWORD_FILE_VAR)

    def bad(message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, file=play.where.file, line=play.where.line, hint=hint)

    if username is None:
        if password_file is not None:
            raise bad(f"{PASSWORD_FILE_VAR} is set but {USERNAME_VAR} is not")
        return None
    if not isinstance(username, str) or not username or username.startswith("-"):
        raise bad(f"{USERNAME_VAR} must be a user name, not {username!r}")
    if password_file is not None:
        path = os.path.expanduser(str(password_file))
        try:
            with open(path, "rb") as fh:
                password = fh.read()
        except OSError as exc:
            raise bad(f"{PASSWORD_FILE_VAR} {path}: {exc.strerror or exc}") from None
        password = password.rstrip(b"\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password of {username} at {play.registry}: ").encode()
    else:
        raise bad(
            f"{USERNAME_VAR} is set but not {PASSWORD_FILE_VAR}, and there is no terminal "
            "to ask for the password on",
            hint=f"set {PASSWORD_FILE_VAR} (a file only you can read)",
        )
    if not password:
        raise bad(f"the registry password for {username} is empty")
    return steps.Credentials(username, password)
