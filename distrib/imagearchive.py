"""Image archives as a play's source (issue 18, item 2): docker-archive tars (`docker save`,
plain or gzip, zstd, xz compressed), OCI archives (a tar holding `index.json` and `oci-layout`,
as skopeo, zarf, hauler and docker 25+ write them) and OCI layout directories.

Told apart by content, not by name: a directory with `index.json` (or `oci-layout`) is a
layout; a file whose first bytes are gzip, zstd or xz magic, or a tar header (`ustar` at 257),
is an archive. Compose, Kubernetes and list files are text and never match.

Read in two streamed passes; nothing but the small JSON documents is held in memory, and
nothing is ever loaded into the workstation's engine:
1. `read(path)` when the playbook is read: every member is read and every blob's sha256 is
   compared with its name (a docker-archive's raw `layer.tar` with the diffID its config
   lists), the index, manifests and configs are parsed into `ArchivedImage`s. A truncated or
   corrupt archive is a ConfigError naming the file, before anything connects.
2. `wanted_members` + `members` feed `LayerStore.import_members` before the hosts are sent
   anything: the configs and layers of the images (of the platforms) needed go straight into
   distrib's layer store, already compressed blobs adopted as they are when the store keeps
   that codec. From there hosts get them as any image: deltas, loading steps, whole archives.

An image's identity is its config digest (DESIGN.md); its names are the archive's (docker's
`manifest.json` RepoTags, OCI `io.containerd.image.name` or a full
`org.opencontainers.image.ref.name`). An OCI index with several platforms' manifests is one
image with several `Variant`s: each host gets its own platform's (platforms.best_match).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distrib.archivemembers import READ_SIZE, clean_name, corrupt, members, sniff
from distrib.codecs import CODECS
from distrib.commands import config_fingerprint_of
from distrib.errors import ConfigError, LocalError
from distrib.platforms import Platform
from distrib.refs import ImageRef, InvalidReference

DOC_LIMIT = 4 * 1024 * 1024  # JSON documents (index, manifests, configs) kept in memory
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
# zarf's images/ layout names each index entry by this one (the image's own reference there,
# not a base image's), so it is read last, and only on index.json's entries
ZARF_ANNOTATION = "org.opencontainers.image.base.name"
MAX_NESTING = 4  # an index of indexes of ... (docker 28 saves an index per image)


@dataclass(frozen=True)
class Variant:
    """One platform's image in an archive: its config (the identity) and layers."""

    platform: Platform | None
    config: str  # sha256:... of the config blob
    config_member: str  # the member holding it
    diff_ids: tuple[str, ...]
    layers: tuple[str, ...]  # the member holding each layer, in diff_ids order
    size: int  # bytes of those members (compressed or not, as stored in the archive)
    fingerprint: str  # commands.config_fingerprint_of (hosts on docker's containerd store)


@dataclass(frozen=True)
class ArchivedImage:
    """An image an archive holds: its names (maybe none) and one variant per platform."""

    file: str
    kind: str  # "docker-archive tar.zst", "OCI archive tar", "OCI layout directory"
    names: tuple[str, ...]
    variants: tuple[Variant, ...]

    @property
    def platforms(self) -> tuple[Platform | None, ...]:
        return tuple(v.platform for v in self.variants)

    def describe(self) -> str:
        shown = ", ".join(str(p) if p else "no platform" for p in self.platforms)
        return f"{self.kind}, {shown}"


@dataclass(frozen=True)
class Scanned:
    """What pass 1 saw: each member's sha256 and size, the JSON documents, the links."""

    digests: Mapping[str, str]
    sizes: Mapping[str, int]
    docs: Mapping[str, bytes]
    links: Mapping[str, str] = field(default_factory=dict)


# -- telling what a path is ------------------------------------------------------------------


