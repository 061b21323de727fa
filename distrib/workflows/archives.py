"""Backup archives on the workstation: their metadata file, their codec, and the images inside
them, read by streaming the archive once (no decompression to disk, no `docker load`).

A `docker save` archive (the classic layout, and the OCI layout newer engines write) holds a
top-level `manifest.json` listing, per image, its config file and RepoTags. The config's
sha256 is the image ID a classic docker store gives the loaded image, and its
`rootfs.diff_ids` are the content identity the engine verifies by (DESIGN.md) - so a restore
is verified on every host without loading the archive on the workstation.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, cast

from distrib import commands, local
from distrib.archive import Archive, LocalImage
from distrib.errors import ConfigError, DistribError
from distrib.refs import ImageRef, InvalidReference

METADATA_FORMAT = 1
READ_SIZE = 1024 * 1024
SMALL_MEMBER = 4 * 1024 * 1024  # configs and manifests are kept in memory up to this size
SMALL_TOTAL = 64 * 1024 * 1024

# magic numbers of the codecs `docker load` (or a pipe in front of it) reads
MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
)


class ArchiveError(DistribError):
    """A backup archive or its metadata is unusable (bad input: nothing was connected)."""

    exit_code = ConfigError.exit_code


# --- metadata ----------------------------------------------------------------------------------


def metadata_path(archive_path: str) -> str:
    """Where a backup's metadata lives by default: the archive's name with `.json` instead of
    its `.tar.gz` / `.tar.zst` / `.tar` ending."""
    base = archive_path
    for ending in (".tar.gz", ".tar.zst", ".tar.xz", ".tgz", ".tar"):
        if base.endswith(ending):
            base = base[: -len(ending)]
            break
    return base + ".json"


def metadata_document(
    *,
    host: str,
    address: str,
    container: str,
    container_id: str,
    container_image: str,
    image: str,
    image_id: str,
    diff_ids: tuple[str, ...],
    created: str,
    archive: str,
    codec: str,
    size: int,
    sha256: str,
    kept_on_host: bool,
) -> dict[str, Any]:
    """The JSON written next to a backup archive (see README: Commit, backup, restore)."""
    return {
        "format": METADATA_FORMAT,
        "host": host,
        "address": address,
        "container": container,
        "container_id": container_id,
        "container_image": container_image,
        "image": image,
        "image_id": image_id,
        "diff_ids": list(diff_ids),
        "created": created,
        "archive": archive,
        "codec": codec,
        "size": size,
        "sha256": sha256,
        "kept_on_host": kept_on_host,
    }


def read_metadata(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ArchiveError(f"metadata file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"metadata file {path} is unreadable: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
        raise ArchiveError(f"metadata file {path} is not a distrib backup metadata file")
    for key, kind in (("size", int), ("codec", str), ("image_id", str)):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise ArchiveError(
                f"metadata file {path}: {key} must be a {kind.__name__}, not {value!r}"
            )
    return data


# --- the archive itself ---------------------------------------------------------------------------


def sniff_codec(path: str) -> str:
    """gzip / zstd / xz by magic number, `none` for a plain tar; ArchiveError otherwise."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror or exc}") from None
    for magic, codec in MAGIC:
        if head.startswith(magic):
            return codec
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "none"
    raise ArchiveError(f"{path} is not a docker archive (not gzip, zstd, xz or tar)")


