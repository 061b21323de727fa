"""Small image archives built with tarfile, as `docker save`, skopeo, zarf and hauler write them
(issue 18): docker-archive (classic), OCI layout directories and OCI archives, compressed or
not, single- or multi-platform. Shared by the unit tests and the lab test."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A layer: a deterministic tar of `files`."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class Image:
    """An image to write: layers (raw tars), a platform, a command (part of the config)."""

    layers: list[bytes]
    architecture: str = "amd64"
    variant: str = ""
    cmd: list[str] = field(default_factory=lambda: ["/bin/sh"])
    names: list[str] = field(default_factory=list)

    @property
    def diff_ids(self) -> list[str]:
        return [sha(layer) for layer in self.layers]

    @property
    def config(self) -> bytes:
        doc: dict[str, Any] = {
            "architecture": self.architecture,
            "os": "linux",
            "config": {"Cmd": self.cmd},
            "created": "2026-12-02T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids},
        }
        if self.variant:
            doc["variant"] = self.variant
        return json.dumps(doc, sort_keys=True).encode()

    @property
    def id(self) -> str:
        return sha(self.config)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def docker_archive(path: Path, images: list[Image]) -> Path:
    """What docker 20.10 `docker save` writes: `<id>/layer.tar`, `<config>.json`,
    manifest.json (RepoTags) last."""
    with tarfile.open(path, "w") as tar:
        written: set[str] = set()
        manifest = []
        for image in images:
            for layer in image.layers:
                name = f"{sha(layer)[7:]}/layer.tar"
                if name not in written:
                    written.add(name)
                    _add(tar, name, layer)
            _add(tar, f"{image.id[7:]}.json", image.config)
            manifest.append(
                {
                    "Config": f"{image.id[7:]}.json",
                    "RepoTags": image.names,
                    "Layers": [f"{sha(layer)[7:]}/layer.tar" for layer in image.layers],
                }
            )
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def _manifest(image: Image, compress: bool, blobs: dict[str, bytes]) -> dict[str, Any]:
    """Store `image`'s config and layers in `blobs`; return its manifest's descriptor."""
    layers = []
    for layer in image.layers:
        data = gzip.compress(layer, mtime=0) if compress else layer
        blobs[sha(data)] = data
        layers.append(
            {"mediaType": LAYER_GZIP if compress else LAYER, "digest": sha(data), "size": len(data)}
        )
    blobs[image.id] = image.config
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": image.id, "size": len(image.config)},
        "layers": layers,
    }
    data = json.dumps(doc).encode()
    blobs[sha(data)] = data
    platform = {"os": "linux", "architecture": image.architecture}
    if image.variant:
        platform["variant"] = image.variant
    return {"mediaType": MANIFEST, "digest": sha(data), "size": len(data), "platform": platform}


def oci_layout(
    directory: Path,
    images: list[Image],
    compress: bool = True,
    multi: str | None = None,
    ref_name: str | None = None,
) -> Path:
    """An OCI layout (skopeo `oci:DIR`): one index entry per image, or with `multi` (the
    name) one entry: an image index of every image (a multi-platform image)."""
    blobs: dict[str, bytes] = {}
    descriptors = [_manifest(image, compress, blobs) for image in images]
    entries = []
    if multi is not None:
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": descriptors})
        data = index.encode()
        blobs[sha(data)] = data
        entry: dict[str, Any] = {"mediaType": INDEX, "digest": sha(data), "size": len(data)}
        entry["annotations"] = {
            "io.containerd.image.name": multi,
            "org.opencontainers.image.ref.name": multi.rsplit(":", 1)[-1],
        }
        entries.append(entry)
    else:
        for image, descriptor in zip(images, descriptors):
            descriptor = dict(descriptor)
            names = image.names or ([ref_name] if ref_name else [])
            if names:
                descriptor["annotations"] = {"org.opencontainers.image.ref.name": names[0]}
            entries.append(descriptor)
    os.makedirs(directory / "blobs" / "sha256", exist_ok=True)
    for digest, data in blobs.items():
        (directory / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (directory / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries})
    )
    return directory


def oci_archive(path: Path, layout: Path) -> Path:
    """An OCI archive (skopeo `oci-archive:F`): the layout as a tar, blobs first."""
    with tarfile.open(path, "w") as tar:
        for name in sorted(os.listdir(layout / "blobs" / "sha256")):
            _add(tar, f"blobs/sha256/{name}", (layout / "blobs" / "sha256" / name).read_bytes())
        for name in ("oci-layout", "index.json"):
            _add(tar, name, (layout / name).read_bytes())
    return path


def compress(path: Path, codec: str) -> Path:
    """`path` compressed as a whole (gzip, zstd, xz), as `docker save | zstd` writes it."""
    data = path.read_bytes()
    if codec == "gzip":
        out = path.with_name(path.name + ".gz")
        out.write_bytes(gzip.compress(data, mtime=0))
        return out
    suffix = {"zstd": ".zst", "xz": ".xz"}[codec]
    out = path.with_name(path.name + suffix)
    tool = ["zstd", "-q", "-c"] if codec == "zstd" else ["xz", "-c"]
    out.write_bytes(subprocess.run(tool, input=data, capture_output=True, check=True).stdout)
    return out