def is_archive(path: str) -> bool:
    """Whether an `images_from:` path is an image archive (else a compose/Kubernetes/list
    file). A directory is always taken for a layout (and must be one)."""
    return os.path.isdir(path) or sniff(path) is not None


# -- pass 1: read, check, catalogue ----------------------------------------------------------

_SCANNED: dict[tuple[str, int, int], tuple[ArchivedImage, ...]] = {}


def read(path: str) -> tuple[ArchivedImage, ...]:
    """The images `path` holds, every blob checked against its digest (cached per file
    version for the run: two plays naming one archive read it once)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the image archive: {exc.strerror or exc}", file=path
        ) from None
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _SCANNED:
        _SCANNED[key] = catalogue(path, scan(path), suffix_of(path))
    return _SCANNED[key]


def suffix_of(path: str) -> str:
    """`directory` for a layout, else what the archive is wrapped in: `tar`, `tar.zst`..."""
    codec = sniff(path)
    return "directory" if codec == "layout" else CODECS[codec or "none"].suffix.lstrip(".")


def scan(path: str) -> Scanned:
    """Pass 1: every member hashed (a blob must hash to its name), JSON documents kept."""
    digests: dict[str, str] = {}
    sizes: dict[str, int] = {}
    docs: dict[str, bytes] = {}
    links: dict[str, str] = {}
    with members(path, links=links) as found:
        for name, stream in found:
            digest = hashlib.sha256()
            size = 0
            kept = bytearray()
            keep = False
            for block in iter(lambda: stream.read(READ_SIZE), b""):  # noqa: B023
                digest.update(block)
                keep = keep or (not size and block.lstrip()[:1] in (b"{", b"["))
                if keep and size < DOC_LIMIT:
                    kept += block
                size += len(block)
            hexdigest = digest.hexdigest()
            digests[name], sizes[name] = "sha256:" + hexdigest, size
            if kept and size <= DOC_LIMIT:
                docs[name] = bytes(kept)
            if name.startswith("blobs/sha256/") and name.rsplit("/", 1)[-1] != hexdigest:
                raise corrupt(path, f"{name} does not match its digest")
    return Scanned(digests, sizes, docs, links)


def catalogue(path: str, scanned: Scanned, suffix: str = "tar") -> tuple[ArchivedImage, ...]:
    """The images of an archive from what pass 1 kept (pure). `suffix`: `suffix_of`."""
    docs = scanned.docs
    if "index.json" in docs:
        kind = "OCI layout directory" if suffix == "directory" else f"OCI archive ({suffix})"
        images = _from_index(path, scanned, kind)
        if images:
            return _named_from_manifest(images, scanned)
    if "manifest.json" in docs:
        return _from_docker_manifest(path, scanned, f"docker-archive ({suffix})")
    raise ConfigError(
        "holds no image: neither an OCI index (index.json) nor a docker-archive manifest "
        "(manifest.json)",
        file=path,
        hint="write it with skopeo copy, docker save or an OCI tool",
    )


def _json(path: str, scanned: Scanned, name: str, what: str) -> Any:
    data = scanned.docs.get(name)
    if data is None:
        if name in scanned.digests:
            raise ConfigError(f"{what} {name} is not a JSON document", file=path)
        raise _missing(path, name, what)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"{what} {name} is not valid JSON ({exc})", file=path) from None


def _missing(path: str, name: str, what: str) -> ConfigError:
    return ConfigError(
        f"lacks the {what} {name} (truncated, or written without it)",
        file=path,
        hint="copy or write the archive again; nothing was sent",
    )


def _blob_name(digest: Any) -> str:
    text = str(digest)
    algorithm, _, hexdigest = text.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _from_index(path: str, scanned: Scanned, kind: str) -> list[ArchivedImage]:
    index = _json(path, scanned, "index.json", "index")
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise ConfigError("index.json has no manifests list", file=path)
    images: dict[str, ArchivedImage] = {}
    for entry in entries:
        if not isinstance(entry, dict) or _is_attestation(entry):
            continue
        names = _names(path, entry.get("annotations"))
        variants = _variants(path, scanned, entry, 0)
        if not variants:
            continue
        key = str(entry.get("digest"))
        if key in images:  # one image listed under several names
            names = _merged(images[key].names, names)
        images[key] = ArchivedImage(path, kind, names, variants)
    return list(images.values())


def _is_attestation(entry: Mapping[str, Any]) -> bool:
    annotations = entry.get("annotations")
    if isinstance(annotations, dict) and "vnd.docker.reference.type" in annotations:
        return True
    platform = entry.get("platform")
    return isinstance(platform, dict) and platform.get("architecture") == "unknown"


def _names(path: str, annotations: Any) -> tuple[str, ...]:
    """An index entry's name: containerd's full name, else a ref.name that is a whole
    reference (one that is only a tag, `1.0`, names no repository), else zarf's."""
    if not isinstance(annotations, dict):
        return ()
    for key in (NAME_ANNOTATION, REF_ANNOTATION, ZARF_ANNOTATION):
        value = annotations.get(key)
        if not isinstance(value, str) or not value:
            continue
        if key != NAME_ANNOTATION and ":" not in value and "/" not in value:
            continue
        try:
            return (_familiar(value),)
        except InvalidReference as exc:
            raise ConfigError(f"annotation {key}: {exc}", file=path) from None
    return ()


