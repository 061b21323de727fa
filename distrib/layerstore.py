"""The layer store: every image layer compressed ONCE, ever, and per-host archives assembled
from it with only the layers each host lacks (issue 8).

Facts it rests on (DESIGN.md, docker 20.10):
- `docker load` reads a docker-archive whose `<dir>/layer.tar` members are each gzip-compressed
  in place (outer tar plain); the loaded image ID is identical.
- `docker load` accepts an archive that leaves out a layer the host already has: for each layer
  of the manifest it first looks the layer chain up in its store and reads the member only when
  the chain is missing. A layer can therefore be omitted only when the host holds the same
  diffID chain (the same diffID under another parent is another layer).

Two codecs, one store each way of sending:
- gzip: the archive is a plain outer tar whose `layer.tar` members are the stored gzip blobs,
  compressed in place (docker 20.10 and later read that themselves).
- zstd: the archive is one zstd stream of the whole tar (docker 20.10 reads no zstd layers; the
  host pipes `zstd -dc | docker load`, or a newer engine reads it itself). zstd frames decode
  concatenated, so the stream is the stored zstd blobs (each the frames of one raw
  `layer.tar`) with the tar's own bytes between them (headers, padding, config, manifest) in
  stored zstd frames (`zstd_raw_frame`): assembled per host, never recompressed.

Layout under `<cache>/layers/`: `blobs/<diffid>.gz` (+ `<diffid>.json`: sizes and sha256) and
`blobs/<diffid>.zst` (+ `<diffid>.zst.json`), `configs/<image id>.json` (the image config, byte
for byte), `.lock` (flock: writers and pruning are serialised; blobs appear by atomic rename,
so readers never see half a blob).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar, cast

from distrib import local
from distrib.archive import (
    DEFAULT_LEVELS,
    EXTENSIONS,
    LocalImage,
    cache_dir,
    compressor,
    docker_command,
)
from distrib.engines import CONTAINERD, stored_name
from distrib.errors import CorruptEntry, LocalError
from distrib.refs import ImageRef
from distrib.units import parse_size

_T = TypeVar("_T")

BLOCK = 512
READ_SIZE = 1024 * 1024
DEFAULT_MAX_BYTES = 20 * 1000**3
PARTIAL_LABEL = "io.distrib.partial"
STEP_BYTES = 16 * 1024 * 1024  # compressed layer bytes a loading step holds at least
BLOB_SUFFIXES = {"gzip": ".gz", "zstd": ".zst"}  # the codecs a store keeps layers in
# What an assembled archive is, as a whole, per store codec (gzip: a plain tar of gzip layers)
WIRE_CODECS = {"gzip": "none", "zstd": "zstd"}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD_BLOCK = 128 * 1024  # a zstd block holds at most 128 KiB


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def meta_path(blob_path: str) -> str:
    """A blob's metadata file: `<diffid>.json` for gzip (stores older than zstd blobs),
    `<blob>.json` for the others."""
    return blob_path[: -len(".gz")] + ".json" if blob_path.endswith(".gz") else blob_path + ".json"


def zstd_raw_frame(data: bytes) -> bytes:
    """`data` as one zstd frame of raw (stored) blocks (RFC 8878 3.1.1): the magic number, a
    single-segment header with the 8-byte content size, blocks of at most 128 KiB, the last one
    flagged. Between the stored zstd layer blobs it carries the tar's own bytes; the frames of
    a stream decode, concatenated, to the tar."""
    out = bytearray(ZSTD_MAGIC)
    out.append(0xE0)  # Frame_Content_Size_flag 3 (8 bytes), Single_Segment_flag
    out += len(data).to_bytes(8, "little")
    start = 0
    while True:
        block = data[start : start + ZSTD_BLOCK]
        start += len(block)
        last = start >= len(data)
        out += (len(block) << 3 | last).to_bytes(3, "little")  # Block_Type 0: raw
        out += block
        if last:
            return bytes(out)


def chain_prefixes(diff_ids: Sequence[str]) -> set[tuple[str, ...]]:
    """Every layer chain an image implies: (d1,), (d1, d2), ... (a host holds these)."""
    return {tuple(diff_ids[: i + 1]) for i in range(len(diff_ids))}


def missing_layers(image: LocalImage, host_chains: set[tuple[str, ...]]) -> list[str]:
    """diffIDs of `image` whose chain the host lacks (what must be sent), in order."""
    return [
        diff_id
        for i, diff_id in enumerate(image.diff_ids)
        if tuple(image.diff_ids[: i + 1]) not in host_chains
    ]


@dataclass(frozen=True)
class Blob:
    diff_id: str
    path: str
    size: int  # compressed
    raw_size: int
    sha256: str  # of the compressed bytes


class LayerStore:
    """Content-addressed store of compressed layers and image configs."""

    def __init__(
        self, directory: str | None = None, codec: str = "gzip", level: int | None = None
    ) -> None:
        if codec not in BLOB_SUFFIXES:
            raise ValueError(f"the layer store keeps gzip or zstd layers, not {codec}")
        self.root = os.path.join(directory or cache_dir(), "layers")
        self.codec = codec
        self.level = DEFAULT_LEVELS[codec] if level is None else level
        # how finely archives are cut into loading steps (steps()); $DISTRIB_STEP_BYTES
        self.step_bytes = parse_size(os.environ.get("DISTRIB_STEP_BYTES") or str(STEP_BYTES))
        for sub in ("blobs", "configs"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)
        # a background fill (fill_in_background): steps() waits for each blob it needs
        self._stored = threading.Condition()
        self._filler: threading.Thread | None = None
        self._fill_done = True
        self._fill_error: BaseException | None = None
        self._fill_abort = threading.Event()
        self._cancel = threading.Event()  # the run's: a waiting step gives up, the fill stops
        self.fill_added = 0  # bytes compressed by the background fill
        self.fill_seconds = 0.0

    # -- paths and lookups ----------------------------------------------------------------------

    def blob_path(self, diff_id: str) -> str:
        return os.path.join(self.root, "blobs", _hex(diff_id) + BLOB_SUFFIXES[self.codec])

    def config_path(self, image_id: str) -> str:
        return os.path.join(self.root, "configs", _hex(image_id) + ".json")

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

    # -- filling --------------------------------------------------------------------------------

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
                    elif name in (_hex(image.id) + ".json", f"blobs/sha256/{_hex(image.id)}"):
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
        codec = "gzip" if head[:2] == GZIP_MAGIC else "zstd" if head == ZSTD_MAGIC else None
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
        config = f"blobs/sha256/{_hex(image.id)}"
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
        tool = (
            ["zstd", "-dcq"]
            if codec == "zstd"
            else (compressor("gzip", 6) or ["gzip"])[:1] + ["-dc"]
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
        codec = "gzip" if head[:2] == GZIP_MAGIC else "zstd" if head == ZSTD_MAGIC else None
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

    def raw_archive(self, images: Sequence[LocalImage]) -> Iterator[bytes]:
        """A plain docker-archive of `images` (raw layers, configs, manifest.json) made from
        the store: for a whole archive (xz, none, delta off, podman and containerd hosts) of
        images that are in no engine (an archive source, a platform's pull). Each layer is
        decompressed from its blob and checked against its diffID as it is read."""
        self.ensure(images)
        written: set[str] = set()
        manifest = []
        for image in images:
            for diff_id in image.diff_ids:
                if diff_id in written:
                    continue
                written.add(diff_id)
                blob = self.blob(diff_id)
                if blob is None:
                    raise LocalError(f"layer {diff_id[:19]} missing from the layer store")
                yield _Member(f"{_hex(diff_id)}/layer.tar", blob=blob, raw=True).header()
                yield from self._raw_blob(blob)
                yield b"\0" * ((-blob.raw_size) % BLOCK)
            config = self._config_bytes(image)
            yield from _small_member(_hex(image.id) + ".json", config)
            manifest.append(_manifest_entry(image.id, [image.ref.familiar], image.diff_ids))
        yield from _small_member("manifest.json", json.dumps(manifest, sort_keys=True).encode())
        yield b"\0" * (2 * BLOCK)

    def _raw_blob(self, blob: Blob) -> Iterator[bytes]:
        tool = ["zstd", "-dcq"] if self.codec == "zstd" else ["gzip", "-dc"]
        digest = hashlib.sha256()
        size = 0
        with open(blob.path, "rb") as fh, tempfile.TemporaryFile() as errors:
            proc = local.spawn(tool, stdin=fh, stdout=local.PIPE, stderr=errors)
            assert proc.stdout is not None
            try:
                for block in iter(lambda: proc.stdout.read(READ_SIZE), b""):  # type: ignore[union-attr]
                    digest.update(block)
                    size += len(block)
                    yield block
            except BaseException:  # the reader stopped (or failed): no orphan decompressor
                proc.kill()
                proc.wait()
                raise
            rc = proc.wait()
        if rc != 0 or size != blob.raw_size or "sha256:" + digest.hexdigest() != blob.diff_id:
            _drop_corrupt(blob)
            raise LocalError(
                f"the layer store's blob of {blob.diff_id[:19]} is corrupt ({tool[0]} exit "
                f"{rc}): removed, a new run stores it again"
            )

    def _store_config(self, image_id: str, data: bytes) -> None:
        if "sha256:" + hashlib.sha256(data).hexdigest() != image_id:
            raise LocalError(f"config of {image_id[:19]} does not match its image ID")
        _atomic_write(self.config_path(image_id), data)

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
        meta = {"size": size, "raw_size": raw_size, "sha256": _file_sha256(tmp)}
        _atomic_write(meta_path(path) + ".tmp-meta", json.dumps(meta).encode())
        os.replace(tmp, path)
        os.replace(meta_path(path) + ".tmp-meta", meta_path(path))
        return size

    # -- filling in the background: hosts receive the first layers while later ones compress --

    def fill_in_background(self, images: Sequence[LocalImage]) -> None:
        """Run `ensure(images)` in a thread. `steps()` waits for each blob it needs, so a
        host's first loading step leaves as soon as its own layers are compressed (docker 20.10
        saves layers in name order, not chain order: a step may wait for later ones)."""
        self._fill_done = False

        def fill() -> None:
            started = time.monotonic()
            try:
                self.fill_added = self.ensure(images, self._fill_abort)
            except BaseException as exc:  # noqa: BLE001 - raised to every waiting host
                self._fill_error = exc
            finally:
                self.fill_seconds = time.monotonic() - started
                with self._stored:
                    self._fill_done = True
                    self._stored.notify_all()

        self._filler = threading.Thread(target=fill, name="layer-store-fill", daemon=True)
        self._filler.start()

    @property
    def filling(self) -> bool:
        """A background fill is running (sizes of what it has not stored are unknown)."""
        return not self._fill_done

    def cancel_with(self, cancel: threading.Event) -> None:
        """Steps waiting for blobs give up, and the fill stops, once `cancel` is set."""
        self._cancel = cancel

    def abort_fill(self) -> None:
        """Stop a background fill (an interrupted run) and wait for it to end."""
        self._fill_abort.set()
        if self._filler is not None:
            self._filler.join()

    def wait_filled(self) -> None:
        """Wait for a background fill to end; raise what made it fail."""
        self._wait(lambda: True if self._fill_done else None, "the layer store fill")
        if self._fill_error is not None:
            raise self._fill_error

    def wait_blob(self, diff_id: str) -> Blob:
        return self._wait(lambda: self.blob(diff_id), f"layer {diff_id[:19]}")

    def wait_image(self, image: LocalImage) -> None:
        self._wait(lambda: self.has(image) or None, f"the config of {image.ref}")

    def _wait(self, ready: Callable[[], _T | None], what: str) -> _T:
        with self._stored:
            while True:
                found = ready()
                if found is not None:
                    return found
                if self._fill_done:
                    if self._fill_error is not None:
                        raise self._fill_error
                    # removed since (found corrupt for another host, or pruned): retried
                    raise CorruptEntry(f"{what} missing from the layer store")
                if self._cancel.is_set():
                    self._fill_abort.set()
                    raise LocalError(f"interrupted while waiting for {what}")
                self._stored.wait(0.5)

    # -- listing and pruning ----------------------------------------------------------------------

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

    # -- assembling -----------------------------------------------------------------------------

    def assemble(
        self,
        images: Sequence[LocalImage],
        host_chains: set[tuple[str, ...]] | None = None,
        host_blobs: frozenset[str] | None = None,
    ) -> AssembledArchive:
        """A plain docker-archive of `images` with only the layers the host lacks (all of
        them when `host_chains` is None: the full archive, from the same blobs).

        `host_blobs` (docker's containerd image store: the digests of its content blobs)
        makes it an OCI layout too (see `_oci_entry`)."""
        chains = host_chains or set()
        oci = host_blobs is not None
        members: list[_Member] = [_Member("oci-layout", data=OCI_LAYOUT)] if oci else []
        sent: list[str] = []
        manifest = []
        index: list[dict[str, Any]] = []
        for image in images:
            needed = set(self.missing(image, chains, host_blobs))
            for diff_id in image.diff_ids:
                if diff_id in needed and diff_id not in sent:
                    sent.append(diff_id)
                    members += self._layer_members([diff_id], oci)
            config = self._config_bytes(image)
            members.append(self._config_member(image.id, config, oci))
            tags = [image.ref.familiar]
            if host_blobs is None:
                manifest.append(_manifest_entry(image.id, tags, image.diff_ids))
                continue
            layers = self._descriptors(image.diff_ids, needed, host_blobs)
            manifest.append(_oci_manifest_entry(image.id, tags, layers))
            entry, blob = _oci_entry(config, layers, image.ref)
            members.append(blob)
            index.append(entry)
        return _archive(tuple(images), members, manifest, sorted(sent), self.codec, index)

    def missing(
        self,
        image: LocalImage,
        host_chains: set[tuple[str, ...]],
        host_blobs: frozenset[str] | None = None,
    ) -> list[str]:
        """`missing_layers`, and on a containerd-store host (`host_blobs`) also every layer
        whose blob the host's content store lacks in a form this store can name."""
        chain_missing = missing_layers(image, host_chains)
        if host_blobs is None:
            return chain_missing
        return [
            d
            for d in image.diff_ids
            if d in chain_missing or self._held_descriptor(d, host_blobs) is None
        ]

    def steps(
        self,
        images: Sequence[LocalImage],
        host_chains: set[tuple[str, ...]] | None = None,
        host_blobs: frozenset[str] | None = None,
    ) -> Iterator[AssembledArchive]:
        """`assemble(images, host_chains)` cut into loading steps, so that a host loads step
        k while step k+1 is still on the wire (issue 5: overlap loading with sending).

        A step ends at a layer boundary once it holds `step_bytes` of layers; it then carries a
        stand-in image: a minimal config holding the chain so far, labelled PARTIAL_LABEL,
        untagged (`partial_config`). Loaded in order, each step finds the earlier layers on
        the host and docker skips them (the fact delta rests on). The last step of an image
        carries its real config and tag. The engine removes the stand-ins afterwards.
        While the store fills in the background, each step waits for its own blobs.
        On a containerd-store host (`host_blobs`) a step's layers count as held once sent.
        """
        have = set(host_chains or set())
        blobs = None if host_blobs is None else set(host_blobs)
        for image in images:
            chain = image.diff_ids
            needed = set(self.missing(image, have, None if blobs is None else frozenset(blobs)))
            pending: list[str] = []
            size = 0
            for i in range(len(chain)):
                prefix = tuple(chain[: i + 1])
                if prefix in have and chain[i] not in needed:
                    continue
                have.add(prefix)
                if chain[i] not in pending:
                    pending.append(chain[i])
                    size += self.wait_blob(chain[i]).size
                if size >= self.step_bytes and i < len(chain) - 1:
                    yield self._step(image, i + 1, pending, blobs)
                    pending, size = [], 0
            self.wait_image(image)  # its config: the last step carries it
            yield self._step(image, len(chain), pending, blobs)

    def _step(
        self, image: LocalImage, depth: int, diff_ids: list[str], blobs: set[str] | None
    ) -> AssembledArchive:
        oci = blobs is not None
        members = [_Member("oci-layout", data=OCI_LAYOUT)] if oci else []
        members += self._layer_members(diff_ids, oci)
        chain = image.diff_ids[:depth]
        if depth == len(image.diff_ids):
            config, image_id = self._config_bytes(image), image.id
            tags, ref = [image.ref.familiar], image.ref
        else:
            config = partial_config(chain)
            image_id, tags, ref = "sha256:" + hashlib.sha256(config).hexdigest(), [], None
        members.append(self._config_member(image_id, config, oci))
        index: list[dict[str, Any]] = []
        stand_in = image_id
        if blobs is None:
            manifest = [_manifest_entry(image_id, tags, chain)]
        else:
            layers = self._descriptors(chain, set(diff_ids), frozenset(blobs))
            manifest = [_oci_manifest_entry(image_id, tags, layers)]
            entry, blob = _oci_entry(config, layers, ref)
            members.append(blob)
            index.append(entry)
            stand_in = str(entry["digest"])  # the containerd store names it by manifest
            blobs.update(str(layer["digest"]) for layer in layers)
        step = _archive((image,), members, manifest, list(diff_ids), self.codec, index)
        if depth < len(image.diff_ids):
            step.stand_in = stand_in
        return step

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

    def _config_member(self, image_id: str, config: bytes, oci: bool = False) -> _Member:
        name = f"blobs/sha256/{_hex(image_id)}" if oci else _hex(image_id) + ".json"
        return _Member(name, data=config)

    # -- OCI layout, for docker's containerd image store ----------------------------------------
    #
    # docker 28.5 with the containerd store refuses a docker-archive that leaves out layers
    # (its importer resolves every manifest.json layer in the tar), but it loads an OCI layout
    # (index.json) whose manifest names blobs its content store already holds, and only
    # those: a blob it lacks makes a broken image even when the layer's snapshot exists
    # (measured, issue 14). So a layer is left out only when the host holds its blob under a
    # digest this store can name: the raw layer (digest = diffID) or this store's own gzip
    # blob (what distrib sent it before). The same archive keeps its manifest.json and
    # `<diffid>/layer.tar` members for engines that read the classic format.

    def _sent_descriptor(self, diff_id: str) -> dict[str, Any]:
        """The OCI descriptor of a layer as this store sends it."""
        blob = self.wait_blob(diff_id)
        if self.codec == "gzip":
            return {"mediaType": LAYER_GZIP, "digest": "sha256:" + blob.sha256, "size": blob.size}
        return {"mediaType": LAYER_TAR, "digest": diff_id, "size": blob.raw_size}

    def _held_descriptor(self, diff_id: str, blobs: frozenset[str]) -> dict[str, Any] | None:
        """The OCI descriptor of the host's own copy of a layer (None: none we can name)."""
        blob = self.wait_blob(diff_id)
        if diff_id in blobs:
            return {"mediaType": LAYER_TAR, "digest": diff_id, "size": blob.raw_size}
        if self.codec == "gzip" and "sha256:" + blob.sha256 in blobs:
            return {"mediaType": LAYER_GZIP, "digest": "sha256:" + blob.sha256, "size": blob.size}
        return None

    def _descriptors(
        self, chain: Sequence[str], sent: set[str], blobs: frozenset[str]
    ) -> list[dict[str, Any]]:
        """The OCI descriptors of `chain`: sent layers as this store sends them, the others
        as the host holds them."""
        out = []
        for diff_id in chain:
            held = None if diff_id in sent else self._held_descriptor(diff_id, blobs)
            out.append(held or self._sent_descriptor(diff_id))
        return out

    def _layer_members(self, diff_ids: Iterable[str], oci: bool = False) -> list[_Member]:
        """The layers as tar members: a gzip blob is the member itself (compressed in
        place); a zstd blob stands for the raw layer.tar in the zstd stream. In an OCI
        layout each is named by the digest of what the member holds."""
        members = []
        for diff_id in diff_ids:
            blob = self.blob(diff_id)
            if blob is None:  # removed (found corrupt for another host, or pruned): retried
                raise CorruptEntry(f"layer {diff_id[:19]} missing from the layer store")
            raw = self.codec == "zstd"
            name = f"{_hex(diff_id)}/layer.tar"
            if oci:
                name = f"blobs/sha256/{_hex(diff_id) if raw else blob.sha256}"
            members.append(_Member(name, blob=blob, raw=raw))
        return members


def partial_config(diff_ids: Sequence[str]) -> bytes:
    """The config of a stand-in image holding the chain `diff_ids`, labelled PARTIAL_LABEL.

    Minimal, so it needs nothing docker save writes last (the real config): os linux (docker
    load checks the OS, not the architecture). Deterministic: a chain has one stand-in ID."""
    doc = {
        "os": "linux",
        "config": {"Labels": {PARTIAL_LABEL: "true"}},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _manifest_entry(image_id: str, tags: list[str], diff_ids: Sequence[str]) -> dict[str, Any]:
    """A docker-archive manifest entry listing every layer of the chain (present or not)."""
    layers = [f"{_hex(d)}/layer.tar" for d in diff_ids]
    return {"Config": _hex(image_id) + ".json", "RepoTags": tags, "Layers": layers}


def _oci_manifest_entry(
    image_id: str, tags: list[str], layers: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The manifest.json entry of an OCI-layout archive: blob paths (docker 20.10 reads
    them too; a layer left out is never opened)."""
    return {
        "Config": f"blobs/sha256/{_hex(image_id)}",
        "RepoTags": tags,
        "Layers": [f"blobs/sha256/{_hex(str(layer['digest']))}" for layer in layers],
    }


def _oci_entry(
    config: bytes, layers: Sequence[dict[str, Any]], ref: ImageRef | None
) -> tuple[dict[str, Any], _Member]:
    """(index.json entry, manifest blob member) of an image: its config and `layers`. An
    entry without a name (a stand-in) is loaded untagged."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
            "size": len(config),
        },
        "layers": list(layers),
    }
    data = json.dumps(doc, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data)}
    if ref is not None:
        entry["annotations"] = {
            "io.containerd.image.name": stored_name(CONTAINERD, ref),
            "org.opencontainers.image.ref.name": ref.tag or "latest",
        }
    return entry, _Member(f"blobs/sha256/{_hex(digest)}", data=data)


