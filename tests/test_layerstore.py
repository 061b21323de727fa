"""The layer store: compress each layer once, assemble per-host deltas (pure + local only)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from distrib.archive import LocalImage
from distrib.engine import CHANGED, CHECK, FAILED, Job, deploy
from distrib.errors import LocalError
from distrib.layerarchive import PARTIAL_LABEL, missing_layers, partial_config, zstd_raw_frame
from distrib.layerstore import LayerStore
from distrib.refs import ImageRef
from tests.fakes import FakeFleet, FakeHost
from tests.fakes import loads as fake_loads
from tests.test_engine import host

A, B, C, D = (f"sha256:{c * 64}" for c in "abcd")


def chain_prefixes(diff_ids: Sequence[str]) -> set[tuple[str, ...]]:
    """Every layer chain an image implies: (d1,), (d1, d2), ... (a host holds these)."""
    return {tuple(diff_ids[: i + 1]) for i in range(len(diff_ids))}


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
def test_missing_layers_compare_chains(
    host_images: list[tuple[str, ...]], diff_ids: tuple[str, ...], missing: list[str]
) -> None:
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
        manifest = json.dumps(
            [
                {
                    "Config": image_id[7:] + ".json",
                    "Layers": [f"v1id{i}/layer.tar" for i in range(len(layers))],
                }
            ]
        ).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return LocalImage(
        ImageRef.parse("demo/x:1"), image_id, diff_ids, sum(map(len, layers))
    ), tar_path


@pytest.fixture
def docker_saving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`docker save` stand-in: prints the file named in $FAKE_SAVE, counting its calls."""
    script = tmp_path / "docker"
    script.write_text(f'#!/bin/sh\necho x >> {tmp_path}/calls\nexec cat "$FAKE_SAVE"\n')
    script.chmod(0o755)
    monkeypatch.setenv("DISTRIB_LOCAL_DOCKER", str(script))
    return tmp_path / "calls"


def layer(n: int, seed: str) -> bytes:
    return (seed * 1000).encode()[:n]