def _familiar(text: str) -> str:
    """A name as docker shows it (`docker.io/library/x:1` is `x:1`): one name, one form."""
    return str(ImageRef.parse(ImageRef.parse(text).familiar))


def _merged(names: Sequence[str], more: Sequence[str]) -> tuple[str, ...]:
    return tuple(names) + tuple(n for n in more if n not in names)


def _variants(
    path: str, scanned: Scanned, entry: Mapping[str, Any], depth: int
) -> tuple[Variant, ...]:
    """The platform images behind an index entry: a manifest, or an index of them. The
    manifests of platforms whose blobs the archive lacks are left out (docker 28 saves an
    index listing every platform with the blobs of only some); none at all is an error."""
    name = _blob_name(entry.get("digest"))
    doc = _json(path, scanned, name, "manifest")
    if not isinstance(doc, dict):
        raise ConfigError(f"manifest {name} is not a JSON object", file=path)
    children = doc.get("manifests")
    if str(doc.get("mediaType") or entry.get("mediaType")) in INDEX_TYPES or isinstance(
        children, list
    ):
        if depth >= MAX_NESTING or not isinstance(children, list):
            raise ConfigError(f"index {name} nests too deep or lists no manifests", file=path)
        out: list[Variant] = []
        lacking: list[str] = []
        for child in children:
            if not isinstance(child, dict) or _is_attestation(child):
                continue
            if _blob_name(child.get("digest")) not in scanned.digests:
                lacking.append(str(child.get("digest")))
                continue
            out.extend(_variants(path, scanned, child, depth + 1))
        if not out and lacking:
            raise _missing(path, _blob_name(lacking[0]), "manifest")
        return tuple(out)
    config = doc.get("config")
    layers = doc.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise ConfigError(f"manifest {name} has no config or layers", file=path)
    layer_names = tuple(
        _blob_name(layer.get("digest")) for layer in layers if isinstance(layer, dict)
    )
    return (_variant(path, scanned, _blob_name(config.get("digest")), layer_names),)