def _archive(
    images: tuple[LocalImage, ...],
    members: list[_Member],
    manifest: list[dict[str, Any]],
    layers: list[str],
    codec: str,
    index: list[dict[str, Any]] | None = None,
) -> AssembledArchive:
    """The archive's bytes as pieces: stored blobs, and the tar's own bytes between them
    (headers, padding, small members, the end blocks; in raw zstd frames for zstd)."""
    data = json.dumps(manifest, sort_keys=True).encode()
    members.append(_Member("manifest.json", data=data))
    if index:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}
        members.append(_Member("index.json", data=json.dumps(doc, sort_keys=True).encode()))
    pieces: list[bytes | Blob] = []
    between = bytearray()

    def flush() -> None:
        if between:
            pieces.append(zstd_raw_frame(bytes(between)) if codec == "zstd" else bytes(between))
            between.clear()

    for member in members:
        between += member.header()
        if member.blob is not None:
            flush()
            pieces.append(member.blob)
        else:
            between += member.data
        between += b"\0" * ((-member.size) % BLOCK)
    between += b"\0" * (2 * BLOCK)
    flush()
    ident = json.dumps([codec, [[m.name, m.size] for m in members]]).encode()
    return AssembledArchive(images, tuple(pieces), layers, codec, ident)


class PendingDelta:
    """A delta whose blobs are still being compressed (a background fill): what is known
    before they are. The layers to send, an identity (the staging dir's name) and an upper
    bound of the size (uncompressed, for the disk preflight). Sent only in loading steps."""

    level = 0
    cached = False
    complete = False
    build_seconds = None

    def __init__(
        self, images: Sequence[LocalImage], host_chains: set[tuple[str, ...]], codec: str = "gzip"
    ) -> None:
        self.codec = WIRE_CODECS[codec]
        self.extension = EXTENSIONS[self.codec]
        self.images = tuple(images)
        self.layers = sorted({d for image in images for d in missing_layers(image, host_chains)})
        self.size = self.size_hint = sum(i.size for i in images)
        ident = json.dumps([[i.id for i in images], self.layers, codec]).encode()
        self.key = hashlib.sha256(ident).hexdigest()[:32]


