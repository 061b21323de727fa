"""The workstation side: inspect local images, then save + compress them ONCE into a cached archive.

`docker save` streams into the compressor (pigz / zstd -T0 / xz -T0) and the compressed bytes are
hashed while they are written, so the sha256 costs no extra pass. Archives are cached by the
images' identity, tags and codec: a re-run with unchanged images neither saves nor compresses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from distrib import local
from distrib.archivewrite import (
    load_cached,
    meta_path,
    produce_compressed,
    save_compressed,
    write_meta,
)
from distrib.codecs import CODECS
from distrib.commands import INSPECT_FORMAT, parse_inspect
from distrib.configdigest import config_digest
from distrib.errors import ConfigError, CorruptEntry, LocalError
from distrib.platforms import Platform
from distrib.refs import ImageRef

# the codec table's default levels and file suffixes, by codec name
DEFAULT_LEVELS = {name: codec.level for name, codec in CODECS.items()}
EXTENSIONS = {name: codec.suffix for name, codec in CODECS.items()}
READ_SIZE = 1024 * 1024
PULL_TIMEOUT = 3600.0  # a large image over a slow site link


@dataclass(frozen=True)
class LocalImage:
    """An image on the workstation. `id` is its identity, the config digest, on every engine
    (docker's classic image ID; resolved from the manifest on the containerd store, whose own
    ID is kept as `engine_id`). `fingerprint`: commands.config_fingerprint, for hosts that
    show no config digest."""

    ref: ImageRef
    id: str
    diff_ids: tuple[str, ...]
    size: int
    fingerprint: str = ""
    engine_id: str = ""
    platform: Platform | None = None  # the config's os/architecture (None: it names none)
    # issue 18: where it comes from when not from the workstation's engine (an image archive:
    # its path; read into the layer store, never `docker save`d), and the same image for the
    # source's other platforms (an OCI index: each host gets its own platform's)
    origin: str = ""
    alternates: tuple[LocalImage, ...] = ()
    # a platform's image pulled from a registry index (platformpull): the private tag the
    # workstation keeps it under (`ref` stays the play's tag), what `docker save` is given
    save_as: str = ""

    @property
    def offered(self) -> tuple[Platform, ...]:
        """The platforms a multi-platform source offers under this name (() if just one)."""
        if not self.alternates:
            return ()
        found = [self.platform, *(a.platform for a in self.alternates)]
        return tuple(p for p in found if p is not None)


class Archive:
    """A compressed archive of images, complete or still being written.

    A complete archive (from the cache, or a file given by path, size and sha256) reads like a
    file. A pending one is built on first use by `docker save | compressor` in a background
    thread; `chunks()` readers follow the file while it grows, so uploads to every host start
    with the first compressed bytes (stages overlap, nothing is held in memory). `size` and
    `sha256` wait for the build to finish.
    """

    def __init__(
        self,
        path: str,
        codec: str,
        level: int,
        size: int | None = None,
        sha256: str | None = None,
        images: Sequence[LocalImage] = (),
        cached: bool = False,
        key: str | None = None,
        producer: Callable[[], Iterator[bytes]] | None = None,
    ) -> None:
        self.codec = codec
        # the uncompressed docker-archive's bytes when the images are in no engine (issue
        # 18: an archive source, from the layer store); else `docker save` writes them
        self._producer = producer
        self.level = level
        self.images = tuple(images)
        self.cached = cached
        self.key = key or cache_key(self.images, codec, level)
        self._path = path
        self._final_path = path
        self._cond = threading.Condition()
        self._written = size or 0
        self._size = size
        self._sha256 = sha256
        self._error: BaseException | None = None
        self._started = size is not None and sha256 is not None
        # a file written before this run (the cache, a backup): its bytes are checked against
        # the recorded sha256 by the first reader, as they are sent (issue 19)
        self._recorded = self._started
        self._verifying = False
        self._generation = 0  # rebuilds after a corrupt read (issue 19)
        self._done = self._started
        self._ready = self._started  # a file exists at self._path
        self._abort = threading.Event()
        self.build_seconds: float | None = None

    @classmethod
    def pending(
        cls,
        images: Sequence[LocalImage],
        codec: str,
        level: int,
        directory: str,
        producer: Callable[[], Iterator[bytes]] | None = None,
    ) -> Archive:
        key = cache_key(images, codec, level)
        final = os.path.join(directory, key + EXTENSIONS[codec])
        return cls(final, codec, level, images=images, key=key, producer=producer)

    # -- state --------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._final_path

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.codec]

    @property
    def complete(self) -> bool:
        with self._cond:
            return self._done and self._error is None

    @property
    def size(self) -> int:
        self.wait()
        assert self._size is not None
        return self._size

    @property
    def sha256(self) -> str:
        self.wait()
        assert self._sha256 is not None
        return self._sha256

    @property
    def size_hint(self) -> int:
        """The final size when known, else an upper bound (the images uncompressed)."""
        with self._cond:
            if self._size is not None:
                return self._size
        return sum(i.size for i in self.images) or 1

    def wait(self) -> None:
        """Start the build if needed and wait for it; raise its error if it failed."""
        self.start()
        with self._cond:
            while not self._done:
                self._cond.wait()
            if isinstance(self._error, CorruptEntry):  # another reader found it: rebuild, retry
                raise CorruptEntry(str(self._error))
            if self._error is not None:
                raise LocalError(f"building the archive failed: {self._error}") from None

    def start(self) -> None:
        with self._cond:
            if self._started:
                return
            self._started = True
        thread = threading.Thread(target=self._build, name="archive", daemon=True)
        thread.start()

    def abort(self, grace: float = 10.0) -> None:
        """Stop a build in progress (interrupted run) and wait until its partial file is gone."""
        self._abort.set()
        with self._cond:
            if self._started:
                self._cond.wait_for(lambda: self._done, timeout=grace)

    # -- reading --------------------------------------------------------------------------------

    def _available(self, wanted: int) -> int:
        """Block until `wanted` bytes are written or the build is over; return bytes written."""
        self.start()
        with self._cond:
            while (self._written < wanted or not self._ready) and not self._done:
                self._cond.wait(1.0)
            if isinstance(self._error, CorruptEntry):  # every reader: rebuild, retry
                raise CorruptEntry(str(self._error))
            if self._error is not None:
                raise LocalError(f"building the archive failed: {self._error}")
            return self._written

    def _open(self) -> IO[bytes]:
        with self._cond:  # the partial file is renamed under this lock: open the current name
            return open(self._path, "rb")

    def prefix_sha256(self, nbytes: int) -> str:
        """sha256 of the first `nbytes` (to check a partial upload before resuming it)."""
        self._available(nbytes)
        digest = hashlib.sha256()
        remaining = nbytes
        with self._open() as fh:
            while remaining > 0:
                block = fh.read(min(READ_SIZE, remaining))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
        return digest.hexdigest()

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        """The archive's bytes from `offset`, following the file while it is being written.

        A file from before this run is hashed by its first whole reader as it is sent; bytes
        that do not match the recorded sha256 end that reader (and the others) with a
        LocalError naming the file, before any host loads them, and a cache entry is removed
        so that the next run rebuilds it (issue 19: the host was blamed)."""
        position = offset
        self._available(offset)
        digest = None
        with self._cond:
            generation = self._generation
            if self._recorded and offset == 0 and not self._verifying:
                self._verifying = True
                digest = hashlib.sha256()
        with self._open() as fh:
            fh.seek(offset)
            while True:
                available = self._available(position + 1)
                if available <= position:
                    if self._done:
                        break
                    continue
                block = fh.read(min(READ_SIZE, available - position))
                if not block:
                    break
                position += len(block)
                if digest is not None:
                    digest.update(block)
                    if position == self._size:  # checked before the last block leaves
                        self._check(digest.hexdigest(), position, generation)
                yield block
        if digest is not None and position != self._size:
            self._check(digest.hexdigest(), position, generation)

    def verify(self) -> None:
        """Check a file from before this run against its record now, unless its first reader
        did (a host's copy did not match: is the workstation's copy the bad one? Then a
        CorruptEntry, as for its first reader). Only readers that came after the first
        read unchecked bytes: this pass is made only when a host reports a mismatch."""
        with self._cond:
            if isinstance(self._error, CorruptEntry):
                raise CorruptEntry(str(self._error))
            if not self._recorded or not self._done or self._error is not None:
                return
            generation = self._generation
        digest, size = hashlib.sha256(), 0
        with self._open() as fh:
            for block in iter(lambda: fh.read(READ_SIZE), b""):
                digest.update(block)
                size += len(block)
        self._check(digest.hexdigest(), size, generation)

    def _check(self, digest: str, size: int, generation: int = 0) -> None:
        with self._cond:  # one check at a time: a rebuilt entry is never removed
            if generation != self._generation:  # this reader read the file before its rebuild
                raise CorruptEntry(f"the archive {self._final_path} was rebuilt as it was read")
            if digest == self._sha256 and size == self._size:
                return
            self._fail_check(digest, size)

    def _fail_check(self, digest: str, size: int) -> None:
        text = (
            f"the archive {self._path} does not match its record (sha256 {digest[:12]}, "
            f"{size} bytes; recorded {str(self._sha256)[:12]}, {self._size} bytes): corrupt "
            "on the workstation, not sent further"
        )
        error = (
            CorruptEntry(text + "; removed from the cache: rebuilt for a retry, or by the next run")
            if self._drop()
            else LocalError(text)
        )
        with self._cond:
            self._error = error
        raise error

    def rebuild(self) -> bool:
        """After a corrupt cache entry was removed (CorruptEntry): build it again from the
        images (`docker save`), for a retry in this run (issue 19). Every reader that hit
        it may ask; the first one starts the build, the others read it. False when it
        cannot be rebuilt (not a cache entry, or images that no engine holds)."""
        if not self.images or any(getattr(i, "origin", "") for i in self.images):
            return False
        with self._cond:
            if not self._done:  # being rebuilt already
                return True
            if not isinstance(self._error, CorruptEntry):
                return self._error is None
            self._path = self._final_path
            self._written, self._size, self._sha256, self._error = 0, None, None, None
            self._started = self._recorded = self._verifying = False
            self._generation += 1
            self._done = self._ready = False
            self.cached = False
        self.start()
        return True

    def _drop(self) -> bool:
        """Remove a corrupt cache entry (never a file outside the cache: a backup)."""
        archives = os.path.realpath(os.path.join(cache_dir(), "archives"))
        if os.path.dirname(os.path.realpath(self._path)) != archives:
            return False
        for path in (self._path, meta_path(self._path, self.key)):
            with contextlib.suppress(OSError):
                os.unlink(path)
        return True

    # -- writing --------------------------------------------------------------------------------

    def _build(self) -> None:
        started = time.monotonic()
        directory = os.path.dirname(self._final_path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=directory)
            with self._cond:
                self._path = tmp
                self._ready = True
                self._cond.notify_all()
            if self._producer is not None:
                size, digest = produce_compressed(
                    self._producer, self.codec, self.level, fd, tmp, self._grew, self._abort
                )
            else:
                save = [*docker_command(), "save", *[str(i.ref) for i in self.images]]
                size, digest = save_compressed(
                    save, self.codec, self.level, fd, tmp, self._grew, self._abort
                )
            images = {str(i.ref): i.id for i in self.images}
            write_meta(self._final_path, self.key, images, self.codec, self.level, size, digest)
            with self._cond:
                os.replace(tmp, self._final_path)
                self._path = self._final_path
                self._size, self._sha256 = size, digest
                self.build_seconds = round(time.monotonic() - started, 3)
        except BaseException as exc:  # noqa: BLE001 - reported to every reader
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _grew(self, total: int) -> None:
        with self._cond:
            self._written = total
            self._cond.notify_all()


def cache_dir() -> str:
    """Where archives are kept: $DISTRIB_CACHE_DIR, else $XDG_CACHE_HOME/distrib, else ~/.cache."""
    explicit = os.environ.get("DISTRIB_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "distrib")


def ensure_writable_dir(path: str, what: str, hint: str) -> str:
    """Create `path` if needed and prove a file can be written in it (a read-only mount, a
    file in the way, a full disk): a ConfigError naming it, raised before any host changes."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"the {what} {path} is not writable: {exc.strerror or exc}", hint=hint
        ) from None
    return path


