"""Per-host steps of the workflows, plugged into executor.run_plan like engine.deploy: each
drives one host and never raises for a host problem; every outcome is a HostResult.

- `CommitTask`: `docker commit` a container on the host (message and author recorded)
- `BackupTask`: commit containers, `docker save | compress` ON the host, stream the bytes back
  to the workstation (sha256 on both ends), keep the archive and a metadata file
- `PushTask`: ship the play's archive to the registry host (engine.deploy), tag, push
- `PullTask`: pull from the registry on each host, tag, verify by content identity

A task object is the play's "job"; `dispatch` is the executor step that runs either a task or
the engine's deploy job.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from distrib import commands, engines, local, platforms
from distrib.archive import LocalImage
from distrib.diskspace import DiskGuard
from distrib.engine import (
    CHANGED,
    MISSING,
    OK,
    PRESENT,
    SKIPPED,
    Cancelled,
    Connector,
    HostResult,
    Job,
    Progress,
    QuietProgress,
    deploy,
    holding_host_lock,
    image_state,
    lock_host,
    note_wait,
)
from distrib.errors import (
    CommandError,
    ConnectError,
    DistribError,
    HostError,
    LocalError,
    TransferError,
    VerifyError,
)
from distrib.plan import HostPlan
from distrib.refs import ImageRef
from distrib.target import Result, Session
from distrib.units import human_bytes
from distrib.workflows import archives, spec

PROBE_TIMEOUT = 60.0
COMMIT_TIMEOUT = 600.0
SAVE_TIMEOUT = 6 * 3600.0
REGISTRY_TIMEOUT = 3600.0
CLEANUP_TIMEOUT = 60.0
DOWNLOAD_ATTEMPTS = 2  # a checksum mismatch is fetched once more, never kept
FETCH_LEVEL = 1  # host -> workstation hop of a playbook commit: speed over ratio (one use)


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


# --- the frame every step runs in -------------------------------------------------------------


class _Remote:
    """One host during one step: its session, phases, timings and result."""

    def __init__(
        self,
        host: HostPlan,
        session: Session,
        progress: Progress,
        cancel: threading.Event,
        result: HostResult,
    ) -> None:
        self.host = host
        self.session = session
        self.progress = progress
        self.cancel = cancel
        self.result = result
        self.docker = list(host.docker)
        self._started: dict[str, float] = {}

    def phase(self, name: str) -> None:
        if self.cancel.is_set():
            raise Cancelled("interrupted")
        self.progress.phase(self.host.name, name)
        self._started[name] = time.monotonic()

    def done(self, name: str) -> None:
        if name in self._started:
            took = time.monotonic() - self._started.pop(name)
            self.result.timings[name] = round(self.result.timings.get(name, 0.0) + took, 3)

    def run(self, command: str, what: str, timeout: float = PROBE_TIMEOUT) -> Result:
        result = self.session.run(command, timeout=timeout)
        if not result.ok:
            raise CommandError(
                self.host.name, command, result.exit_status, result.stdout, result.stderr, what=what
            )
        return result

    def probe(self) -> commands.Facts:
        facts = commands.parse_probe(
            self.run(commands.probe(self.docker, self.host.remote_tmp), "probe").stdout
        )
        self.result.facts = facts
        if not facts.engine_ok:
            why = self.session.run(commands.join([*self.docker, "version"]), timeout=PROBE_TIMEOUT)
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
            self.run(commands.container_inspect(self.docker, names), "inspecting containers").stdout
        )
        missing = [n for n in names if found.get(n) is None]
        if missing:
            raise HostError(
                self.host.name,
                f"no container named {', '.join(missing)} on this host; nothing was done",
                hint="docker ps -a on the host lists its containers",
            )
        return {n: v for n, v in found.items() if v is not None}

    def inspect(self, ref: ImageRef | str) -> commands.Inspected:
        out = self.run(commands.inspect_image(self.docker, ref), f"inspecting {ref}").stdout
        return commands.parse_inspect(out.strip().splitlines()[0])

    def image(self, ref: ImageRef | str) -> LocalImage:
        found = self.inspect(ref)
        parsed = ref if isinstance(ref, ImageRef) else ImageRef.parse(ref)
        return LocalImage(parsed, found.id, found.diff_ids, found.size)

    def commit(self, container: str, ref: ImageRef, message: str | None, author: str | None) -> str:
        argv = commands.commit_argv(self.docker, container, ref, message, author)
        out = self.run(commands.join(argv), f"docker commit {container}", COMMIT_TIMEOUT).stdout
        return commands.parse_commit(out)

    def identity(self, images: Sequence[LocalImage]) -> dict[str, str]:
        """ref -> present | missing | different, by the deploy engine's one rule
        (engine.image_state: the config, never the layers alone; issue 14)."""
        docker = engines.Engine(engines.DOCKER, tuple(self.docker))
        try:
            found = docker.identity(
                lambda command: self.run(command, "inspecting images").stdout,
                [i.ref for i in images],
            )
        except commands.InspectError as exc:
            raise HostError(
                self.host.name, f"docker cannot inspect {exc.ref}: {exc.message}"
            ) from None
        states = {str(i.ref): image_state(i, found.get(i.ref.familiar)) for i in images}
        self.result.images.update(
            {str(i.ref): found[i.ref.familiar].id for i in images if i.ref.familiar in found}
        )
        self.result.states.update(states)
        return states

    def quietly(self, command: str) -> str:
        """Run a cleanup command; its failure is returned as text, never raised."""
        try:
            result = self.session.run(command, timeout=CLEANUP_TIMEOUT)
        except DistribError as exc:
            return exc.message
        return "" if result.ok else (result.stderr.strip() or f"exit {result.exit_status}")


def _require_docker(host: HostPlan) -> None:
    """The workflow steps drive the docker CLI (commit, save, tag, push, pull, login) as the
    connecting user; podman/containerd hosts and become are not supported by them yet."""
    engine = getattr(host, "engine", "docker")
    if engine != "docker":
        raise HostError(
            host.name,
            f"this step needs a docker engine; {host.name} runs {engine}",
            hint="limit the play or command to docker hosts",
        )
    if getattr(host, "become", None) is not None:
        raise HostError(
            host.name,
            "become is not supported by commit/backup/registry steps yet",
            hint="give the SSH user access to docker (docker group), or set "
            "docker_command: 'sudo -n docker' with a NOPASSWD sudo rule",
        )


def _step(
    host: HostPlan,
    connect: Connector,
    progress: Progress,
    cancel: threading.Event,
    body: Callable[[_Remote], None],
    finish: bool = True,
    lock: bool = True,
) -> HostResult:
    """Connect, take the host lock (unless the caller holds it: `lock` false), run `body`,
    close; every error becomes this host's outcome (reported to `progress` as the host's end
    unless `finish` is false: more of the step follows)."""
    result = HostResult(host.name)
    started = time.monotonic()
    try:
        if cancel.is_set():
            raise Cancelled("interrupted")
        _require_docker(host)
        progress.phase(host.name, "connect")
        t = time.monotonic()
        session = connect(host.target)
        result.timings["connect"] = round(time.monotonic() - t, 3)
        unlock: Callable[[], None] | None = None
        try:
            waited = 0.0
            if lock:  # one distrib run at a time on a host (issue 19)
                unlock, waited = lock_host(session, host)
            body(_Remote(host, session, progress, cancel, result))
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


# --- commit ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitTask:
    """`docker commit` one container on the (single) host of the play."""

    container: str
    image: ImageRef
    message: str | None = None
    author: str | None = None
    become_password: Any = field(default=None, repr=False)  # set by cli; become unsupported

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        def body(remote: _Remote) -> None:
            remote.phase("probe")
            remote.probe()
            remote.containers([self.container])
            remote.done("probe")
            remote.phase("commit")
            image_id = remote.commit(self.container, self.image, self.message, self.author)
            remote.done("commit")
            remote.result.images[str(self.image)] = image_id
            remote.result.status = CHANGED
            remote.result.message = f"committed {self.container} as {self.image} ({image_id[:19]})"

        return _step(host, connect, progress, cancel, body)


# --- backup ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupRecord:
    """One container backed up: where its archive and metadata are on the workstation."""

    host: str
    container: str
    image: str
    image_id: str
    archive: str
    metadata: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "container": self.container,
            "image": self.image,
            "image_id": self.image_id,
            "archive": self.archive,
            "metadata": self.metadata,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass
class BackupTask:
    """Back up `containers` of every host of the play into `dest/<host>/`.

    The committed backup image is removed from the host afterwards unless `keep_image`: the
    archive on the workstation is the backup, and a backup image per run would fill the
    host's disk (the very problem the manual procedure had). `records` collects what was
    written, for the --json output (appended from worker threads under `lock`).
    """

    containers: tuple[str, ...]
    dest: str
    codec: str = "gzip"
    level: int = 6
    when: str = field(default_factory=spec.stamp)
    keep_image: bool = False
    records: list[BackupRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    become_password: Any = field(default=None, repr=False)  # set by cli; become unsupported

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        return _step(host, connect, progress, cancel, lambda remote: self._backup(remote))

    def _backup(self, remote: _Remote) -> None:
        remote.phase("probe")
        facts = remote.probe()
        try:
            compress = commands.host_compressor(self.codec, self.level, facts.tools)
        except ValueError as exc:
            raise HostError(
                remote.host.name,
                f"cannot compress {self.codec} on this host: {exc}; nothing was done",
                hint="use --compression gzip (every host has gzip)",
            ) from None
        found = remote.containers(self.containers)
        remote.done("probe")
        directory = os.path.join(self.dest, spec.safe_file_part(remote.host.name))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        done: list[BackupRecord] = []
        notes: list[str] = []
        for container in self.containers:
            cid, image = found[container]
            done.append(self._one(remote, compress, directory, container, cid, image, notes))
        remote.result.status = CHANGED
        remote.result.message = "backed up " + ", ".join(
            f"{r.container} -> {r.archive} ({human_bytes(r.size)}, sha256 {r.sha256[:12]})"
            for r in done
        )
        if notes:
            remote.result.message += " (" + "; ".join(notes) + ")"

    def _one(
        self,
        remote: _Remote,
        compress: list[str],
        directory: str,
        container: str,
        container_id: str,
        container_image: str,
        notes: list[str],
    ) -> BackupRecord:
        host = remote.host.name
        ref = spec.backup_ref(container, self.when)
        name = f"{container}-{self.when}"
        final = os.path.join(directory, name + archives_extension(self.codec))
        meta_file = os.path.join(directory, name + ".json")
        if os.path.exists(final) or os.path.exists(meta_file):
            raise HostError(host, f"{final} already exists; not overwritten")
        remote.phase("commit")
        image_id = remote.commit(
            container, ref, f"distrib backup of {container} on {host}", "distrib backup"
        )
        remote.done("commit")
        try:
            image = remote.inspect(ref)
            size, digest = self._fetch(remote, compress, ref, image.size, final)
            if image.containerd_store:
                # docker's containerd store prints a manifest digest, not the image's identity
                # (its config digest, what a restore checks and verifies hosts by): read the
                # config digest from the archive itself (issue 14)
                try:
                    image_id = _archived_config_digest(host, final, self.codec, ref)
                except TransferError:
                    os.unlink(final)  # not a backup that restore could check
                    raise
        finally:
            if not self.keep_image:
                failed = remote.quietly(commands.remove_images(remote.docker, [ref]))
                if failed:
                    notes.append(f"backup image {ref} not removed: {failed}")
        document = archives.metadata_document(
            host=host,
            address=remote.host.target.address,
            container=container,
            container_id=container_id,
            container_image=container_image,
            image=str(ref),
            image_id=image_id,
            diff_ids=image.diff_ids,
            created=self.when,
            archive=os.path.basename(final),
            codec=self.codec,
            size=size,
            sha256=digest,
            kept_on_host=self.keep_image,
        )
        _write_json(meta_file, document)
        record = BackupRecord(host, container, str(ref), image_id, final, meta_file, size, digest)
        with self.lock:
            self.records.append(record)
        remote.result.images[str(ref)] = image_id
        return record

    def _fetch(
        self, remote: _Remote, compress: list[str], ref: ImageRef, estimate: int, final: str
    ) -> tuple[int, str]:
        """Stream `docker save | compress` from the host into `final`.part, hashing on the way;
        rename only when the host's sha256 of the same bytes agrees."""
        part = final + ".part"
        command = commands.save_stream(remote.docker, [ref], compress)
        guard = DiskGuard(remote.host.name, os.path.dirname(final))  # issue 19
        guard.preflight(estimate)
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            remote.phase("download")
            # The compressed size is unknown until the end: the bar's total is the image's
            # unpacked size, an upper bound.
            remote.progress.transfer_started(remote.host.name, max(estimate, 1))
            try:
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    sink = _HashingSink(
                        out, remote.cancel, guard, _fetch_limit(estimate), remote.host.name
                    )
                    result = _download(remote, command, sink)
                    out.flush()
                    os.fsync(out.fileno())
                remote.done("download")
                report = commands.parse_save_stream(result.stderr)
                if not result.ok or not report.ok:
                    stages = ", ".join(f"{k} exit {v}" for k, v in report.failed.items())
                    raise CommandError(
                        remote.host.name,
                        command,
                        result.exit_status or 1,
                        "",
                        report.messages or result.stderr,
                        what=f"docker save of {ref} on the host"
                        + (f" ({stages})" if stages else ""),
                    )
                if report.sha256 == sink.sha256:
                    os.replace(part, final)
                    return sink.size, sink.sha256
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise TransferError(
                        remote.host.name,
                        f"checksum mismatch after {attempt} attempts (host sent "
                        f"{report.sha256[:12] if report.sha256 else '?'}, received "
                        f"{sink.sha256[:12]}); nothing kept",
                    )
            finally:
                if os.path.exists(part):
                    os.unlink(part)
        raise AssertionError("unreachable")  # pragma: no cover


