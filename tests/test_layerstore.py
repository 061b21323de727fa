"""The layer store: compress each layer once, assemble per-host deltas (pure + local only)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest

from distrib.archive import LocalImage
from distrib.engine import CHANGED, CHECK, Job, deploy
from distrib.layerstore import LayerStore, chain_prefixes, missing_layers
from distrib.refs import ImageRef
from tests.fakes import FakeFleet, FakeHost
from tests.test_engine import host

A, B, C, D = (f"sha256:{c * 64}" for c in "abcd")


def image(ref: str, *diff_ids: str, image_id: str = "") -> LocalImage:
    return LocalImage(ImageRef.parse(ref), image_id or "sha256:" + "f" * 64, diff_ids, 100)


@pytest.mark.parametrize(
    ("host_images", "diff_ids", "missing"),
    [
        ([], (A, B, C), [A, B, C]),
        ([(A,)], (A, B, C), [B, C]),
        ([(A, B)], (A, B, C), [C]),
        ([(A, B, C)], (A, B, C), []),
        ([(B,)], (A, B, C), [A, B, C]),  # B under another parent is another layer
        ([(A, D)], (A, B), [B]),
        ([(D,), (A, B)], (A, B, D), [D]),
    ],
)
def test_missing_layers_compare_chains(host_images: list[tuple[str, ...]], diff_ids: tuple[str, ...], missing: list[str]) -> None:
    chains: set[tuple[str, ...]] = set()
    for layers in host_images:
        chains |= chain_prefixes(layers)
    assert missing_layers(image("x:1", *diff_ids), chains) == missing


def fake_save(tmp_path: Path, layers: list[bytes]) -> tuple[LocalImage, Path]:
    """A classic `docker save` tar of one image built from `layers`, and a stand-in docker."""
    diff_ids = tuple("sha256:" + hashlib.sha256(data).hexdigest() for data in layers)
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": list(diff_ids)}}).encode()
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    tar_path = tmp_path / f"save-{image_id[7:19]}.tar"
    with tarfile.open(tar_path, "w") as tar:
        for i, data in enumerate(layers):
            info = tarfile.TarInfo(f"v1id{i}/layer.tar")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(image_id[7:] + ".json")
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
        manifest = json.dumps([{"Config": image_id[7:] + ".json", "Layers": [f"v1id{i}/layer.tar" for i in range(len(layers))]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return LocalImage(ImageRef.parse("demo/x:1"), image_id, diff_ids, sum(map(len, layers))), tar_path


@pytest.fixture
def docker_saving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`docker save` stand-in: prints the file named in $FAKE_SAVE, counting its calls."""
    script = tmp_path / "docker"
    script.write_text(f'#!/bin/sh\necho x >> {tmp_path}/calls\nexec cat "$FAKE_SAVE"\n')
    script.chmod(0o755)
    monkeypatch.setenv("DISTRIB_LOCAL_DOCKER", str(script))
    return tmp_path / "calls"


def layer(n: int, seed: str) -> bytes:
    return (seed * 1000).encode()[: n]


def test_ensure_compresses_each_layer_once(tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = [layer(5000, "base"), layer(3000, "lib")]
    v1, save1 = fake_save(tmp_path, base)
    v2, save2 = fake_save(tmp_path, [*base, layer(700, "app")])
    store = LayerStore(str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_SAVE", str(save1))
    assert store.ensure([v1]) > 0
    assert store.has(v1) and not store.has(v2)
    assert store.ensure([v1]) == 0, "nothing new: docker save not even run"
    assert docker_saving.read_text().count("x") == 1
    monkeypatch.setenv("FAKE_SAVE", str(save2))
    added = store.ensure([v2])
    only_new = store.blob(v2.diff_ids[2])
    assert only_new is not None and added == only_new.size, "base layers were not compressed again"


def test_concurrent_ensure_fills_the_store_once(tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, save1 = fake_save(tmp_path, [layer(50000, "x"), layer(9000, "y")])
    monkeypatch.setenv("FAKE_SAVE", str(save1))
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(LayerStore(str(tmp_path / "c")).ensure([v1])))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results)[:2] == [0, 0] and results.count(0) == 2


def test_assembled_archives(tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v2, save2 = fake_save(tmp_path, [layer(5000, "base"), layer(3000, "lib"), layer(700, "app")])
    monkeypatch.setenv("FAKE_SAVE", str(save2))
    store = LayerStore(str(tmp_path / "cache"))
    store.ensure([v2])
    full = store.assemble([v2])
    delta = store.assemble([v2], chain_prefixes(v2.diff_ids[:2]))
    assert full.layers == sorted(v2.diff_ids) and delta.layers == [v2.diff_ids[2]]
    data = b"".join(full.chunks())
    assert len(data) == full.size and hashlib.sha256(data).hexdigest() == full.sha256
    for offset in (0, 1, 511, 512, 513, 1000, full.size - 1025, full.size - 1, full.size):
        assert b"".join(full.chunks(offset)) == data[offset:], offset
    assert full.prefix_sha256(777) == hashlib.sha256(data[:777]).hexdigest()
    assert b"".join(store.assemble([v2]).chunks()) == data, "deterministic bytes"
    with tarfile.open(fileobj=io.BytesIO(b"".join(delta.chunks()))) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert names == [f"{v2.diff_ids[2][7:]}/layer.tar", f"{v2.id[7:]}.json", "manifest.json"]
    assert manifest[0]["Layers"] == [f"{d[7:]}/layer.tar" for d in v2.diff_ids], "all layers listed"
    assert manifest[0]["RepoTags"] == ["demo/x:1"]


def test_prune_removes_least_recently_used(tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, save1 = fake_save(tmp_path, [os.urandom(20000), os.urandom(20000)])
    monkeypatch.setenv("FAKE_SAVE", str(save1))
    store = LayerStore(str(tmp_path / "cache"))
    store.ensure([v1])
    total = sum(e[1] for e in store.entries())
    removed, freed = store.prune(total - 1)
    assert removed >= 1 and freed > 0
    assert sum(e[1] for e in store.entries()) <= total - 1
    assert not store.has(v1)


def test_engine_sends_only_missing_layers(tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v2, save2 = fake_save(tmp_path, [layer(5000, "base"), layer(3000, "lib"), layer(700, "app")])
    monkeypatch.setenv("FAKE_SAVE", str(save2))
    store = LayerStore(str(tmp_path / "cache"))
    store.ensure([v2])
    v1_on_host = {"demo/x:0": "sha256:" + "0" * 64}
    h = FakeHost(
        "a",
        images=dict(v1_on_host),
        layers={"demo/x:0": v2.diff_ids[:2]},
        archive_images={"demo/x:1": v2.id},
    )
    checked = deploy(host("a"), Job((v2,), None, mode=CHECK, store=store), FakeFleet(h))
    assert "would send 1 of 3 layer(s)" in checked.message
    result = deploy(host("a"), Job((v2,), None, store=store), FakeFleet(h))
    assert result.status == CHANGED, result.message
    assert (result.layers_sent, result.layers_total) == (1, 3)
    delta = store.assemble([v2], chain_prefixes(v2.diff_ids[:2]))
    assert result.bytes_sent == delta.size < store.assemble([v2]).size
    assert "1/3 layers sent" in result.message