def ensure_cache_dir() -> str:
    """The cache directory, created and checked writable (see `ensure_writable_dir`)."""
    return ensure_writable_dir(
        cache_dir(), "cache directory", "set DISTRIB_CACHE_DIR to a writable directory"
    )


def docker_command() -> list[str]:
    return os.environ.get("DISTRIB_LOCAL_DOCKER", "docker").split()


def inspect_local(refs: Sequence[ImageRef]) -> tuple[dict[ImageRef, LocalImage], list[ImageRef]]:
    """Identity of each image in the local docker; returns (found, missing)."""
    found: dict[ImageRef, LocalImage] = {}
    missing: list[ImageRef] = []
    for ref in refs:
        result = local.run(
            [*docker_command(), "image", "inspect", "--format", INSPECT_FORMAT, str(ref)],
            check=False,
            timeout=60,
        )
        if result.ok:
            seen = parse_inspect(result.stdout.strip().splitlines()[0])
            config = seen.id
            if seen.containerd_store:  # its ID is the manifest's: the identity is the config's
                config = config_digest(ref, seen.id, cache_dir(), docker_command())
            found[ref] = LocalImage(
                ref,
                config,
                seen.diff_ids,
                seen.size,
                seen.fingerprint,
                seen.id,
                Platform.of_image(*seen.platform),
            )
        elif "no such image" in result.stderr.lower():
            missing.append(ref)
        else:
            raise LocalError(
                "cannot inspect local images (is the local docker running?)",
                cmd=result.cmd,
                stderr=result.stderr,
            )
    return found, missing


