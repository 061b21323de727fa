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
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from distrib import local
from distrib.commands import INSPECT_FORMAT, parse_inspect
from distrib.errors import ConfigError, CorruptEntry, LocalError
from distrib.platforms import Platform
from distrib.refs import ImageRef

DEFAULT_LEVELS = {"gzip": 6, "zstd": 3, "xz": 6, "none": 0}
EXTENSIONS = {"gzip": ".tar.gz", "zstd": ".tar.zst", "xz": ".tar.xz", "none": ".tar"}
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
        for path in (self._path, _meta_path(self._path, self.key)):
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
                size, digest = _produce_compressed(
                    self._producer, self.codec, self.level, fd, tmp, self._grew, self._abort
                )
            else:
                size, digest = _save_compressed(
                    self.images, self.codec, self.level, fd, tmp, self._grew, self._abort
                )
            _write_meta(
                self._final_path, self.key, self.images, self.codec, self.level, size, digest
            )
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
            config = config_digest(ref, seen.id) if seen.containerd_store else seen.id
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


def config_digest(ref: ImageRef, target: str) -> str:
    """The config digest of a containerd-store image whose manifest (or index) is `target`.

    Content-addressed, so the answer is cached for good (`<cache>/ids/`). Asked of the local
    containerd (`ctr content get`, where its socket is ours to use), else read from `docker
    save` (the whole image is read once; index.json comes last)."""
    ids = os.path.join(cache_dir(), "ids")
    path = os.path.join(ids, target.split(":", 1)[-1])
    with contextlib.suppress(OSError):
        with open(path) as fh:
            cached = fh.read().strip()
        if cached.startswith("sha256:"):
            return cached
    digest = _config_from_containerd(target) or _config_from_save(ref)
    os.makedirs(ids, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(digest + "\n")
    os.replace(tmp, path)
    return digest


def _config_from_containerd(target: str) -> str | None:
    from distrib import engines  # manifest/index parsers

    info = local.run(
        [*docker_command(), "info", "--format", "{{.Containerd.Address}}"], check=False, timeout=30
    )
    address = info.stdout.strip() if info.ok else ""
    if not address or address == "<no value>" or not os.access(address, os.W_OK):
        return None

    def blob(digest: str) -> bytes | None:
        argv = ["ctr", "-a", address, "-n", "moby", "content", "get", digest]
        try:
            got = local.run(argv, check=False, timeout=60)
        except LocalError:  # no ctr here
            return None
        return got.stdout.encode() if got.ok and got.stdout else None

    data = blob(target)
    if data is None:
        return None
    child = engines.index_manifest(data)
    if child:  # an index: the linux/amd64 manifest (else its first)
        data = blob(child)
    return engines.manifest_config(data)


def _config_from_save(ref: ImageRef) -> str:
    save = local.spawn([*docker_command(), "save", str(ref)], stdout=local.PIPE)
    assert save.stdout is not None
    manifest: list[dict[str, object]] = []
    try:
        with tarfile.open(fileobj=save.stdout, mode="r|") as tar:
            for member in tar:
                if member.name == "manifest.json":
                    source = tar.extractfile(member)
                    manifest = json.loads(source.read()) if source else []
    except (tarfile.TarError, ValueError) as exc:
        save.kill()
        save.wait()
        raise LocalError(f"docker save {ref}: unreadable archive ({exc})") from None
    rc = save.wait()
    entry = manifest[0] if manifest and isinstance(manifest[0], dict) else {}
    config = str(entry.get("Config") or "")
    if rc != 0 or not config.startswith("blobs/sha256/"):
        raise LocalError(f"docker save {ref}: cannot find the image's config (exit {rc})")
    return "sha256:" + config.rsplit("/", 1)[-1]


def compressor(codec: str, level: int) -> list[str] | None:
    """The compressing command for `codec`, preferring multi-core tools; None for 'none'."""
    if codec == "none":
        return None
    if codec == "gzip":
        if local.which("pigz"):
            return ["pigz", f"-{level}", "-c"]
        return ["gzip", f"-{level}", "-c"]
    if codec == "zstd":
        if not local.which("zstd"):
            raise LocalError("compression zstd needs the zstd program on the workstation")
        return ["zstd", f"-{level}", "-T0", "-q", "-c"]
    if codec == "xz":
        return ["xz", f"-{level}", "-T0", "-c"]
    raise ValueError(codec)


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
    cached = _load_cached(path, _meta_path(path, key))
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


def build(
    images: Sequence[LocalImage], codec: str, level: int | None = None, directory: str | None = None
) -> Archive:
    """Save `images` into one archive compressed with `codec` (or reuse the cached one); wait."""
    archive = prepare(images, codec, level, directory)
    archive.wait()
    return archive


def _meta_path(path: str, key: str) -> str:
    return os.path.join(os.path.dirname(path), key + ".json")


def _write_meta(
    path: str,
    key: str,
    images: Sequence[LocalImage],
    codec: str,
    level: int,
    size: int,
    digest: str,
) -> None:
    meta_path = _meta_path(path, key)
    with open(meta_path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(
            {
                "sha256": digest,
                "size": size,
                "codec": codec,
                "level": level,
                "images": {str(i.ref): i.id for i in images},
                "created": time.time(),
            },
            fh,
        )
    os.replace(meta_path + ".tmp", meta_path)


def _load_cached(path: str, meta_path: str) -> tuple[int, str] | None:
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
        if os.path.getsize(path) == meta["size"]:
            return int(meta["size"]), str(meta["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def _write_hashed(
    blocks: Iterable[bytes], fd: int, grew: Callable[[int], None], abort: threading.Event
) -> tuple[int, str]:
    """Write `blocks` to `fd` (closed after), hashed on the way; `grew(total)` after each
    block; LocalError as soon as `abort` is set. (size, sha256 hex)."""
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as out:
        for block in blocks:
            if abort.is_set():
                raise LocalError("archive build interrupted")
            digest.update(block)
            out.write(block)
            out.flush()
            size += len(block)
            grew(size)
    return size, digest.hexdigest()


def _save_compressed(
    images: Sequence[LocalImage],
    codec: str,
    level: int,
    fd: int,
    tmp: str,
    grew: Callable[[int], None],
    abort: threading.Event,
) -> tuple[int, str]:
    """docker save | compressor > tmp, hashed on the way; `grew(total)` after each block."""
    save_cmd = [*docker_command(), "save", *[str(i.ref) for i in images]]
    with tempfile.TemporaryFile() as save_err, tempfile.TemporaryFile() as comp_err:
        save = local.spawn(save_cmd, stdout=local.PIPE, stderr=save_err)
        comp_cmd = compressor(codec, level)
        comp = None
        try:
            assert save.stdout is not None
            source = save.stdout
            if comp_cmd:
                comp = local.spawn(comp_cmd, stdin=save.stdout, stdout=local.PIPE, stderr=comp_err)
                save.stdout.close()  # the compressor owns the pipe now
                assert comp.stdout is not None
                source = comp.stdout
            read = source.read1  # type: ignore[attr-defined]
            size, sha256 = _write_hashed(iter(lambda: read(READ_SIZE), b""), fd, grew, abort)
            source.close()
            comp_rc = comp.wait() if comp else 0
            save_rc = save.wait()
        except BaseException:
            for proc in (save, comp):
                if proc and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if save_rc != 0 or comp_rc != 0:
            os.unlink(tmp)
            save_err.seek(0)
            comp_err.seek(0)
            failed = save_cmd if save_rc else (comp_cmd or [])
            stderr = (save_err.read() if save_rc else comp_err.read()).decode("utf-8", "replace")
            raise LocalError(f"{' '.join(failed[:2])} failed", cmd=failed, stderr=stderr)
    return size, sha256


def _produce_compressed(
    producer: Callable[[], Iterator[bytes]],
    codec: str,
    level: int,
    fd: int,
    tmp: str,
    grew: Callable[[int], None],
    abort: threading.Event,
) -> tuple[int, str]:
    """producer() | compressor > tmp, hashed on the way (as `_save_compressed`, for images
    that no engine holds: their docker-archive is made from the layer store)."""
    failed: list[BaseException] = []
    comp_cmd = compressor(codec, level)
    with tempfile.TemporaryFile() as comp_err:
        comp = (
            local.spawn(comp_cmd, stdin=local.PIPE, stdout=local.PIPE, stderr=comp_err)
            if comp_cmd
            else None
        )

        def feed() -> None:
            assert comp is not None and comp.stdin is not None
            try:
                for block in producer():
                    if abort.is_set():
                        raise LocalError("archive build interrupted")
                    comp.stdin.write(block)
            except BaseException as exc:  # noqa: BLE001 - raised by the reading thread
                failed.append(exc)
                comp.kill()
            finally:
                with contextlib.suppress(OSError):
                    comp.stdin.close()

        feeder = threading.Thread(target=feed, name="archive-feed", daemon=True)
        try:
            if comp is None:
                blocks: Iterator[bytes] = producer()
            else:
                assert comp.stdout is not None
                feeder.start()
                stdout = comp.stdout
                blocks = iter(lambda: stdout.read1(READ_SIZE), b"")  # type: ignore[attr-defined]
            size, sha256 = _write_hashed(blocks, fd, grew, abort)
            if comp is not None:
                feeder.join()
                rc = comp.wait()
                if failed:
                    raise failed[0]
                if rc != 0:
                    comp_err.seek(0)
                    raise LocalError(
                        f"{comp_cmd[0] if comp_cmd else '?'} failed",
                        cmd=comp_cmd or [],
                        stderr=comp_err.read().decode("utf-8", "replace"),
                    )
        except BaseException:
            if comp is not None and comp.poll() is None:
                comp.kill()
                comp.wait()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return size, sha256
