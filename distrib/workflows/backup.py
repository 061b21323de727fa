"""`BackupTask`: commit containers, `ENGINE save | compress` ON the host (docker, podman; as
the become user), stream the bytes back to the workstation (sha256 on both ends), keep the
archive and a metadata file. containerd hosts are refused before connecting (ctr has no commit).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from distrib import commands, engines
from distrib.diskspace import DiskGuard
from distrib.engine import CHANGED, Cancelled, Connector, HostResult, Progress
from distrib.errors import CommandError, DistribError, HostError, TransferError
from distrib.plan import HostPlan
from distrib.refs import ImageRef
from distrib.target import Result
from distrib.units import human_bytes
from distrib.workflows import archives, hostcmds, spec
from distrib.workflows.frame import Remote, run_step, secret_of

SAVE_TIMEOUT = 6 * 3600.0
DOWNLOAD_ATTEMPTS = 2  # a checksum mismatch is fetched once more, never kept


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
    become_password: Any = field(default=None, repr=False)  # set by cli: sudo's, stdin only

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        return run_step(
            host, connect, progress, cancel, self._backup, step=hostcmds.BACKUP,
            secret=secret_of(self),
        )  # fmt: skip

    def _backup(self, remote: Remote) -> None:
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
        remote: Remote,
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
        archived = ImageRef.parse(hostcmds.local_name(remote.kind, ref))  # its name in the archive
        remote.phase("commit")
        image_id = remote.commit(
            container, ref, f"distrib backup of {container} on {host}", "distrib backup"
        )
        remote.done("commit")
        try:
            image = remote.inspect(ref)
            size, digest = self._fetch(remote, compress, ref, image.size, final)
            if image.containerd_store or remote.kind != engines.DOCKER:
                # docker's containerd store prints a manifest digest, not the image's identity
                # (its config digest, what a restore checks and verifies hosts by): read the
                # config digest from the archive itself (issue 14); so on podman, whose
                # archive names the image as podman does (`localhost/NAME`)
                try:
                    image_id = archived_config_digest(host, final, self.codec, archived)
                except TransferError:
                    os.unlink(final)  # not a backup that restore could check
                    raise
        finally:
            if not self.keep_image:
                failed = remote.quietly(hostcmds.remove_image(remote.engine, ref))
                if failed:
                    notes.append(f"backup image {ref} not removed: {failed}")
        document = archives.metadata_document(
            host=host,
            address=remote.host.target.address,
            container=container,
            container_id=container_id,
            container_image=container_image,
            image=str(archived),
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
        name = str(archived)
        record = BackupRecord(host, container, name, image_id, final, meta_file, size, digest)
        with self.lock:
            self.records.append(record)
        remote.result.images[str(archived)] = image_id
        return record

    def _fetch(
        self, remote: Remote, compress: list[str], ref: ImageRef, estimate: int, final: str
    ) -> tuple[int, str]:
        """Stream `docker save | compress` from the host into `final`.part, hashing on the way;
        rename only when the host's sha256 of the same bytes agrees."""
        part = final + ".part"
        command = remote.engine.wrap(hostcmds.save_stream(remote.engine, ref, compress))
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
                    sink = HashingSink(
                        out, remote.cancel, guard, fetch_limit(estimate), remote.host.name
                    )
                    result = download(remote, command, sink)
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
                        what=f"{remote.kind} save of {ref} on the host"
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


def archived_config_digest(host: str, path: str, codec: str, ref: ImageRef) -> str:
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


class HashingSink:
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


def download(remote: Remote, command: str, write: Callable[[bytes], None]) -> Result:
    """Stream the stdout of `command` (already wrapped for become) into `write`; sudo's
    password line, when it needs one, goes on stdin."""
    session = remote.session
    fetch = getattr(session, "download", None)
    if fetch is None:
        raise HostError(remote.host.name, "this transport cannot stream a file back")

    def count(nbytes: int) -> None:
        remote.progress.advance(remote.host.name, nbytes)

    if remote.stdin:
        with_stdin: Result = fetch(
            command, write, on_bytes=count, timeout=SAVE_TIMEOUT, stdin=remote.stdin
        )
        return with_stdin
    result: Result = fetch(command, write, on_bytes=count, timeout=SAVE_TIMEOUT)
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


def fetch_limit(image_size: int) -> int:
    """The most a host may send for a compressed save of an image whose engine reports
    `image_size` (gzip and zstd grow incompressible data by well under 1%; the margin covers
    engines that report a compressed size, and docker 25+ saves' OCI index and configs)."""
    return image_size * 2 + 64 * 1024 * 1024