def _archived_config_digest(host: str, path: str, codec: str, ref: ImageRef) -> str:
    """The config digest of `ref` in a fetched backup archive (TransferError when it is not
    there: such a backup could not be restored)."""
    try:
        contents = archives.read_contents(path, codec)
    except DistribError as exc:
        raise TransferError(host, f"{path}: {exc.message}") from None
    for image in contents.images:
        if image.ref.familiar == ref.familiar:
            return image.id
    raise TransferError(host, f"{path} does not hold {ref}")


def archives_extension(codec: str) -> str:
    from distrib.archive import EXTENSIONS

    return EXTENSIONS[codec]


class _HashingSink:
    """Writes downloaded bytes to a file, hashing them; raises Cancelled when interrupted."""

    def __init__(
        self,
        out: IO[bytes],
        cancel: threading.Event,
        guard: DiskGuard | None = None,
        limit: int | None = None,
        host: str = "",
    ) -> None:
        self.out = out
        self.cancel = cancel
        self.guard = guard
        self.limit = limit  # the most bytes the host may send
        self.host = host
        self.digest = hashlib.sha256()
        self.size = 0

    def __call__(self, block: bytes) -> None:
        if self.cancel.is_set():
            raise Cancelled("interrupted during download")
        if self.limit is not None and self.size + len(block) > self.limit:
            raise TransferError(
                self.host,
                f"the host sent more than {human_bytes(self.limit)}, more than the image could "
                "take: stopped, nothing kept",
            )
        if self.guard is not None:
            self.guard.wrote(len(block))
        self.out.write(block)
        self.digest.update(block)
        self.size += len(block)

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


