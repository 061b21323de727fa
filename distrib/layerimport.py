"""Getting layers into the store: `docker save` read once per image (docker-archive or OCI
layout; a containerd store's compressed blobs adopted when checked), and image archives'
members (issue 18); each layer compressed once (pigz / zstd -T0), stored by atomic rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any, cast

from distrib import codecs, local
from distrib.archive import LocalImage, docker_command
from distrib.archivewrite import compressor
from distrib.codecs import CODECS
from distrib.errors import LocalError
from distrib.layerblobs import (
    READ_SIZE,
    BlobStore,
    atomic_write,
    file_sha256,
    hex_of,
    meta_path,
)

__all__ = ["LayerImporter"]


class LayerImporter(BlobStore):
    """A store that fills itself: `ensure` (from the workstation's engine) and
    `import_members` (from an image archive)."""

    def ensure(self, images: Iterable[LocalImage], abort: threading.Event | None = None) -> int:
        """Make sure every layer and config of `images` is stored; returns bytes compressed.

        Each image that lacks anything is read once with `docker save`; layers already stored
        are skipped, the others compressed (pigz when present, zstd -T0) and stored by diffID.
        """
        compressed = 0
        with self.locked():
            for image in images:
                if not self.has(image):
                    compressed += self._import(image, abort or threading.Event())
                self._touch(image)
        return compressed

    def _touch(self, image: LocalImage) -> None:
        now = time.time()
        for path in [self.config_path(image.id)] + [self.blob_path(d) for d in image.diff_ids]:
            with contextlib.suppress(OSError):
                os.utime(path, (now, now))

    def _import(self, image: LocalImage, abort: threading.Event) -> int:
        """Read `docker save` of `image` once and store its config and layers.

        Two layouts (issue 14): docker 20.10 writes `<id>/layer.tar` (raw) and `<id>.json`;
        docker 25+ writes an OCI layout, `blobs/sha256/<digest>` plus a `manifest.json` at
        the end. There a raw layer's digest is its diffID (classic store), while the
        containerd image store saves the layers as it holds them, already compressed (gzip,
        maybe zstd): those are spooled, then matched to their diffIDs through the manifest,
        checked by decompressing, and adopted as they are when the store keeps that codec
        (no recompression), else recompressed."""
        if image.origin:  # an archive source: imported before the run, never `docker save`d
            raise LocalError(
                f"{image.ref} (from {image.origin}) is missing from the layer store",
                hint="run again: the archive is read into the store before hosts are contacted",
            )
        saved = image.save_as or str(image.ref)  # a platform's pull: its private tag
        save = local.spawn([*docker_command(), "save", saved], stdout=local.PIPE)
        assert save.stdout is not None
        compressed = 0
        seen_config = False
        wanted = set(image.diff_ids)
        spooled: dict[str, tuple[str, str]] = {}  # blob digest -> (temp path, codec)
        manifest: list[Any] = []
        try:
            with tarfile.open(fileobj=save.stdout, mode="r|") as tar:
                for member in tar:
                    if abort.is_set():
                        raise LocalError("layer store import interrupted")
                    source = tar.extractfile(member) if member.isfile() else None
                    if source is None:
                        continue
                    name = member.name
                    digest = "sha256:" + name.rsplit("/", 1)[-1]
                    if name.endswith("/layer.tar"):
                        compressed += self._store_layer(source)
                    elif name in (hex_of(image.id) + ".json", f"blobs/sha256/{hex_of(image.id)}"):
                        self._store_config(image.id, source.read())
                        seen_config = True
                    elif name == "manifest.json":
                        manifest = _json_list(source.read())
                    elif name.startswith("blobs/sha256/") and digest in wanted:
                        compressed += self._store_layer(source)  # raw: digest = diffID
                    elif name.startswith("blobs/sha256/"):
                        spool = self._spool_compressed(source)
                        if spool is not None:
                            spooled[digest] = spool
                    with self._stored:  # a step waiting for this blob may go on
                        self._stored.notify_all()
            rc = save.wait()
            if rc == 0 and spooled:
                compressed += self._adopt(image, manifest, spooled)
        except tarfile.TarError as exc:  # docker save failed (or wrote no archive)
            rc = save.wait()
            if rc == 0:
                raise LocalError(f"docker save {image.ref}: unreadable archive ({exc})") from None
        except BaseException:
            if save.poll() is None:
                save.kill()
            save.wait()
            raise
        finally:
            for path, _ in spooled.values():
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if rc != 0:
            raise LocalError(f"docker save {image.ref} failed (exit {rc})")
        if not seen_config or not self.has(image):
            raise LocalError(f"docker save {image.ref}: archive lacks its config or layers")
        with self._stored:
            self._stored.notify_all()
        return compressed

    def _spool_compressed(self, source: IO[bytes]) -> tuple[str, str] | None:
        """A compressed blob to a temp file, for `_adopt` (None: not compressed: a manifest,
        an index, another image's config...)."""
        head = source.read(4)
        codec = _stored_codec(head)
        if codec is None:
            return None
        fd, path = tempfile.mkstemp(prefix=".saved-", dir=os.path.join(self.root, "blobs"))
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            for block in iter(lambda: source.read(READ_SIZE), b""):
                out.write(block)
        return path, codec

    def _adopt(
        self, image: LocalImage, manifest: list[Any], spooled: dict[str, tuple[str, str]]
    ) -> int:
        """Store the compressed layers of a containerd-store save (see `_import`)."""
        config = f"blobs/sha256/{hex_of(image.id)}"
        entry = next(
            (e for e in manifest if isinstance(e, dict) and e.get("Config") == config), None
        )
        layers = entry.get("Layers") if entry else None
        if not isinstance(layers, list) or len(layers) != len(image.diff_ids):
            raise LocalError(f"docker save {image.ref}: manifest.json does not list its layers")
        compressed = 0
        for diff_id, layer in zip(image.diff_ids, layers):
            digest = "sha256:" + str(layer).rsplit("/", 1)[-1]
            if digest not in spooled or self.blob(diff_id) is not None:
                continue
            path, codec = spooled[digest]
            compressed += self._adopt_blob(diff_id, path, codec)
        return compressed

    def _adopt_blob(self, diff_id: str, path: str, codec: str) -> int:
        """Decompress a saved blob, hashing it: it must be `diff_id`'s layer. A blob in the
        store's own codec is kept as it is; another is recompressed from the raw bytes."""
        keep = codec == self.codec
        tool = codecs.decompressor(codec, lambda t: bool(local.which(t))) or list(
            CODECS[codec].decompressors[-1]
        )
        digest = hashlib.sha256()
        raw_size = 0
        fd, raw_path = tempfile.mkstemp(prefix=".raw-", dir=os.path.join(self.root, "blobs"))
        try:
            with open(path, "rb") as blob, os.fdopen(fd, "wb") as raw:
                proc = local.spawn(tool, stdin=blob, stdout=local.PIPE)
                assert proc.stdout is not None
                for block in iter(lambda: proc.stdout.read(READ_SIZE), b""):  # type: ignore[union-attr]
                    digest.update(block)
                    raw_size += len(block)
                    if not keep:
                        raw.write(block)
                rc = proc.wait()
            if rc != 0 or "sha256:" + digest.hexdigest() != diff_id:
                raise LocalError(
                    f"a saved layer does not match its diffID {diff_id[:19]} ({tool[0]} exit {rc})"
                )
            if not keep:
                return self._compress(diff_id, raw_path, raw_size)
            self._install(path, diff_id, raw_size)
            return 0
        finally:
            with contextlib.suppress(OSError):
                os.unlink(raw_path)

    # -- image archives as sources (issue 18): straight into the store, never into an engine --

    def import_members(
        self, found: Iterable[tuple[str, IO[bytes]]], wanted: Mapping[str, tuple[str, str]]
    ) -> int:
        """Store the members `wanted` names (member -> ("config", digest) | ("layer",
        diffID)) as an archive's reader yields them (imagearchive.members); returns bytes
        compressed. A compressed layer is checked by decompressing (it must be its diffID's)
        and kept as it is when it is in the store's codec; a raw one is compressed."""
        compressed = 0
        with self.locked():
            for name, source in found:
                kind, digest = wanted.get(name, ("", ""))
                if kind == "config" and not os.path.exists(self.config_path(digest)):
                    self._store_config(digest, source.read())
                elif kind == "layer" and self.blob(digest) is None:
                    compressed += self._store_archived_layer(digest, name, source)
                with self._stored:
                    self._stored.notify_all()
        return compressed

    def _store_archived_layer(self, diff_id: str, name: str, source: IO[bytes]) -> int:
        head = source.read(4)
        codec = _stored_codec(head)
        if codec is None:
            compressed = self._store_layer(cast(IO[bytes], _Prefixed(head, source)))
            if self.blob(diff_id) is None:
                raise LocalError(f"{name} is not the layer {diff_id[:19]} its config lists")
            return compressed
        fd, path = tempfile.mkstemp(prefix=".saved-", dir=os.path.join(self.root, "blobs"))
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(head)
                for block in iter(lambda: source.read(READ_SIZE), b""):
                    out.write(block)
            return self._adopt_blob(diff_id, path, codec)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _store_config(self, image_id: str, data: bytes) -> None:
        if "sha256:" + hashlib.sha256(data).hexdigest() != image_id:
            raise LocalError(f"config of {image_id[:19]} does not match its image ID")
        atomic_write(self.config_path(image_id), data)

    def _store_layer(self, source: IO[bytes]) -> int:
        """Hash the raw layer (its diffID) while spooling it; compress it unless stored."""
        digest = hashlib.sha256()
        blobs = os.path.join(self.root, "blobs")
        fd, raw_path = tempfile.mkstemp(prefix=".raw-", dir=blobs)
        try:
            raw_size = 0
            with os.fdopen(fd, "wb") as raw:
                while True:
                    block = source.read(READ_SIZE)
                    if not block:
                        break
                    digest.update(block)
                    raw.write(block)
                    raw_size += len(block)
            diff_id = "sha256:" + digest.hexdigest()
            if self.blob(diff_id) is not None:
                return 0
            return self._compress(diff_id, raw_path, raw_size)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(raw_path)

    def _compress(self, diff_id: str, raw_path: str, raw_size: int) -> int:
        path = self.blob_path(diff_id)
        fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=os.path.dirname(path))
        tool = compressor(self.codec, self.level) or []
        if self.codec == "gzip":  # -n: no name/time, so a layer always compresses the same
            tool.insert(1, "-n")
        try:
            with open(raw_path, "rb") as raw, os.fdopen(fd, "wb") as out:
                proc = local.spawn(tool, stdin=raw, stdout=out)
                _, err = proc.communicate()
            if proc.returncode != 0:
                raise LocalError(
                    f"{tool[0]} failed", stderr=(err or b"").decode("utf-8", "replace")
                )
            return self._install(tmp, diff_id, raw_size)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _install(self, tmp: str, diff_id: str, raw_size: int) -> int:
        """Move the compressed blob `tmp` into the store as `diff_id`'s, its metadata (sizes,
        sha256) first; returns its size. Readers never see half a blob."""
        path = self.blob_path(diff_id)
        size = os.path.getsize(tmp)
        meta = {"size": size, "raw_size": raw_size, "sha256": file_sha256(tmp)}
        atomic_write(meta_path(path) + ".tmp-meta", json.dumps(meta).encode())
        os.replace(tmp, path)
        os.replace(meta_path(path) + ".tmp-meta", meta_path(path))
        return size


class _Prefixed:
    """A stream whose first bytes were already read (to sniff a codec)."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head, self._rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            if size < 0:
                return head + self._rest.read()
            return head if len(head) >= size else head + self._rest.read(size - len(head))
        return self._rest.read(size)


def _json_list(data: bytes) -> list[Any]:
    try:
        parsed = json.loads(data)
    except ValueError:
        return []
    return parsed if isinstance(parsed, list) else []


def _stored_codec(head: bytes) -> str | None:
    """The store codec a blob is compressed with, from its first bytes (None: another, or
    none: a manifest, an index, a raw layer...)."""
    codec = codecs.sniff(head)
    return codec if codec is not None and CODECS[codec].blob_suffix else None
