"""A per-host archive assembled from stored blobs, never recompressed: a plain outer tar of
gzip layers, or one zstd stream (see `distrib.layerstore`), as a docker-archive and, for
docker's containerd image store, an OCI layout too; loading steps' stand-in configs."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from distrib.archive import EXTENSIONS, LocalImage
from distrib.codecs import CODECS
from distrib.engines import CONTAINERD, stored_name
from distrib.errors import CorruptEntry
from distrib.layerblobs import BLOCK, READ_SIZE, Blob, drop_corrupt, hex_of
from distrib.refs import ImageRef

__all__ = ["AssembledArchive", "Member", "make_archive", "missing_layers", "partial_config"]

PARTIAL_LABEL = "io.distrib.partial"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD_BLOCK = 128 * 1024  # a zstd block holds at most 128 KiB


def zstd_raw_frame(data: bytes) -> bytes:
    """`data` as one zstd frame of raw (stored) blocks (RFC 8878 3.1.1): the magic number, a
    single-segment header with the 8-byte content size, blocks of at most 128 KiB, the last one
    flagged. Between the stored zstd layer blobs it carries the tar's own bytes; the frames of
    a stream decode, concatenated, to the tar."""
    out = bytearray(CODECS["zstd"].magic)
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


def missing_layers(image: LocalImage, host_chains: set[tuple[str, ...]]) -> list[str]:
    """diffIDs of `image` whose chain the host lacks (what must be sent), in order."""
    return [
        diff_id
        for i, diff_id in enumerate(image.diff_ids)
        if tuple(image.diff_ids[: i + 1]) not in host_chains
    ]


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


def manifest_entry(image_id: str, tags: list[str], diff_ids: Sequence[str]) -> dict[str, Any]:
    """A docker-archive manifest entry listing every layer of the chain (present or not)."""
    layers = [f"{hex_of(d)}/layer.tar" for d in diff_ids]
    return {"Config": hex_of(image_id) + ".json", "RepoTags": tags, "Layers": layers}


def oci_manifest_entry(
    image_id: str, tags: list[str], layers: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The manifest.json entry of an OCI-layout archive: blob paths (docker 20.10 reads
    them too; a layer left out is never opened)."""
    return {
        "Config": f"blobs/sha256/{hex_of(image_id)}",
        "RepoTags": tags,
        "Layers": [f"blobs/sha256/{hex_of(str(layer['digest']))}" for layer in layers],
    }


def oci_entry(
    config: bytes, layers: Sequence[dict[str, Any]], ref: ImageRef | None
) -> tuple[dict[str, Any], Member]:
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
    return entry, Member(f"blobs/sha256/{hex_of(digest)}", data=data)


def make_archive(
    images: tuple[LocalImage, ...],
    members: list[Member],
    manifest: list[dict[str, Any]],
    layers: list[str],
    codec: str,
    index: list[dict[str, Any]] | None = None,
) -> AssembledArchive:
    """The archive's bytes as pieces: stored blobs, and the tar's own bytes between them
    (headers, padding, small members, the end blocks; in raw zstd frames for zstd)."""
    data = json.dumps(manifest, sort_keys=True).encode()
    members.append(Member("manifest.json", data=data))
    if index:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}
        members.append(Member("index.json", data=json.dumps(doc, sort_keys=True).encode()))
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


@dataclass(frozen=True)
class Member:
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
        self.codec = CODECS[codec].assembled  # what the host's engine (or a pipe) must read
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


def small_member(name: str, data: bytes) -> Iterator[bytes]:
    """A small tar member: header, data, padding."""
    yield Member(name, data=data).header()
    yield data + b"\0" * ((-len(data)) % BLOCK)


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
        drop_corrupt(blob, read)
        raise CorruptEntry(
            f"the layer store's blob of {blob.diff_id[:19]} is corrupt (its sha256 is not the "
            "one recorded when it was stored): removed, stored again for a retry or by the "
            "next run",
            hint="check the workstation's disk; nothing corrupt was loaded anywhere",
        )
    if pending:
        yield pending
