"""Commit steps (docker, podman; refused on containerd before connecting: ctr has no commit):

- `CommitTask`: commit a container on the host (message and author recorded)
- `commit_and_fetch`: a playbook's commit step: commit on one host, then fetch the image into
  the workstation's docker, checked before it is loaded
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from distrib import commands, local
from distrib.archive import LocalImage
from distrib.diskspace import DiskGuard
from distrib.engine import CHANGED, MISSING, PRESENT, Connector, HostResult, Progress
from distrib.errors import CommandError, DistribError, LocalError, TransferError
from distrib.plan import HostPlan
from distrib.refs import ImageRef
from distrib.units import human_bytes
from distrib.workflows import archives, hostcmds
from distrib.workflows.backup import HashingSink, download, fetch_limit
from distrib.workflows.frame import Remote, run_step, secret_of

FETCH_LEVEL = 1  # host -> workstation hop of a playbook commit: speed over ratio (one use)


@dataclass(frozen=True)
class CommitTask:
    """`docker commit` one container on the (single) host of the play."""

    container: str
    image: ImageRef
    message: str | None = None
    author: str | None = None
    become_password: Any = field(default=None, repr=False)  # set by cli: sudo's, stdin only

    def run_on(
        self, host: HostPlan, connect: Connector, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        def body(remote: Remote) -> None:
            image_id = self.commit_on(remote)
            remote.result.status = CHANGED
            remote.result.message = f"committed {self.container} as {self.image} ({image_id[:19]})"

        return run_step(
            host, connect, progress, cancel, body, step=hostcmds.COMMIT, secret=secret_of(self)
        )

    def commit_on(self, remote: Remote) -> str:
        """Probe, find the container, commit it; the new image's ID."""
        remote.phase("probe")
        remote.probe()
        remote.containers([self.container])
        remote.done("probe")
        remote.phase("commit")
        image_id = remote.commit(self.container, self.image, self.message, self.author)
        remote.done("commit")
        remote.result.images[str(self.image)] = image_id
        return image_id


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

    def body(remote: Remote) -> None:
        image_id = task.commit_on(remote)
        assert remote.result.facts is not None
        compress = commands.host_compressor("gzip", FETCH_LEVEL, remote.result.facts.tools)
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

    result = run_step(
        host, connect, Progress(), cancel, body, step=hostcmds.COMMIT_STEP, secret=secret_of(task)
    )
    return result, fetched.get("image")


def _inspect_local(ref: ImageRef) -> tuple[LocalImage, bool]:
    from distrib import archive as archive_mod

    found, missing = archive_mod.inspect_local([ref])
    return (found[ref], False) if ref in found else (LocalImage(ref, "", (), 0), True)


def _fetch_into_local_docker(
    remote: Remote, ref: ImageRef, compress: list[str], committed: commands.Inspected
) -> int:
    """Fetch the host's `docker save | gzip` of `ref` into a private file on the workstation and
    check it before the local docker sees a byte (issue 19: a compromised host must not
    retag the workstation's images): the host's sha256 of the stream, a size no larger than
    the image, exactly one image tagged `ref` and nothing else, whose config the host shows as
    the committed image's. Only then `docker load`."""
    from distrib import archive as archive_mod

    command = remote.engine.wrap(hostcmds.save_stream(remote.engine, ref, compress))
    archived = ImageRef.parse(hostcmds.local_name(remote.kind, ref))  # podman: localhost/NAME
    host = remote.host.name
    directory = archive_mod.ensure_cache_dir()
    guard = DiskGuard(host, directory)
    guard.preflight(committed.size)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".commit-", suffix=".tar.gz") as tmp:
        limit = fetch_limit(committed.size)
        sink = HashingSink(tmp, remote.cancel, guard, limit=limit, host=host)
        result = download(remote, command, sink)
        tmp.flush()
        report = commands.parse_save_stream(result.stderr)
        if not result.ok or not report.ok:
            raise CommandError(
                host,
                command,
                result.exit_status or 1,
                "",
                report.messages or result.stderr,
                what=f"{remote.kind} save of {ref} on the host",
            )
        if report.sha256 != sink.sha256:
            raise TransferError(host, f"{ref}: the stream arrived corrupted")
        _check_commit_archive(remote, archived, tmp.name)
        loaded = local.run(
            [*archive_mod.docker_command(), "load", "-i", tmp.name], check=False, timeout=3600
        )
        if not loaded.ok:
            raise LocalError(f"local docker load of {ref} failed", stderr=loaded.stderr)
        if archived != ref:  # the engine's own name (podman's localhost/NAME) -> NAME
            _rename_local(archived, ref)
    return sink.size


def _check_commit_archive(remote: Remote, ref: ImageRef, path: str) -> None:
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


def _rename_local(loaded: ImageRef, ref: ImageRef) -> None:
    """The workstation's docker: `loaded` (the name the host's engine gave the image in its
    archive) tagged `ref`, and the engine's name removed."""
    from distrib import archive as archive_mod

    docker = archive_mod.docker_command()
    tagged = local.run([*docker, "tag", str(loaded), str(ref)], check=False, timeout=120)
    if not tagged.ok:
        raise LocalError(f"local docker tag {loaded} {ref} failed", stderr=tagged.stderr)
    local.run([*docker, "rmi", str(loaded)], check=False, timeout=120)
