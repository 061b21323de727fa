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

import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from distrib import codecs, local
from distrib.archive import EXTENSIONS, LocalImage
from distrib.codecs import CODECS
from distrib.errors import CorruptEntry, LocalError
from distrib.layerarchive import (
    LAYER_GZIP,
    LAYER_TAR,
    OCI_LAYOUT,
    AssembledArchive,
    Member,
    make_archive,
    manifest_entry,
    missing_layers,
    oci_entry,
    oci_manifest_entry,
    partial_config,
    small_member,
)
from distrib.layerblobs import BLOCK, READ_SIZE, Blob, drop_corrupt, hex_of
from distrib.layerimport import LayerImporter
from distrib.units import parse_size

__all__ = ["LayerStore", "PendingDelta"]

_T = TypeVar("_T")

STEP_BYTES = 16 * 1024 * 1024  # compressed layer bytes a loading step holds at least


class LayerStore(LayerImporter):
    """The layer store: filled in the foreground or the background, archives assembled from
    it per host (whole, a delta, or cut into loading steps)."""

    def __init__(
        self, directory: str | None = None, codec: str = "gzip", level: int | None = None
    ) -> None:
        super().__init__(directory, codec, level)
        # how finely archives are cut into loading steps (steps()); $DISTRIB_STEP_BYTES
        self.step_bytes = parse_size(os.environ.get("DISTRIB_STEP_BYTES") or str(STEP_BYTES))
        # a background fill (fill_in_background): steps() waits for each blob it needs
        self._filler: threading.Thread | None = None
        self._fill_done = True
        self._fill_error: BaseException | None = None
        self._fill_abort = threading.Event()
        self._cancel = threading.Event()  # the run's: a waiting step gives up, the fill stops
        self.fill_added = 0  # bytes compressed by the background fill
        self.fill_seconds = 0.0

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
                yield Member(f"{hex_of(diff_id)}/layer.tar", blob=blob, raw=True).header()
                yield from self._raw_blob(blob)
                yield b"\0" * ((-blob.raw_size) % BLOCK)
            config = self._config_bytes(image)
            yield from small_member(hex_of(image.id) + ".json", config)
            manifest.append(manifest_entry(image.id, [image.ref.familiar], image.diff_ids))
        yield from small_member("manifest.json", json.dumps(manifest, sort_keys=True).encode())
        yield b"\0" * (2 * BLOCK)

    def _raw_blob(self, blob: Blob) -> Iterator[bytes]:
        tool = codecs.decompressor(self.codec, lambda t: bool(local.which(t))) or list(
            CODECS[self.codec].decompressors[-1]
        )
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
            drop_corrupt(blob)
            raise LocalError(
                f"the layer store's blob of {blob.diff_id[:19]} is corrupt ({tool[0]} exit "
                f"{rc}): removed, a new run stores it again"
            )

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
        members: list[Member] = [Member("oci-layout", data=OCI_LAYOUT)] if oci else []
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
                manifest.append(manifest_entry(image.id, tags, image.diff_ids))
                continue
            layers = self._descriptors(image.diff_ids, needed, host_blobs)
            manifest.append(oci_manifest_entry(image.id, tags, layers))
            entry, blob = oci_entry(config, layers, image.ref)
            members.append(blob)
            index.append(entry)
        return make_archive(tuple(images), members, manifest, sorted(sent), self.codec, index)

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
        members = [Member("oci-layout", data=OCI_LAYOUT)] if oci else []
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
            manifest = [manifest_entry(image_id, tags, chain)]
        else:
            layers = self._descriptors(chain, set(diff_ids), frozenset(blobs))
            manifest = [oci_manifest_entry(image_id, tags, layers)]
            entry, blob = oci_entry(config, layers, ref)
            members.append(blob)
            index.append(entry)
            stand_in = str(entry["digest"])  # the containerd store names it by manifest
            blobs.update(str(layer["digest"]) for layer in layers)
        step = make_archive((image,), members, manifest, list(diff_ids), self.codec, index)
        if depth < len(image.diff_ids):
            step.stand_in = stand_in
        return step

    def _config_member(self, image_id: str, config: bytes, oci: bool = False) -> Member:
        name = f"blobs/sha256/{hex_of(image_id)}" if oci else hex_of(image_id) + ".json"
        return Member(name, data=config)

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

    def _layer_members(self, diff_ids: Iterable[str], oci: bool = False) -> list[Member]:
        """The layers as tar members: a gzip blob is the member itself (compressed in
        place); a zstd blob stands for the raw layer.tar in the zstd stream. In an OCI
        layout each is named by the digest of what the member holds."""
        members = []
        for diff_id in diff_ids:
            blob = self.blob(diff_id)
            if blob is None:  # removed (found corrupt for another host, or pruned): retried
                raise CorruptEntry(f"layer {diff_id[:19]} missing from the layer store")
            raw = self.codec == "zstd"
            name = f"{hex_of(diff_id)}/layer.tar"
            if oci:
                name = f"blobs/sha256/{hex_of(diff_id) if raw else blob.sha256}"
            members.append(Member(name, blob=blob, raw=raw))
        return members


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
        self.codec = CODECS[codec].assembled
        self.extension = EXTENSIONS[self.codec]
        self.images = tuple(images)
        self.layers = sorted({d for image in images for d in missing_layers(image, host_chains)})
        self.size = self.size_hint = sum(i.size for i in images)
        ident = json.dumps([[i.id for i in images], self.layers, codec]).encode()
        self.key = hashlib.sha256(ident).hexdigest()[:32]
