"""The frame every workflow step runs in: connect, take the host lock, become the engine user,
run the step's body, close; every error becomes this host's outcome (a HostResult).

`Remote` is one host during one step: it runs the host's engine commands through
`engines.Engine` (docker, podman, containerd), each wrapped for become as the deploy path wraps
them (`Engine.wrap`: one sudo per command; with a password, sudo reads it as the FIRST LINE OF
STDIN, never argv, a log or JSON).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from distrib import commands, engines
from distrib.archive import LocalImage
from distrib.engine import (
    Cancelled,
    Connector,
    HostResult,
    Progress,
    engine_of,
    image_state,
    lock_host,
    note_wait,
)
from distrib.errors import CommandError, ConnectError, DistribError, HostError
from distrib.plan import HostPlan
from distrib.refs import ImageRef
from distrib.target import Result, Session
from distrib.workflows import hostcmds

PROBE_TIMEOUT = 60.0
COMMIT_TIMEOUT = 600.0
CLEANUP_TIMEOUT = 60.0


class DownloadSession(Session, Protocol):
    """A Session that can also stream a command's stdout back (transport.SSHSession)."""

    def download(
        self,
        command: str,
        write: Callable[[bytes], None],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> Result: ...


class HostTask(Protocol):
    """A play's job that runs its own step on each host."""

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult: ...


class Remote:
    """One host during one step: its session and engine (as the become user), phases,
    timings and result."""

    def __init__(
        self,
        host: HostPlan,
        session: Session,
        progress: Progress,
        cancel: threading.Event,
        result: HostResult,
        secret: engines.Secret | None = None,
    ) -> None:
        self.host = host
        self.session = session
        self.progress = progress
        self.cancel = cancel
        self.result = result
        self.engine = engine_of(host)
        self.docker = list(host.docker)
        self.stdin = b""  # sudo's password line, when the become rule needs one
        self._started: dict[str, float] = {}
        if host.become is not None:
            self._become(host.become, host.become.password or secret)

    @property
    def kind(self) -> str:
        return self.engine.kind

    def phase(self, name: str) -> None:
        if self.cancel.is_set():
            raise Cancelled("interrupted")
        self.progress.phase(self.host.name, name)
        self._started[name] = time.monotonic()

    def done(self, name: str) -> None:
        if name in self._started:
            took = time.monotonic() - self._started.pop(name)
            self.result.timings[name] = round(self.result.timings.get(name, 0.0) + took, 3)

    def raw(self, command: str, timeout: float, engine: bool = True, stdin: bytes = b"") -> Result:
        """Run `command` (`engine`: as the engine user, sudo's password line first on stdin,
        then `stdin`); its failure is the caller's to report."""
        script = self.engine.wrap(command) if engine else command
        data = (self.stdin if engine else b"") + stdin
        if data:
            return self.session.run(script, timeout=timeout, stdin=data)
        return self.session.run(script, timeout=timeout)

    def run(
        self, command: str, what: str, timeout: float = PROBE_TIMEOUT, engine: bool = True
    ) -> Result:
        result = self.raw(command, timeout, engine)
        if not result.ok:
            raise CommandError(
                self.host.name,
                result.command,
                result.exit_status,
                result.stdout,
                result.stderr,
                what=what,
            )
        return result

    def _become(self, become: engines.Become, secret: engines.Secret | None) -> None:
        """Can the SSH user become `become.user`, and does sudo want the password (as the
        deploy path asks: `sudo -n` never prompts, `sudo -S` reads one line then EOF)?"""
        name = self.host.name
        who = self.host.target.user or "the SSH user"
        out = self.run(engines.become_check(become), "checking sudo", engine=False).stdout
        state, words = engines.parse_become_check(out)
        if state == engines.NOPASSWD:
            return
        if state in (engines.NO_SUDO, engines.DENIED):
            raise HostError(
                name,
                f"become: {who} cannot run the engine as {become.user} with sudo: {words}",
                hint="add a sudoers rule for this user on the host",
            )
        if secret is None:
            raise HostError(
                name,
                f"become: sudo on the host asks {who} for a password and none was given",
                hint="pass --ask-become-pass or --become-password-file FILE, or give the user "
                "a NOPASSWD sudoers rule",
            )
        checked = self.session.run(
            engines.become_validate(become), timeout=PROBE_TIMEOUT, stdin=secret.line()
        )
        if not checked.ok:
            rejected = engines.password_rejected(checked.stderr)
            raise HostError(
                name,
                f"become: sudo rejected the password of {who} (nothing was changed)"
                if rejected
                else f"become: {who} may not run commands as {become.user} with sudo",
                hint="check the password given with --ask-become-pass or --become-password-file",
            )
        self.engine = replace(self.engine, password=True)
        self.stdin = secret.line()

    def probe(self) -> commands.Facts:
        facts = commands.parse_probe(
            self.run(self.engine.probe_script(self.host.remote_tmp), "probe").stdout
        )
        self.result.facts = facts
        if not facts.engine_ok:
            why = self.raw(join_version(self.engine), PROBE_TIMEOUT)
            raise CommandError(
                self.host.name,
                why.command,
                why.exit_status or 1,
                why.stdout,
                why.stderr,
                what="the container engine does not answer",
                hint="is the engine running, and may this user use it (docker group, become)?",
            )
        return facts

    def containers(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        """id and image of each named container; HostError naming the missing ones."""
        found = commands.parse_container_inspect(
            self.run(hostcmds.container_inspect(self.engine, names), "inspecting containers").stdout
        )
        missing = [n for n in names if found.get(n) is None]
        if missing:
            raise HostError(
                self.host.name,
                f"no container named {', '.join(missing)} on this host; nothing was done",
                hint=f"{self.kind} ps -a on the host lists its containers",
            )
        return {n: v for n, v in found.items() if v is not None}

    def inspect(self, ref: ImageRef) -> commands.Inspected:
        """What the engine holds as `ref` (id, diffIDs, size)."""
        if self.kind == engines.DOCKER:
            out = self.run(commands.inspect_image(self.docker, ref), f"inspecting {ref}").stdout
            return commands.parse_inspect(out.strip().splitlines()[0])
        found = self._found([ref]).get(ref.familiar)
        if found is None:
            raise HostError(self.host.name, f"{self.kind} shows no image {ref}")
        return found

    def commit(self, container: str, ref: ImageRef, message: str | None, author: str | None) -> str:
        command = hostcmds.commit(self.engine, container, ref, message, author)
        out = self.run(command, f"{self.kind} commit {container}", COMMIT_TIMEOUT).stdout
        return hostcmds.parse_commit(self.kind, out)

    def _found(self, refs: Sequence[ImageRef]) -> dict[str, commands.Inspected]:
        def read(wrapped: str) -> str:  # Engine.identity wraps its command itself
            result = self.raw(wrapped, PROBE_TIMEOUT, engine=False, stdin=self.stdin)
            if not result.ok:
                raise CommandError(
                    self.host.name, wrapped, result.exit_status, result.stdout, result.stderr,
                    what="inspecting images",
                )  # fmt: skip
            return result.stdout

        try:
            return self.engine.identity(read, refs)
        except commands.InspectError as exc:
            raise HostError(
                self.host.name, f"{self.kind} cannot inspect {exc.ref}: {exc.message}"
            ) from None

    def identity(self, images: Sequence[LocalImage]) -> dict[str, str]:
        """ref -> present | missing | different, by the deploy engine's one rule
        (engine.image_state: the config, never the layers alone; issue 14)."""
        found = self._found([i.ref for i in images])
        states = {str(i.ref): image_state(i, found.get(i.ref.familiar)) for i in images}
        self.result.images.update(
            {str(i.ref): found[i.ref.familiar].id for i in images if i.ref.familiar in found}
        )
        self.result.states.update(states)
        return states

    def quietly(self, command: str, engine: bool = True) -> str:
        """Run a cleanup command; its failure is returned as text, never raised."""
        try:
            result = self.raw(command, CLEANUP_TIMEOUT, engine)
        except DistribError as exc:
            return exc.message
        return "" if result.ok else (result.stderr.strip() or f"exit {result.exit_status}")


def join_version(engine: engines.Engine) -> str:
    """The engine's version command, unwrapped (its error output says why it does not answer)."""
    return commands.join([*engine.argv, "version"])


def refuse(host: HostPlan, step: str, credentials: bool = False) -> None:
    """HostError, before connecting, when the host's engine cannot do `step`."""
    why = hostcmds.refusal(getattr(host, "engine", engines.DOCKER), step, credentials)
    if why is not None:
        raise HostError(host.name, why)


def secret_of(task: Any) -> engines.Secret | None:
    """The become password the CLI gave the task (kept in memory; sent on stdin only)."""
    secret = getattr(task, "become_password", None)
    return secret if isinstance(secret, engines.Secret) else None


def run_step(
    host: HostPlan,
    connect: Connector,
    progress: Progress,
    cancel: threading.Event,
    body: Callable[[Remote], None],
    finish: bool = True,
    lock: bool = True,
    step: str = "",
    secret: engines.Secret | None = None,
    credentials: bool = False,
) -> HostResult:
    """Refuse `step` when the host's engine cannot do it; else connect, take the host lock
    (unless the caller holds it: `lock` false), become the engine user, run `body`, close;
    every error becomes this host's outcome (reported to `progress` as the host's end unless
    `finish` is false: more of the step follows)."""
    result = HostResult(host.name)
    started = time.monotonic()
    try:
        if cancel.is_set():
            raise Cancelled("interrupted")
        if step:
            refuse(host, step, credentials)
        progress.phase(host.name, "connect")
        t = time.monotonic()
        session = connect(host.target)
        result.timings["connect"] = round(time.monotonic() - t, 3)
        unlock: Callable[[], None] | None = None
        try:
            waited = 0.0
            if lock:  # one distrib run at a time on a host (issue 19): first, before sudo
                unlock, waited = lock_host(session, host)
            body(Remote(host, session, progress, cancel, result, secret))
            note_wait(result, waited)
        finally:
            if unlock is not None:
                unlock()
            session.close()
    except ConnectError as exc:
        result.status, result.error, result.message = "unreachable", exc, exc.message
    except DistribError as exc:
        result.status, result.error, result.message = "failed", exc, exc.message
    except Exception as exc:  # a bug or an unexpected library error: still only this host
        result.status, result.message = "failed", f"unexpected error: {type(exc).__name__}: {exc}"
        result.error = HostError(host.name, result.message)
    result.timings["total"] = round(time.monotonic() - started, 3)
    if finish:
        progress.finished(result)
    return result
