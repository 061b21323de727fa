"""The workstation side: inspect local images, then save + compress them ONCE into a cached archive.

`docker save` streams into the compressor (pigz / zstd -T0 / xz -T0) and the compressed bytes are
hashed while they are written, so the sha256 costs no extra pass. Archives are cached by the
images' identity, tags and codec: a re-run with unchanged images neither saves nor compresses.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from distrib import local
from distrib.commands import INSPECT_FORMAT, parse_inspect_line
from distrib.errors import LocalError
from distrib.refs import ImageRef

DEFAULT_LEVELS = {"gzip": 6, "zstd": 3, "xz": 6, "none": 0}
EXTENSIONS = {"gzip": ".tar.gz", "zstd": ".tar.zst", "xz": ".tar.xz", "none": ".tar"}
READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class LocalImage:
    ref: ImageRef
    id: str
    diff_ids: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class Archive:
    path: str
    codec: str
    level: int
    size: int
    sha256: str
    images: tuple[LocalImage, ...]
    cached: bool = False

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.codec]

    def prefix_sha256(self, nbytes: int) -> str:
        """sha256 of the first `nbytes` (to check a partial upload before resuming it)."""
        digest = hashlib.sha256()
        remaining = nbytes
        with open(self.path, "rb") as fh:
            while remaining > 0:
                block = fh.read(min(READ_SIZE, remaining))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
        return digest.hexdigest()

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        """The archive's bytes from `offset`, in large chunks (never all in memory)."""
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            while True:
                block = fh.read(READ_SIZE)
                if not block:
                    return
                yield block


def cache_dir() -> str:
    """Where archives are kept: $DISTRIB_CACHE_DIR, else $XDG_CACHE_HOME/distrib, else ~/.cache."""
    explicit = os.environ.get("DISTRIB_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "distrib")


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
            image_id, diff_ids, size = parse_inspect_line(result.stdout.strip().splitlines()[0])
            found[ref] = LocalImage(ref, image_id, diff_ids, size)
        elif "no such image" in result.stderr.lower():
            missing.append(ref)
        else:
            raise LocalError(
                "cannot inspect local images (is the local docker running?)",
                cmd=result.cmd,
                stderr=result.stderr,
            )
    return found, missing


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
    cached = _load_cached(path, os.path.join(directory, key + ".json"))
    if cached is None:
        return None
    return Archive(path, codec, level, cached[0], cached[1], tuple(images), cached=True)


def build(
    images: Sequence[LocalImage], codec: str, level: int | None = None, directory: str | None = None
) -> Archive:
    """Save `images` into one archive compressed with `codec`, or reuse the cached one."""
    level = DEFAULT_LEVELS[codec] if level is None else level
    directory = os.path.join(directory or cache_dir(), "archives")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = cache_key(images, codec, level)
    path = os.path.join(directory, key + EXTENSIONS[codec])
    meta_path = os.path.join(directory, key + ".json")
    cached = _load_cached(path, meta_path)
    if cached is not None:
        os.utime(path)  # LRU: recently used
        return Archive(path, codec, level, cached[0], cached[1], tuple(images), cached=True)
    size, digest = _save_compressed(images, codec, level, path)
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
    return Archive(path, codec, level, size, digest, tuple(images))


def _load_cached(path: str, meta_path: str) -> tuple[int, str] | None:
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
        if os.path.getsize(path) == meta["size"]:
            return int(meta["size"]), str(meta["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def _save_compressed(
    images: Sequence[LocalImage], codec: str, level: int, path: str
) -> tuple[int, str]:
    """docker save | compressor > path.tmp (hashed on the way), then rename into place."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=directory)
    digest = hashlib.sha256()
    size = 0
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
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = source.read(READ_SIZE)
                    if not block:
                        break
                    digest.update(block)
                    out.write(block)
                    size += len(block)
            source.close()
            comp_rc = comp.wait() if comp else 0
            save_rc = save.wait()
        except BaseException:
            for proc in (save, comp):
                if proc and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            os.unlink(tmp)
            raise
        if save_rc != 0 or comp_rc != 0:
            os.unlink(tmp)
            save_err.seek(0)
            comp_err.seek(0)
            failed = save_cmd if save_rc else (comp_cmd or [])
            stderr = (save_err.read() if save_rc else comp_err.read()).decode("utf-8", "replace")
            raise LocalError(f"{' '.join(failed[:2])} failed", cmd=failed, stderr=stderr)
    os.replace(tmp, path)
    return size, digest.hexdigest()
