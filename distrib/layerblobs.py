"""The layer store on disk: blobs (each layer compressed once, by diffID) and image configs,
their paths, lookups, the writers' lock and pruning. Layout: see `distrib.layerstore`."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from distrib.archive import LocalImage, cache_dir
from distrib.codecs import CODECS
from distrib.errors import CorruptEntry

__all__ = ["BLOB_SUFFIXES", "Blob", "BlobStore", "meta_path"]

BLOCK = 512
READ_SIZE = 1024 * 1024
# the codecs a store keeps layers in, and their blobs' suffixes
BLOB_SUFFIXES = {name: codec.blob_suffix for name, codec in CODECS.items() if codec.blob_suffix}


def hex_of(digest: str) -> str:
    """The hex part of `sha256:<hex>`."""
    return digest.split(":", 1)[-1]


def meta_path(blob_path: str) -> str:
    """A blob's metadata file: `<diffid>.json` for gzip (stores older than zstd blobs),
    `<blob>.json` for the others."""
    return blob_path[: -len(".gz")] + ".json" if blob_path.endswith(".gz") else blob_path + ".json"


@dataclass(frozen=True)
class Blob:
    diff_id: str
    path: str
    size: int  # compressed
    raw_size: int
    sha256: str  # of the compressed bytes


class BlobStore:
    """Content-addressed store of compressed layers and image configs: where each is, whether
    it is there, and the lock writers hold."""

    def __init__(
        self, directory: str | None = None, codec: str = "gzip", level: int | None = None
    ) -> None:
        if codec not in BLOB_SUFFIXES:
            raise ValueError(f"the layer store keeps gzip or zstd layers, not {codec}")
        self.root = os.path.join(directory or cache_dir(), "layers")
        self.codec = codec
        self.level = CODECS[codec].level if level is None else level
        for sub in ("blobs", "configs"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)
        # notified whenever something is stored: a step waiting for a blob looks again
        self._stored = threading.Condition()

    # -- paths and lookups ----------------------------------------------------------------------

    def blob_path(self, diff_id: str) -> str:
        return os.path.join(self.root, "blobs", hex_of(diff_id) + BLOB_SUFFIXES[self.codec])

    def config_path(self, image_id: str) -> str:
        return os.path.join(self.root, "configs", hex_of(image_id) + ".json")

    def blob(self, diff_id: str) -> Blob | None:
        path = self.blob_path(diff_id)
        try:
            with open(meta_path(path), encoding="utf-8") as fh:
                meta = json.load(fh)
            if os.path.getsize(path) != meta["size"]:
                return None
            return Blob(
                diff_id, path, int(meta["size"]), int(meta["raw_size"]), str(meta["sha256"])
            )
        except (OSError, ValueError, KeyError):
            return None

    def has(self, image: LocalImage) -> bool:
        return os.path.exists(self.config_path(image.id)) and all(
            self.blob(d) is not None for d in image.diff_ids
        )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise writers (two runs at once fill the store once, not twice)."""
        with open(os.path.join(self.root, ".lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _config_bytes(self, image: LocalImage) -> bytes:
        """The stored config, checked: its digest is the image's identity (issue 19)."""
        path = self.config_path(image.id)
        with open(path, "rb") as fh:
            data = fh.read()
        if "sha256:" + hashlib.sha256(data).hexdigest() != image.id:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise CorruptEntry(
                f"the layer store's config of {image.ref} is corrupt: removed, stored again "
                "for a retry or by the next run",
                hint="check the workstation's disk; nothing was sent",
            )
        return data

    def entries(self) -> list[tuple[str, int, float]]:
        """(path, size, last used) of every blob and config, oldest first."""
        out = []
        for sub in ("blobs", "configs"):
            directory = os.path.join(self.root, sub)
            for name in os.listdir(directory):
                if name.startswith(".") or name.endswith(".json") and sub == "blobs":
                    continue
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    st = os.stat(path)
                    out.append((path, st.st_size, st.st_mtime))
        return sorted(out, key=lambda e: e[2])

    def prune(self, max_bytes: int) -> tuple[int, int]:
        """Remove least recently used entries until the store fits `max_bytes`.

        Returns (entries removed, bytes freed).
        """
        removed = freed = 0
        with self.locked():
            entries = self.entries()
            total = sum(e[1] for e in entries)
            for path, size, _ in entries:
                if total <= max_bytes:
                    break
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    if path.endswith(tuple(BLOB_SUFFIXES.values())):
                        os.unlink(meta_path(path))
                    removed += 1
                    freed += size
                    total -= size
        return removed, freed


def drop_corrupt(blob: Blob, read: os.stat_result | None = None) -> None:
    """Remove the blob that was read (`read`: its stat), not one stored again since by
    another reader's retry (issue 19)."""
    with contextlib.suppress(OSError):
        now = os.stat(blob.path)
        if read is not None and (now.st_dev, now.st_ino) != (read.st_dev, read.st_ino):
            return
    for path in (blob.path, meta_path(blob.path)):
        with contextlib.suppress(OSError):
            os.unlink(path)


def file_sha256(path: str) -> str:
    """The sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(READ_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path` by rename: readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