@dataclass(frozen=True)
class _Member:
    """A member of an assembled docker-archive: small bytes, or a stored layer blob."""

    name: str
    data: bytes = b""
    blob: Blob | None = None
    raw: bool = False  # the blob stands for the raw layer.tar (inside a zstd stream)

    @property
    def size(self) -> int:
        """The size in the tar header."""
        if self.blob is None:
            return len(self.data)
        return self.blob.raw_size if self.raw else self.blob.size

    def header(self) -> bytes:
        info = tarfile.TarInfo(self.name)
        info.size = self.size
        info.mode = 0o644
        info.mtime = 0  # deterministic: the same members always make the same bytes
        return info.tobuf(format=tarfile.USTAR_FORMAT)


class AssembledArchive:
    """A docker-archive streamed from the store (never written out): a plain outer tar of
    gzip layers, or one zstd stream (see the module docstring). Same interface as
    archive.Archive for the engine."""

    level = 0
    cached = True
    complete = True
    build_seconds = None

    def __init__(
        self,
        images: tuple[LocalImage, ...],
        pieces: tuple[bytes | Blob, ...],
        layers: list[str],
        codec: str,
        ident: bytes,
    ) -> None:
        self.images = images
        self.pieces = pieces
        self.layers = layers  # diffIDs sent
        self.codec = WIRE_CODECS[codec]  # what the host's engine (or a pipe) must read
        self.extension = EXTENSIONS[self.codec]
        self.stand_in: str | None = None  # a loading step's untagged stand-in image (steps())
        self.size = sum(_length(p) for p in pieces)
        self.key = hashlib.sha256(ident).hexdigest()[:32]
        self._sha256: str | None = None
        self._lock = threading.Lock()

    @property
    def size_hint(self) -> int:
        return self.size

    @property
    def path(self) -> str:
        return f"<assembled {self.key}>"

    @property
    def sha256(self) -> str:
        with self._lock:
            if self._sha256 is None:
                digest = hashlib.sha256()
                for chunk in self.chunks():
                    digest.update(chunk)
                self._sha256 = digest.hexdigest()
            return self._sha256

    def wait(self) -> None:
        pass

    def abort(self, grace: float = 0.0) -> None:
        pass

    def prefix_sha256(self, nbytes: int) -> str:
        digest = hashlib.sha256()
        remaining = nbytes
        for chunk in self.chunks():
            if remaining <= 0:
                break
            digest.update(chunk[:remaining])
            remaining -= len(chunk)
        return digest.hexdigest()

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        """The archive's bytes from `offset`: the tar's own bytes and the blob files."""
        position = 0
        for piece in self.pieces:
            length = _length(piece)
            if position + length > offset:
                skip = max(0, offset - position)
                if isinstance(piece, bytes):
                    yield piece[skip:]
                else:
                    yield from _blob_chunks(piece, skip)
            position += length