def _download(remote: _Remote, command: str, write: Callable[[bytes], None]) -> Result:
    session = remote.session
    download = getattr(session, "download", None)
    if download is None:
        raise HostError(remote.host.name, "this transport cannot stream a file back")

    def count(nbytes: int) -> None:
        remote.progress.advance(remote.host.name, nbytes)

    result: Result = download(command, write, on_bytes=count, timeout=SAVE_TIMEOUT)
    return result


def _write_json(path: str, document: dict[str, Any]) -> None:
    """Write a JSON file atomically, readable only by its owner (it describes a backup)."""
    fd, tmp = tempfile.mkstemp(prefix=".meta-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --- registry: push from one host inside the site, pull on every host ----------------------------


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


@dataclass(frozen=True)
class RegistryTarget:
    registry: str
    insecure: bool
    credentials: Credentials | None
    pairs: tuple[tuple[LocalImage, LocalImage], ...]  # (image as shipped, its registry name)

    def check_policy(self, remote: _Remote) -> None:
        """Plain HTTP only when the play says `insecure: true`, and only when this host's
        engine allows it for this registry (else the failure would come later and vaguer)."""
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

    def session(self, remote: _Remote, steps: Sequence[Sequence[str]], what: str) -> Result:
        """Run docker `steps` against the registry, logged in when there are credentials."""
        username = self.credentials.username if self.credentials else None
        command = commands.registry_session(
            remote.docker, self.registry, remote.host.remote_tmp, steps, username
        )
        if self.credentials is None:
            result = remote.session.run(command, timeout=REGISTRY_TIMEOUT)
        else:
            result = remote.session.upload(
                command, [self.credentials.password], timeout=REGISTRY_TIMEOUT
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
    become_password: Any = field(default=None, repr=False)  # set by cli; become unsupported

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        # one lock for the three steps (issue 19): no other run between shipping and pushing
        try:
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
        checked = _step(host, connect, progress, cancel, self._preflight, finish=False, lock=False)
        if checked.failed:
            self.outcome.ok, self.outcome.reason = False, self._failed_on(host)
            checked.message = f"{checked.message}; nothing was sent"
            return checked
        quiet = QuietProgress(progress)
        shipped = deploy(host, self.deploy_job, connect, quiet, cancel, host_locked=True)
        if shipped.failed:
            self.outcome.ok, self.outcome.reason = False, self._failed_on(host)
            shipped.message = f"not pushed: {shipped.message}"
            return shipped
        result = _step(
            host,
            connect,
            progress,
            cancel,
            lambda remote: self._push(remote, shipped),
            finish=False,
            lock=False,
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

    def _preflight(self, remote: _Remote) -> None:
        remote.phase("registry")
        self.target.check_policy(remote)
        remote.done("registry")

    def _push(self, remote: _Remote, shipped: HostResult) -> None:
        names = ", ".join(str(reg.ref) for _, reg in self.target.pairs)
        if self.check:
            remote.result.status = CHANGED
            remote.result.message = f"{shipped.message}; would push {names}"
            return
        remote.phase("push")
        steps: list[list[str]] = [["tag", str(i.ref), str(r.ref)] for i, r in self.target.pairs]
        steps += [["push", str(r.ref)] for _, r in self.target.pairs]
        pushed = self.target.session(remote, steps, f"docker push to {self.target.registry}")
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
    become_password: Any = field(default=None, repr=False)  # set by cli; become unsupported

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        if self.outcome.ok is False:
            result = HostResult(host.name, SKIPPED, f"not pulled: {self.outcome.reason}")
            progress.finished(result)
            return result
        return _step(host, connect, progress, cancel, self._pull, lock=not self.check)

    def _pull(self, remote: _Remote) -> None:
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
        steps: list[list[str]] = [["pull", str(r.ref)] for _, r in todo]
        steps += [["tag", str(r.ref), str(i.ref)] for i, r in todo]
        self.target.session(remote, steps, f"docker pull from {self.target.registry}")
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
    remote: _Remote, images: Sequence[LocalImage], facts: commands.Facts
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


# --- a playbook's commit step: commit on one host, fetch the image into the local docker ---------


@dataclass(frozen=True)
class Noted:
    """A host outcome decided without connecting (check mode of a commit play)."""

    status: str
    message: str
    become_password: Any = field(default=None, repr=False)  # set by cli; unused

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        result = HostResult(host.name, self.status, self.message)
        progress.finished(result)
        return result


def commit_and_fetch(
    host: HostPlan,
    task: CommitTask,
    connect: Connector,
    cancel: threading.Event | None = None,
) -> tuple[HostResult, LocalImage | None]:
    """Commit on `host`, then stream `docker save | gzip` from it into the workstation's
    `docker load`; the image must arrive with the very ID the commit produced."""
    cancel = cancel or threading.Event()
    fetched: dict[str, LocalImage] = {}

    def body(remote: _Remote) -> None:
        remote.phase("probe")
        facts = remote.probe()
        remote.containers([task.container])
        remote.done("probe")
        remote.phase("commit")
        image_id = remote.commit(task.container, task.image, task.message, task.author)
        remote.done("commit")
        remote.result.images[str(task.image)] = image_id
        compress = commands.host_compressor("gzip", FETCH_LEVEL, facts.tools)
        remote.phase("fetch")
        size = _fetch_into_local_docker(remote, task.image, compress, remote.inspect(task.image))
        remote.done("fetch")
        found, missing = _inspect_local(task.image)
        # Same image = same config (engine.image_state): the IDs alone differ as soon as one
        # side is docker's containerd store (a manifest digest there, issue 14).
        state = MISSING if missing else remote.identity([found])[str(task.image)]
        if state != PRESENT:
            raise TransferError(
                remote.host.name,
                f"{task.image} fetched, but the local docker holds "
                f"{found.id[:19] if not missing else 'nothing'}, not the config committed on "
                f"the host ({image_id[:19]}: {state} there)",
            )
        remote.result.images[str(task.image)] = found.id  # the config digest, on every engine
        fetched["image"] = found
        remote.result.status = CHANGED
        remote.result.message = (
            f"committed {task.container} as {task.image} ({image_id[:19]}) and fetched it "
            f"into the local docker ({human_bytes(size)} gzip)"
        )

    result = _step(host, connect, Progress(), cancel, body)
    return result, fetched.get("image")


def _inspect_local(ref: ImageRef) -> tuple[LocalImage, bool]:
    from distrib import archive as archive_mod

    found, missing = archive_mod.inspect_local([ref])
    return (found[ref], False) if ref in found else (LocalImage(ref, "", (), 0), True)


def _fetch_into_local_docker(
    remote: _Remote, ref: ImageRef, compress: list[str], committed: commands.Inspected
) -> int:
    """Fetch the host's `docker save | gzip` of `ref` into a private file on the workstation and
    check it before the local docker sees a byte (issue 19: a compromised host must not
    retag the workstation's images): the host's sha256 of the stream, a size no larger than
    the image, exactly one image tagged `ref` and nothing else, whose config the host shows as
    the committed image's. Only then `docker load`."""
    from distrib import archive as archive_mod

    command = commands.save_stream(remote.docker, [ref], compress)
    host = remote.host.name
    directory = archive_mod.ensure_cache_dir()
    guard = DiskGuard(host, directory)
    guard.preflight(committed.size)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".commit-", suffix=".tar.gz") as tmp:
        limit = _fetch_limit(committed.size)
        sink = _HashingSink(tmp, remote.cancel, guard, limit=limit, host=host)
        result = _download(remote, command, sink)
        tmp.flush()
        report = commands.parse_save_stream(result.stderr)
        if not result.ok or not report.ok:
            raise CommandError(
                host,
                command,
                result.exit_status or 1,
                "",
                report.messages or result.stderr,
                what=f"docker save of {ref} on the host",
            )
        if report.sha256 != sink.sha256:
            raise TransferError(host, f"{ref}: the stream arrived corrupted")
        _check_commit_archive(remote, ref, tmp.name)
        loaded = local.run(
            [*archive_mod.docker_command(), "load", "-i", tmp.name], check=False, timeout=3600
        )
        if not loaded.ok:
            raise LocalError(f"local docker load of {ref} failed", stderr=loaded.stderr)
    return sink.size


def _fetch_limit(image_size: int) -> int:
    """The most a host may send for a compressed save of an image whose engine reports
    `image_size` (gzip and zstd grow incompressible data by well under 1%; the margin covers
    engines that report a compressed size, and docker 25+ saves' OCI index and configs)."""
    return image_size * 2 + 64 * 1024 * 1024


def _check_commit_archive(remote: _Remote, ref: ImageRef, path: str) -> None:
    """The fetched archive holds exactly `ref`, one image, and the host shows that image's
    config under `ref`: else TransferError, and nothing is loaded."""
    host = remote.host.name
    try:
        contents = archives.read_contents(path, "gzip")
    except DistribError as exc:
        raise TransferError(host, f"the fetched {ref} is not a valid archive: {exc}") from None
    names = sorted(str(i.ref) for i in contents.images)
    if contents.untagged or names != [str(ref)]:
        raise TransferError(
            host,
            f"the fetched archive for {ref} names {', '.join(names) or 'no image'}"
            + (f" and {contents.untagged} untagged image(s)" if contents.untagged else "")
            + ": refused, nothing loaded (only the committed image may arrive)",
        )
    state = remote.identity(list(contents.images))[str(ref)]
    if state != PRESENT:
        raise TransferError(
            host,
            f"the fetched archive's config for {ref} is not the committed image's ({state} on "
            "the host): refused, nothing loaded",
        )