def file_sha256(path: str) -> tuple[int, str]:
    """(size, sha256) of a file, read in large blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(READ_SIZE)
            if not block:
                return size, digest.hexdigest()
            digest.update(block)
            size += len(block)


@dataclass(frozen=True)
class Contents:
    """What `docker load` of the archive would create."""

    images: tuple[LocalImage, ...]
    untagged: int  # images in the archive without a tag (cannot be verified by name)


def images_from_manifest(
    manifest: Any, blobs: Mapping[str, bytes], layer_sizes: Mapping[str, int]
) -> Contents:
    """The tagged images of a `docker save` manifest.json, identified from their configs.

    `blobs`: small archive members by name (the configs); `layer_sizes`: member sizes (the
    unpacked size of each layer, for the host's disk preflight). Pure.
    """
    if not isinstance(manifest, list) or not manifest:
        raise ArchiveError("manifest.json lists no image")
    images: list[LocalImage] = []
    untagged = 0
    for entry in manifest:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ArchiveError("manifest.json: an entry has no Config")
        config_name = entry["Config"]
        raw = blobs.get(config_name)
        if raw is None:
            raise ArchiveError(f"manifest.json names config {config_name}, not in the archive")
        digest = hashlib.sha256(raw).hexdigest()
        expected = os.path.basename(config_name).removesuffix(".json")
        if len(expected) == 64 and expected != digest:
            raise ArchiveError(f"config {config_name} does not match its digest: corrupt archive")
        try:
            config = json.loads(raw)
            diff_ids = tuple(str(d) for d in config["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError):
            raise ArchiveError(f"config {config_name} has no rootfs.diff_ids") from None
        layers = entry.get("Layers") or []
        tags = entry.get("RepoTags") or []
        for key, value in (("Layers", layers), ("RepoTags", tags)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ArchiveError(f"manifest.json: {key} of {config_name} is not a list of names")
        size = sum(layer_sizes.get(name, 0) for name in layers)
        if not tags:
            untagged += 1
        for tag in tags:
            try:
                ref = ImageRef.parse(tag)
            except InvalidReference as exc:
                raise ArchiveError(f"manifest.json: {exc}") from None
            fingerprint = commands.config_fingerprint_of(raw)
            images.append(LocalImage(ref, f"sha256:{digest}", diff_ids, size, fingerprint))
    return Contents(tuple(images), untagged)


def read_contents(path: str, codec: str) -> Contents:
    """Stream the archive once through the decompressor and tarfile's stream mode: small
    members (manifest, configs) are kept in memory, layers only counted."""
    blobs: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    kept = 0
    with _decompressed(path, codec) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    sizes[member.name] = member.size
                    if member.size > SMALL_MEMBER or member.name.endswith("layer.tar"):
                        continue
                    kept += member.size
                    if kept > SMALL_TOTAL:
                        raise ArchiveError(f"{path}: too many small members to be an image archive")
                    handle = tar.extractfile(member)
                    if handle is not None:
                        blobs[member.name] = handle.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveError(f"{path} is not a readable docker archive: {exc}") from None
    raw = blobs.get("manifest.json")
    if raw is None:
        raise ArchiveError(f"{path} has no manifest.json: not a `docker save` archive")
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ArchiveError(f"{path}: manifest.json is not JSON") from None
    return images_from_manifest(manifest, blobs, sizes)


class _decompressed:
    """A readable stream of the archive's tar bytes. gzip and xz in-process; zstd (no Python
    module in the standard library) through `zstd -dc`, whose exit status is checked."""

    def __init__(self, path: str, codec: str) -> None:
        self.path = path
        self.codec = codec
        self.proc: local.Process[bytes] | None = None
        self.stream: Any = None

    def __enter__(self) -> IO[bytes]:
        if self.codec == "zstd":
            self.proc = local.spawn(
                ["zstd", "-dc", "-q", "--", self.path], stdout=local.PIPE, stderr=local.DEVNULL
            )
            assert self.proc.stdout is not None
            self.stream = self.proc.stdout
        elif self.codec == "gzip":
            import gzip

            self.stream = gzip.open(self.path, "rb")
        elif self.codec == "xz":
            import lzma

            self.stream = lzma.open(self.path, "rb")
        else:
            self.stream = open(self.path, "rb")  # noqa: SIM115 - closed in __exit__
        return cast(IO[bytes], self.stream)

    def __exit__(self, *exc: object) -> None:
        if self.stream is not None:
            self.stream.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class Backup:
    """A backup archive checked and understood, ready to be distributed."""

    archive: Archive
    metadata: dict[str, Any] | None
    metadata_file: str | None


def open_backup(path: str, metadata_file: str | None = None) -> Backup:
    """Check a backup archive against its metadata (size, sha256, codec, image ID) and read
    the images inside. ArchiveError (exit 5, nothing connected) when anything disagrees.

    Without `metadata_file` the default one next to the archive is used when it exists; an
    archive without any metadata is still restorable (docker load checks layer digests and
    distrib verifies image IDs), but its sha256 is then only computed, not checked.
    """
    if not os.path.isfile(path):
        raise ArchiveError(f"archive {path} does not exist")
    meta_path = metadata_file
    if meta_path is None and os.path.exists(metadata_path(path)):
        meta_path = metadata_path(path)
    meta = read_metadata(meta_path) if meta_path else None
    codec = sniff_codec(path)
    size, digest = file_sha256(path)
    if meta is not None:
        if meta.get("size") not in (None, size):
            raise ArchiveError(
                f"{path} is {size} bytes but {meta_path} says {meta['size']}: "
                "truncated or a different file; not restored"
            )
        if meta["sha256"] != digest:
            raise ArchiveError(
                f"{path} has sha256 {digest[:12]}, {meta_path} says {meta['sha256'][:12]}: "
                "corrupt or a different file; not restored"
            )
        if meta.get("codec") not in (None, codec):
            raise ArchiveError(f"{path} is {codec}-compressed but {meta_path} says {meta['codec']}")
    contents = read_contents(path, codec)
    if not contents.images:
        raise ArchiveError(f"{path} holds no tagged image: nothing to verify hosts by")
    if meta is not None and meta.get("image_id"):
        ids = {i.id for i in contents.images}
        if meta["image_id"] not in ids:
            raise ArchiveError(
                f"{path} does not hold image {meta['image_id'][:19]} named in {meta_path}"
            )
    archive = Archive(path, codec, 0, size=size, sha256=digest, images=contents.images, cached=True)
    return Backup(archive, meta, meta_path)