def pull_local(ref: ImageRef, platform: str | None, where: str) -> None:
    """`docker pull [--platform P] REF` on the workstation (issue 18, item 2: `local_pull`);
    a failure names the image, where it was listed and docker's last words."""
    argv = [*docker_command(), "pull", *(["--platform", platform] if platform else []), str(ref)]
    result = local.run(argv, check=False, timeout=PULL_TIMEOUT)
    if not result.ok:
        raise LocalError(
            f"{where}: docker pull {ref}{' for ' + platform if platform else ''} failed",
            cmd=argv,
            stderr=result.stderr or result.stdout,
            hint="is the registry reachable from this workstation (docker login, "
            "insecure-registries)? or use local_pull: never and load the image yourself",
        )


def cache_key(images: Sequence[LocalImage], codec: str, level: int) -> str:
    ident = json.dumps(
        {"images": [[str(i.ref), i.id] for i in images], "codec": codec, "level": level},
        sort_keys=True,
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def find_cached(
    images: Sequence[LocalImage], codec: str, level: int | None = None, directory: str | None = None
) -> Archive | None:
    """The cached archive for exactly these images and codec, without building one."""
    level = DEFAULT_LEVELS[codec] if level is None else level
    directory = os.path.join(directory or cache_dir(), "archives")
    key = cache_key(images, codec, level)
    path = os.path.join(directory, key + EXTENSIONS[codec])
    cached = load_cached(path, meta_path(path, key))
    if cached is None:
        return None
    os.utime(path)  # LRU: recently used
    return Archive(path, codec, level, cached[0], cached[1], images, cached=True, key=key)


def prepare(
    images: Sequence[LocalImage],
    codec: str,
    level: int | None = None,
    directory: str | None = None,
    producer: Callable[[], Iterator[bytes]] | None = None,
) -> Archive:
    """The cached archive, or a pending one that builds itself (in the background) on first
    use: from `docker save`, or from `producer` (images in no engine: issue 18)."""
    level = DEFAULT_LEVELS[codec] if level is None else level
    cached = find_cached(images, codec, level, directory)
    if cached is not None:
        return cached
    directory = os.path.join(directory or cache_dir(), "archives")
    return Archive.pending(images, codec, level, directory, producer)