def _small_member(name: str, data: bytes) -> Iterator[bytes]:
    yield _Member(name, data=data).header()
    yield data + b"\0" * ((-len(data)) % BLOCK)


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


def _length(piece: bytes | Blob) -> int:
    return len(piece) if isinstance(piece, bytes) else piece.size


def _blob_chunks(blob: Blob, skip: int) -> Iterator[bytes]:
    """The blob's bytes from `skip`, checked against the sha256 recorded when it was stored
    as they are read (issue 19: the cache is not trusted on read). The bytes before `skip`
    are hashed too, unsent. A mismatch removes the entry (the next fill stores it again) and
    fails the reader, before the last bytes leave: a host never gets a corrupt layer."""
    digest = hashlib.sha256()
    pending = b""  # one block held back: the last leaves only once the whole blob checked
    try:
        fh = open(blob.path, "rb")  # noqa: SIM115 (closed by the `with` below)
    except FileNotFoundError:  # another host's reader found it corrupt and removed it
        raise CorruptEntry(
            f"the layer store's blob of {blob.diff_id[:19]} was removed as it was about to be "
            "read (found corrupt for another host): stored again for a retry"
        ) from None
    with fh:
        read = os.fstat(fh.fileno())
        for block in iter(lambda: fh.read(READ_SIZE), b""):
            digest.update(block)
            if skip >= len(block):
                skip -= len(block)
                continue
            if pending:
                yield pending
            pending, skip = block[skip:], 0
    if digest.hexdigest() != blob.sha256:
        _drop_corrupt(blob, read)
        raise CorruptEntry(
            f"the layer store's blob of {blob.diff_id[:19]} is corrupt (its sha256 is not the "
            "one recorded when it was stored): removed, stored again for a retry or by the "
            "next run",
            hint="check the workstation's disk; nothing corrupt was loaded anywhere",
        )
    if pending:
        yield pending


def _drop_corrupt(blob: Blob, read: os.stat_result | None = None) -> None:
    """Remove the blob that was read (`read`: its stat), not one stored again since by
    another reader's retry (issue 19)."""
    with contextlib.suppress(OSError):
        now = os.stat(blob.path)
        if read is not None and (now.st_dev, now.st_ino) != (read.st_dev, read.st_ino):
            return
    for path in (blob.path, meta_path(blob.path)):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _json_list(data: bytes) -> list[Any]:
    try:
        parsed = json.loads(data)
    except ValueError:
        return []
    return parsed if isinstance(parsed, list) else []


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(READ_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
