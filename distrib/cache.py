"""The workstation cache: whole archives (`archives/`) and the layer store (`layers/`), under one
size limit with least-recently-used pruning (`distrib cache list|prune`)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from distrib.archive import cache_dir
from distrib.layerblobs import meta_path
from distrib.layerstore import LayerStore
from distrib.units import parse_size

DEFAULT_MAX = "20G"


def max_bytes() -> int:
    return parse_size(os.environ.get("DISTRIB_CACHE_MAX", DEFAULT_MAX))


@dataclass(frozen=True)
class Entry:
    kind: str  # archive | layer | config
    path: str
    size: int
    used: float  # mtime: touched on every use
    label: str


def entries(directory: str | None = None) -> list[Entry]:
    """Everything in the cache, least recently used first."""
    root = directory or cache_dir()
    out: list[Entry] = []
    archives = os.path.join(root, "archives")
    if os.path.isdir(archives):
        for name in os.listdir(archives):
            if name.startswith(".") or name.endswith(".json"):
                continue
            path = os.path.join(archives, name)
            key = name.split(".", 1)[0]
            label = key
            with (
                contextlib.suppress(OSError, ValueError),
                open(os.path.join(archives, key + ".json"), encoding="utf-8") as fh,
            ):
                meta = json.load(fh)
                label = f"{meta.get('codec')} " + " ".join(sorted(meta.get("images", {})))
            with contextlib.suppress(OSError):
                st = os.stat(path)
                out.append(Entry("archive", path, st.st_size, st.st_mtime, label))
    if os.path.isdir(os.path.join(root, "layers")):
        store = LayerStore(root)
        for path, size, used in store.entries():
            kind = "layer" if os.path.dirname(path).endswith("blobs") else "config"
            out.append(Entry(kind, path, size, used, os.path.basename(path).split(".", 1)[0][:12]))
    return sorted(out, key=lambda e: e.used)


def prune(limit: int, directory: str | None = None) -> tuple[int, int]:
    """Delete least recently used entries until the cache holds at most `limit` bytes."""
    root = directory or cache_dir()
    listed = entries(root)
    total = sum(e.size for e in listed)
    removed = freed = 0
    store = LayerStore(root) if os.path.isdir(os.path.join(root, "layers")) else None
    with store.locked() if store else contextlib.nullcontext():
        for entry in listed:
            if total <= limit:
                break
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                sidecar = _sidecar(entry)
                if sidecar:
                    with contextlib.suppress(OSError):
                        os.unlink(sidecar)
                removed += 1
                freed += entry.size
                total -= entry.size
    return removed, freed


def _sidecar(entry: Entry) -> str | None:
    if entry.kind == "layer":
        return meta_path(entry.path)
    if entry.kind == "archive":
        name = os.path.basename(entry.path).split(".", 1)[0]
        return os.path.join(os.path.dirname(entry.path), name + ".json")
    return None