def test_ensure_compresses_each_layer_once(
    tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_concurrent_ensure_fills_the_store_once(
    tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, save1 = fake_save(tmp_path, [layer(50000, "x"), layer(9000, "y")])
    monkeypatch.setenv("FAKE_SAVE", str(save1))
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(LayerStore(str(tmp_path / "c")).ensure([v1]))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results)[:2] == [0, 0] and results.count(0) == 2


def test_assembled_archives(
    tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_prune_removes_least_recently_used(
    tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, save1 = fake_save(tmp_path, [os.urandom(20000), os.urandom(20000)])
    monkeypatch.setenv("FAKE_SAVE", str(save1))
    store = LayerStore(str(tmp_path / "cache"))
    store.ensure([v1])
    total = sum(e[1] for e in store.entries())
    removed, freed = store.prune(total - 1)
    assert removed >= 1 and freed > 0
    assert sum(e[1] for e in store.entries()) <= total - 1
    assert not store.has(v1)


def test_engine_sends_only_missing_layers(
    tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def members(archive: object) -> tuple[list[str], list[dict[str, object]], dict[str, bytes]]:
    """Names, manifest and JSON members of an assembled archive."""
    with tarfile.open(fileobj=io.BytesIO(b"".join(archive.chunks()))) as tar:  # type: ignore[attr-defined]
        names = tar.getnames()
        data = {n: tar.extractfile(n).read() for n in names if n.endswith(".json")}  # type: ignore[union-attr]
    return names, json.loads(data["manifest.json"]), data


def stepped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LayerStore, LocalImage]:
    v, save = fake_save(tmp_path, [layer(5000, "base"), layer(3000, "lib"), layer(700, "app")])
    monkeypatch.setenv("FAKE_SAVE", str(save))
    store = LayerStore(str(tmp_path / "cache"))
    store.ensure([v])
    store.step_bytes = 1  # every layer its own loading step
    return store, v


def test_steps_cut_a_delta_at_layer_boundaries(
    tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, v = stepped(tmp_path, monkeypatch)
    steps = list(store.steps([v]))
    assert [s.layers for s in steps] == [[d] for d in v.diff_ids]
    for depth, step in enumerate(steps, 1):
        names, manifest, data = members(step)
        assert names[0] == f"{v.diff_ids[depth - 1][7:]}/layer.tar", "only this step's layer"
        assert manifest[0]["Layers"] == [f"{d[7:]}/layer.tar" for d in v.diff_ids[:depth]]
        config = json.loads(data[str(manifest[0]["Config"])])
        assert config["rootfs"]["diff_ids"] == list(v.diff_ids[:depth])
        if depth < len(v.diff_ids):  # a stand-in: untagged, labelled, its ID is its digest
            assert manifest[0]["RepoTags"] == [] and config["config"]["Labels"] == {
                PARTIAL_LABEL: "true"
            }
            assert (
                step.stand_in
                == "sha256:" + hashlib.sha256(data[str(manifest[0]["Config"])]).hexdigest()
            )
        else:  # the real config and tag come last
            assert manifest[0]["RepoTags"] == ["demo/x:1"] and step.stand_in is None
            assert manifest[0]["Config"] == v.id[7:] + ".json"
    # the host holds the base: two steps; big steps: one, byte for byte the delta archive
    assert [s.layers for s in store.steps([v], chain_prefixes(v.diff_ids[:1]))] == [
        [d] for d in v.diff_ids[1:]
    ]
    store.step_bytes = 10**9
    (one,) = store.steps([v], chain_prefixes(v.diff_ids[:1]))
    assert b"".join(one.chunks()) == b"".join(
        store.assemble([v], chain_prefixes(v.diff_ids[:1])).chunks()
    )
    # an image the host holds entirely: a config-only step
    (only,) = store.steps([v], chain_prefixes(v.diff_ids))
    assert only.layers == [] and members(only)[0] == [v.id[7:] + ".json", "manifest.json"]


def test_partial_config_is_deterministic_and_labelled() -> None:
    made = partial_config([A])
    assert made == partial_config([A]) != partial_config([A, B])
    doc = json.loads(made)
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [A]} and doc["os"] == "linux"
    assert doc["config"]["Labels"] == {PARTIAL_LABEL: "true"}


def slow_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save: Path, gate: Path) -> None:
    """`docker save` stand-in that writes the first 10 kB, then waits for `gate` to exist."""
    script = tmp_path / "docker-slow"
    script.write_text(
        f"#!/bin/sh\nhead -c 10240 {save}\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
        f"tail -c +10241 {save}\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("DISTRIB_LOCAL_DOCKER", str(script))


def test_steps_leave_while_the_store_still_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A background fill: the first step is ready while docker save has not written the
    rest (the later layers and the config); the steps equal those of a filled store."""
    v, save = fake_save(tmp_path, [layer(5000, "base"), layer(3000, "lib"), layer(700, "app")])
    gate = tmp_path / "gate"
    slow_docker(tmp_path, monkeypatch, save, gate)
    store = LayerStore(str(tmp_path / "cache"))
    store.step_bytes = 1
    store.fill_in_background([v])
    assert store.filling
    steps = store.steps([v])
    first = next(steps)
    assert first.layers == [v.diff_ids[0]] and store.filling and not store.has(v)
    gate.touch()
    rest = list(steps)
    store.wait_filled()
    assert not store.filling and store.fill_added > 0
    made = [b"".join(s.chunks()) for s in (first, *rest)]
    assert made == [b"".join(s.chunks()) for s in store.steps([v])], "same bytes as when filled"


def test_a_failed_fill_fails_the_waiting_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v, _ = fake_save(tmp_path, [layer(5000, "base")])
    script = tmp_path / "docker-broken"
    script.write_text("#!/bin/sh\necho 'no such image' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("DISTRIB_LOCAL_DOCKER", str(script))
    store = LayerStore(str(tmp_path / "cache"))
    store.fill_in_background([v])
    with pytest.raises(LocalError):
        list(store.steps([v]))
    with pytest.raises(LocalError):
        store.wait_filled()


def test_engine_sends_steps_of_a_store_still_filling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v, save = fake_save(tmp_path, [layer(5000, "base"), layer(3000, "lib"), layer(700, "app")])
    monkeypatch.setenv("FAKE_SAVE", str(save))
    gate = tmp_path / "gate"
    slow_docker(tmp_path, monkeypatch, save, gate)
    store = LayerStore(str(tmp_path / "cache"))
    store.step_bytes = 1
    store.fill_in_background([v])
    h = FakeHost("a", archive_images={"demo/x:1": v.id})
    threading.Timer(0.5, gate.touch).start()
    result = deploy(host("a"), Job((v,), None, store=store), FakeFleet(h))
    assert result.status == CHANGED, result.message
    assert "loaded in 3 steps" in result.message and (result.layers_sent, result.layers_total) == (3, 3)
    assert result.bytes_sent == sum(s.size for s in store.steps([v]))
    assert not h.files and not h.dirs


def test_engine_loads_each_step_while_sending_the_next(
    tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, v = stepped(tmp_path, monkeypatch)
    h = FakeHost("a", archive_images={"demo/x:1": v.id})
    result = deploy(host("a"), Job((v,), None, store=store), FakeFleet(h))
    assert result.status == CHANGED, result.message
    steps = list(store.steps([v]))
    assert result.bytes_sent == sum(s.size for s in steps)
    uploads = [c for c in h.log if c.startswith("umask 077 && cat")]
    loads = fake_loads(h.log)
    assert len(uploads) == len(loads) == 3
    assert [c.split()[-1] for c in loads] == [u.split()[-1].removesuffix(".part") for u in uploads]
    # each step's checksum, rename and load: one command (issue 19), the load run inside it
    sums = [i for i, c in enumerate(h.log) if c.startswith("s=$(sha256sum -- ")]
    assert all(
        min(j for j in sums if j > h.log.index(u)) < h.log.index(ld)
        for u, ld in zip(uploads, loads)
    ), "checked before loaded"
    (rmi,) = [c for c in h.log if c.startswith("docker rmi ")]
    assert rmi.split()[2:] == [s.stand_in for s in steps[:-1]]
    assert not h.files and not h.dirs, "no step file nor staging dir left"


def test_a_failed_step_removes_the_stand_ins_and_the_staging_dir(
    tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, v = stepped(tmp_path, monkeypatch)
    h = FakeHost("a", load_fails=True, archive_images={"demo/x:1": v.id})
    result = deploy(host("a"), Job((v,), None, store=store), FakeFleet(h))
    assert result.status == FAILED
    loads = [c.split()[-1] for c in fake_loads(h.log)]
    assert loads[0].endswith("/images.0.tar") and not any(
        ".1.tar" in x or ".2.tar" in x for x in loads
    ), "nothing loaded after a failed step"
    assert any(c.startswith("docker rmi ") for c in h.log)
    assert not h.files and not h.dirs


def unzstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("size", [0, 1, 512, 128 * 1024, 128 * 1024 + 1, 300_000])
def test_zstd_raw_frames_decode_concatenated(size: int) -> None:
    data = os.urandom(size)
    assert unzstd(zstd_raw_frame(data) + zstd_raw_frame(b"next")) == data + b"next"


def test_zstd_store_sends_one_zstd_stream_of_its_blobs(
    tmp_path: Path, docker_saving: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zstd blobs stand for the raw layers in one zstd stream: it decodes to a plain
    docker-archive whose layers hash to their diffIDs; gzip and zstd blobs share a store."""
    raw = [layer(5000, "base"), os.urandom(200_000), layer(700, "app")]
    v, save = fake_save(tmp_path, raw)
    monkeypatch.setenv("FAKE_SAVE", str(save))
    store = LayerStore(str(tmp_path / "cache"), codec="zstd")
    assert store.level == 3 and store.ensure([v]) > 0
    blob = store.blob(v.diff_ids[1])
    assert blob is not None and blob.path.endswith(".zst") and blob.raw_size == 200_000
    assert os.path.exists(blob.path + ".json")
    full = store.assemble([v])
    assert (full.codec, full.extension) == ("zstd", ".tar.zst")
    data = b"".join(full.chunks())
    assert len(data) == full.size and hashlib.sha256(data).hexdigest() == full.sha256
    for offset in (0, 1, 20, full.size // 2, full.size - 1, full.size):
        assert b"".join(full.chunks(offset)) == data[offset:], offset
    with tarfile.open(fileobj=io.BytesIO(unzstd(data))) as tar:
        layers = {m.name: tar.extractfile(m).read() for m in tar if m.name.endswith("layer.tar")}  # type: ignore[union-attr]
        names = tar.getnames()
    assert names[-2:] == [f"{v.id[7:]}.json", "manifest.json"]
    assert sorted("sha256:" + hashlib.sha256(b).hexdigest() for b in layers.values()) == sorted(
        v.diff_ids
    ), "each layer decodes to its raw bytes"
    store.step_bytes = 1
    steps = list(store.steps([v], chain_prefixes(v.diff_ids[:1])))
    assert [s.layers for s in steps] == [[d] for d in v.diff_ids[1:]]
    assert all(s.codec == "zstd" for s in steps)
    with tarfile.open(fileobj=io.BytesIO(unzstd(b"".join(steps[0].chunks())))) as tar:
        assert tar.getnames()[0] == f"{v.diff_ids[1][7:]}/layer.tar"
    gz = LayerStore(str(tmp_path / "cache"))  # the gzip blobs of the same layers, beside
    gz.ensure([v])
    assert gz.has(v) and store.has(v) and docker_saving.read_text().count("x") == 2
    assert gz.assemble([v]).codec == "none" and gz.assemble([v]).extension == ".tar"
    store.prune(0)
    assert os.listdir(tmp_path / "cache" / "layers" / "blobs") == [], "metadata pruned too"
