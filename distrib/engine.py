"""Per-host steps: connect -> probe -> (skip if up to date) -> upload -> checksum -> load -> verify
-> cleanup. One function, `deploy`, drives one host and never raises for a host problem: every
outcome becomes a HostResult (STYLE: every host's outcome is collected).

The session factory is injected, so the engine is tested against a fake transport and the
integration tests run it against real sshd + dockerd hosts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from distrib import commands
from distrib.archive import Archive, LocalImage
from distrib.errors import (
    CommandError,
    ConnectError,
    DistribError,
    HostError,
    TransferError,
    VerifyError,
)
from distrib.plan import HostPlan
from distrib.transport import Result, Session, Target
from distrib.units import human_bytes as _human

OK = "ok"
CHANGED = "changed"
FAILED = "failed"
UNREACHABLE = "unreachable"
SKIPPED = "skipped"

PROBE_TIMEOUT = 60.0
CHECKSUM_TIMEOUT = 900.0
LOAD_TIMEOUT = 3600.0
CLEANUP_TIMEOUT = 30.0
UPLOAD_ATTEMPTS = 2  # a checksum mismatch is re-sent once, never loaded
DISK_MARGIN = 1.1  # free space asked for beyond the bytes themselves

AUTO = "auto"
STAGED = "staged"
STREAM = "stream"
TRANSFER_MODES = (AUTO, STAGED, STREAM)

Connector = Callable[[Target], Session]


class Cancelled(DistribError):
    """The run was interrupted (SIGINT/SIGTERM); the host was left clean."""


class Progress:
    """Receives progress events from worker threads. The default does nothing."""

    def phase(self, host: str, phase: str) -> None:
        pass

    def transfer_started(self, host: str, total: int) -> None:
        pass

    def advance(self, host: str, nbytes: int) -> None:
        pass

    def finished(self, result: HostResult) -> None:
        pass


@dataclass
class HostResult:
    host: str
    status: str = SKIPPED
    message: str = ""
    images: dict[str, str] = field(default_factory=dict)  # ref -> image id seen on the host
    states: dict[str, str] = field(default_factory=dict)  # ref -> present | missing | different
    bytes_sent: int = 0
    resumed_from: int = 0  # bytes of an earlier cut-off upload that were kept
    timings: dict[str, float] = field(default_factory=dict)
    error: DistribError | None = None

    @property
    def failed(self) -> bool:
        return self.status in (FAILED, UNREACHABLE)


DEPLOY = "deploy"  # ship what is missing, load, verify
CHECK = "check"  # read-only: report what would be shipped
VERIFY = "verify"  # read-only: report drift (present / missing / different per image)

PRESENT = "present"
MISSING = "missing"
DIFFERENT = "different"


@dataclass(frozen=True)
class Job:
    """What to do on each host of a play. `archive` may be None in the read-only modes."""

    images: tuple[LocalImage, ...]
    archive: Archive | None = None
    verify: bool = True
    mode: str = DEPLOY
    codec: str = "gzip"

    @classmethod
    def deploy(cls, archive: Archive, verify: bool = True) -> Job:
        return cls(archive.images, archive, verify, DEPLOY, archive.codec)


def deploy(
    host: HostPlan,
    job: Job,
    connect: Connector,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> HostResult:
    """Bring `host` to hold every image of `job`, verified. Never raises for host problems."""
    progress = progress or Progress()
    cancel = cancel or threading.Event()
    result = HostResult(host.name)
    started = time.monotonic()
    try:
        _Deployment(host, job, connect, progress, cancel, result).run()
    except ConnectError as exc:
        result.status, result.error, result.message = UNREACHABLE, exc, exc.message
    except DistribError as exc:
        result.status, result.error, result.message = FAILED, exc, exc.message
    except Exception as exc:  # a bug or an unexpected library error: still only this host
        result.status, result.message = FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
        result.error = HostError(host.name, result.message)
    result.timings["total"] = round(time.monotonic() - started, 3)
    progress.finished(result)
    return result


class _Deployment:
    def __init__(
        self,
        host: HostPlan,
        job: Job,
        connect: Connector,
        progress: Progress,
        cancel: threading.Event,
        result: HostResult,
    ) -> None:
        self.host = host
        self.job = job
        self.connect = connect
        self.progress = progress
        self.cancel = cancel
        self.result = result
        self.docker = list(host.docker)
        self.session: Session | None = None

    # -- helpers ---------------------------------------------------------------------------

    def _phase(self, name: str) -> None:
        if self.cancel.is_set():
            raise Cancelled("interrupted")
        self.progress.phase(self.host.name, name)

    def _timed(self, name: str, started: float) -> None:
        self.result.timings[name] = round(time.monotonic() - started, 3)

    def _run(self, command: str, what: str, timeout: float) -> Result:
        assert self.session is not None
        result = self.session.run(command, timeout=timeout)
        if not result.ok:
            raise CommandError(
                self.host.name, command, result.exit_status, result.stdout, result.stderr, what=what
            )
        return result

    # -- the steps ---------------------------------------------------------------------------

    def run(self) -> None:
        self._phase("connect")
        t = time.monotonic()
        self.session = self.connect(self.host.target)
        self._timed("connect", t)
        try:
            self._deploy()
        finally:
            self.session.close()

    def _deploy(self) -> None:
        self._phase("probe")
        t = time.monotonic()
        facts = commands.parse_probe(
            self._run(
                commands.probe(self.docker, self.host.remote_tmp), "probe", PROBE_TIMEOUT
            ).stdout
        )
        if not facts.engine_ok:
            why = self.session.run(  # type: ignore[union-attr]
                commands.join([*self.docker, "version"]), timeout=PROBE_TIMEOUT
            )
            raise CommandError(
                self.host.name,
                why.command,
                why.exit_status or 1,
                why.stdout,
                why.stderr,
                what="the container engine does not answer",
                hint="is the engine running, and may this user use it (docker group, become)?",
            )
        images = self.job.images
        before, states = self._identity(images)
        self._timed("probe", t)
        self.result.images, self.result.states = before, states
        missing = [str(i.ref) for i in images if states[str(i.ref)] != PRESENT]
        if self.job.mode == VERIFY:
            if missing:
                self.result.status = FAILED
                self.result.message = "drift: " + ", ".join(
                    f"{ref} {states[ref]}" for ref in missing
                )
                self.result.error = VerifyError(self.host.name, self.result.message)
            else:
                self.result.status = OK
                self.result.message = f"all {len(images)} image(s) present with the same content"
            return
        if not missing:
            self.result.status = OK
            self.result.message = "all images already present"
            return
        if self.job.codec == "zstd" and not facts.has("zstd"):
            raise HostError(
                self.host.name,
                f"archive is zstd-compressed but the host has no zstd and its engine "
                f"(docker {facts.engine_version}) cannot read zstd",
                hint="use compression: gzip for this play, or install zstd on the host",
            )
        if self.job.mode == CHECK:
            self.result.status = CHANGED
            size = self.job.archive.size if self.job.archive else sum(i.size for i in images)
            kind = "" if self.job.archive else " uncompressed"
            self.result.message = (
                f"would send {_human(size)}{kind} for {', '.join(missing)} (check mode)"
            )
            return
        mode = self._transfer_mode(facts, [i for i in images if str(i.ref) in missing])
        if self.job.mode == CHECK:
            self.result.status = CHANGED
            size = self.job.archive.size if self.job.archive else sum(i.size for i in images)
            kind = "" if self.job.archive else " uncompressed"
            self.result.message = (
                f"would send {_human(size)}{kind} for {', '.join(missing)} "
                f"({mode} transfer, check mode)"
            )
            return
        if mode == STREAM:
            self._stream()
        else:
            self._staged()
        self.result.status = CHANGED
        if self.job.verify:
            self._phase("verify")
            t = time.monotonic()
            after, states = self._identity(images)
            self._timed("verify", t)
            self.result.images, self.result.states = after, states
            wrong = [f"{ref} {state}" for ref, state in states.items() if state != PRESENT]
            if wrong:
                raise VerifyError(self.host.name, "after loading: " + "; ".join(wrong))
            self.result.message = f"loaded and verified {len(images)} image(s)"
        else:
            self.result.message = f"loaded {len(images)} image(s) (verify off)"
        if mode == STREAM:
            self.result.message += (
                " (streamed: staging space too small)"
                if (self.host.transfer == AUTO)
                else " (streamed)"
            )

    def _transfer_mode(self, facts: commands.Facts, missing: list[LocalImage]) -> str:
        """Disk preflight: fail before a byte is sent when the engine's data root cannot hold
        the images; stream into `docker load` when only the staging area is too small."""
        unpacked = int(sum(i.size for i in missing) * DISK_MARGIN)
        if facts.root_avail is not None and facts.root_avail < unpacked:
            raise HostError(
                self.host.name,
                f"not enough space in the engine's data root {facts.docker_root or '?'}: "
                f"the images need about {_human(unpacked)}, {_human(facts.root_avail)} free; "
                "nothing was sent",
                hint="free space on the host (docker image prune) and run again",
            )
        archive_size = self.job.archive.size if self.job.archive else sum(i.size for i in missing)
        staging_fits = facts.tmp_avail is None or facts.tmp_avail >= archive_size * DISK_MARGIN
        wanted = self.host.transfer
        if wanted == STAGED and not staging_fits:
            raise HostError(
                self.host.name,
                f"not enough space in {self.host.remote_tmp} for the archive: need "
                f"{_human(archive_size * DISK_MARGIN)}, {_human(facts.tmp_avail or 0)} free; "
                "nothing was sent",
                hint="use transfer: stream (or auto), or another remote_tmp",
            )
        if wanted == AUTO:
            return STAGED if staging_fits else STREAM
        return wanted

    # -- staged transfer: private dir, resumable upload, checksum, then load ------------------

    def _staged(self) -> None:
        archive = self.job.archive
        assert archive is not None and self.session is not None
        tempdir = commands.staging_dir(self.host.remote_tmp, archive.sha256)
        part = f"{tempdir}/{commands.ARCHIVE_NAME}{archive.extension}.part"
        final = f"{tempdir}/{commands.ARCHIVE_NAME}{archive.extension}"
        self._phase("upload")
        present = commands.parse_staging(
            self._run(
                commands.make_staging(self.host.remote_tmp, archive.sha256, part),
                "creating the private staging dir",
                PROBE_TIMEOUT,
            ).stdout
        )
        keep_partial = False
        try:
            self._transfer(part, final, present)
            self._phase("load")
            t = time.monotonic()
            self._run(
                commands.load(self.docker, final, self.job.codec), "docker load", LOAD_TIMEOUT
            )
            self._timed("load", t)
        except ConnectError:
            keep_partial = True  # the link is gone: what arrived stays for the next run to resume
            raise
        finally:
            if not keep_partial:
                self._cleanup(tempdir)

    def _transfer(self, part: str, final: str, present: int) -> None:
        archive = self.job.archive
        assert archive is not None and self.session is not None
        t = time.monotonic()
        offset = self._resume_offset(part, present)
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            self.progress.transfer_started(self.host.name, archive.size - offset)
            sent = self.session.upload(
                commands.receive(part, append=offset > 0),
                self._chunks(offset),
                on_bytes=self._count,
                timeout=CHECKSUM_TIMEOUT,
            )
            if not sent.ok:
                raise CommandError(
                    self.host.name,
                    sent.command,
                    sent.exit_status,
                    sent.stdout,
                    sent.stderr,
                    what="writing the archive on the host",
                )
            self._phase("checksum")
            remote = commands.parse_sha256(
                self._run(commands.sha256(part), "sha256sum", CHECKSUM_TIMEOUT).stdout
            )
            if remote == archive.sha256:
                self._run(commands.promote(part, final), "renaming the archive", PROBE_TIMEOUT)
                self._timed("upload", t)
                return
            if attempt == UPLOAD_ATTEMPTS:
                raise TransferError(
                    self.host.name,
                    f"checksum mismatch after {attempt} attempts "
                    f"(expected {archive.sha256[:12]}, host has {remote[:12]}); not loaded",
                )
            self._run(commands.remove(part), "removing the bad copy", PROBE_TIMEOUT)
            offset = 0
            self._phase("upload")

    def _resume_offset(self, part: str, present: int) -> int:
        """Bytes of a previous, cut-off upload that can be kept (prefix checked by sha256)."""
        archive = self.job.archive
        assert archive is not None
        if present <= 0:
            return 0
        if present < archive.size:
            remote = commands.parse_sha256(
                self._run(
                    commands.prefix_sha256(part, present),
                    "checking the partial upload",
                    CHECKSUM_TIMEOUT,
                ).stdout
            )
            if remote == archive.prefix_sha256(present):
                self.result.resumed_from = present
                return present
        # longer than the archive, or a different prefix: start over
        self._run(commands.remove(part), "removing a stale partial upload", PROBE_TIMEOUT)
        return 0

    def _chunks(self, offset: int = 0) -> Iterator[bytes]:
        assert self.job.archive is not None
        for chunk in self.job.archive.chunks(offset):
            if self.cancel.is_set():
                raise Cancelled("interrupted during upload")
            yield chunk

    # -- streamed transfer: straight into docker load, no temp file ----------------------------

    def _stream(self) -> None:
        archive = self.job.archive
        assert archive is not None and self.session is not None
        self._phase("stream")
        t = time.monotonic()
        self.progress.transfer_started(self.host.name, archive.size)
        loaded = self.session.upload(
            commands.stream_load(self.docker, self.job.codec),
            self._chunks(),
            on_bytes=self._count,
            timeout=LOAD_TIMEOUT,
        )
        if not loaded.ok:
            raise CommandError(
                self.host.name,
                loaded.command,
                loaded.exit_status,
                loaded.stdout,
                loaded.stderr,
                what="docker load (streamed)",
            )
        self._timed("upload", t)

    def _count(self, nbytes: int) -> None:
        self.result.bytes_sent += nbytes
        self.progress.advance(self.host.name, nbytes)

    def _cleanup(self, tempdir: str) -> None:
        """Remove our temp dir whatever happened; a failure here is reported, not raised."""
        assert self.session is not None
        try:
            self.session.run(commands.cleanup(tempdir), timeout=CLEANUP_TIMEOUT)
        except DistribError as exc:
            self.result.message += f" (cleanup of {tempdir} failed: {exc.message})"

    def _listing(self, images: tuple[LocalImage, ...]) -> dict[str, str]:
        out = self._run(
            commands.list_images(self.docker, [i.ref for i in images]),
            "listing images",
            PROBE_TIMEOUT,
        ).stdout
        return commands.parse_image_list(out)

    def _identity(self, images: tuple[LocalImage, ...]) -> tuple[dict[str, str], dict[str, str]]:
        """What the host holds under each tag: (ref -> id, ref -> present|missing|different).

        Same image ID means same content. A different ID can still be the same content: the
        containerd image store names images by manifest digest, the classic store by config
        digest (DESIGN.md). Then the layer diffIDs decide.
        """
        found = self._listing(images)
        states: dict[str, str] = {}
        unsure = []
        for image in images:
            ref = str(image.ref)
            seen = found.get(image.ref.familiar)
            if seen is None:
                states[ref] = MISSING
            elif seen == image.id:
                states[ref] = PRESENT
            else:
                unsure.append(image)
        if unsure:
            layers = self._layers([i.ref.familiar for i in unsure])
            for image in unsure:
                same = layers.get(image.ref.familiar) == image.diff_ids and image.diff_ids
                states[str(image.ref)] = PRESENT if same else DIFFERENT
        return {
            str(i.ref): found[i.ref.familiar] for i in images if i.ref.familiar in found
        }, states

    def _layers(self, refs: list[str]) -> dict[str, tuple[str, ...]]:
        out = self._run(
            commands.inspect_layers(self.docker, refs), "inspecting images", PROBE_TIMEOUT
        )
        return commands.parse_inspect_layers(out.stdout)