def _variant(path: str, scanned: Scanned, config_member: str, layers: Sequence[str]) -> Variant:
    config = _json(path, scanned, config_member, "image config")
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ConfigError(f"image config {config_member} lists no rootfs.diff_ids", file=path)
    resolved = tuple(scanned.links.get(layer, layer) for layer in layers)
    if len(resolved) != len(diff_ids):
        raise ConfigError(
            f"image config {config_member} lists {len(diff_ids)} layer(s), its manifest "
            f"{len(resolved)}",
            file=path,
        )
    for layer, diff_id in zip(resolved, diff_ids):
        if layer not in scanned.digests:
            raise _missing(path, layer, "layer")
        if not layer.startswith("blobs/") and scanned.digests[layer] != diff_id:
            raise corrupt(path, f"{layer} is not the layer {diff_id[:19]} its config lists")
    platform = Platform.of_image(
        str(config.get("os") or ""),
        str(config.get("architecture") or ""),
        str(config.get("variant") or ""),
    )
    return Variant(
        platform,
        scanned.digests[config_member],
        config_member,
        tuple(diff_ids),
        resolved,
        sum(scanned.sizes[layer] for layer in resolved),
        config_fingerprint_of(scanned.docs[config_member]),
    )


def _docker_manifest(path: str, scanned: Scanned) -> list[dict[str, Any]]:
    doc = _json(path, scanned, "manifest.json", "manifest")
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise ConfigError("manifest.json is not a list of images", file=path)
    return doc


def _from_docker_manifest(path: str, scanned: Scanned, kind: str) -> tuple[ArchivedImage, ...]:
    out = []
    for entry in _docker_manifest(path, scanned):
        config = str(entry.get("Config") or "")
        layers = entry.get("Layers")
        if not config or not isinstance(layers, list):
            raise ConfigError("a manifest.json entry has no Config or Layers", file=path)
        variant = _variant(path, scanned, clean_name(config), [clean_name(str(x)) for x in layers])
        out.append(ArchivedImage(path, kind, _repo_tags(path, entry), (variant,)))
    if not out:
        raise ConfigError("manifest.json lists no image", file=path)
    return tuple(out)


def _repo_tags(path: str, entry: Mapping[str, Any]) -> tuple[str, ...]:
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list):
        raise ConfigError("manifest.json: RepoTags must be a list", file=path)
    out = []
    for tag in tags:
        try:
            out.append(_familiar(str(tag)))
        except InvalidReference as exc:
            raise ConfigError(f"manifest.json: RepoTags: {exc}", file=path) from None
    return tuple(out)


def _named_from_manifest(
    images: list[ArchivedImage], scanned: Scanned
) -> tuple[ArchivedImage, ...]:
    """docker 25+ writes both an OCI index and a manifest.json: RepoTags name the
    single-platform images whose config they list."""
    if "manifest.json" not in scanned.docs:
        return tuple(images)
    tags: dict[str, tuple[str, ...]] = {}
    try:
        for entry in _docker_manifest(images[0].file, scanned):
            config = clean_name(str(entry.get("Config") or ""))
            if config in scanned.digests:
                tags[scanned.digests[config]] = _repo_tags(images[0].file, entry)
    except ConfigError:
        return tuple(images)
    out = []
    for image in images:
        extra = tags.get(image.variants[0].config, ()) if len(image.variants) == 1 else ()
        names = _merged(image.names, extra)
        out.append(ArchivedImage(image.file, image.kind, names, image.variants))
    return tuple(out)


# -- pass 2: what the layer store needs ------------------------------------------------------


def wanted_members(
    variants: Sequence[Variant], has_config: Any, has_layer: Any
) -> dict[str, tuple[str, str]]:
    """member -> ("config", digest) | ("layer", diffID) for what the store lacks."""
    out: dict[str, tuple[str, str]] = {}
    for variant in variants:
        if not has_config(variant.config):
            out[variant.config_member] = ("config", variant.config)
        for member, diff_id in zip(variant.layers, variant.diff_ids):
            if not has_layer(diff_id):
                out[member] = ("layer", diff_id)
    return out


def error_in(path: str, exc: LocalError) -> LocalError:
    """A layer store error while importing `path`, naming it."""
    return LocalError(f"{path}: {exc.message}", hint="the archive is corrupt; nothing was sent")
