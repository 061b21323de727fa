"""The layer store with docker 25+ (issue 14): OCI-layout saves in, OCI-layout deltas out for
docker's containerd image store. Local only: a stand-in `docker save`, real gzip/zstd."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from distrib import commands
from distrib.archive import LocalImage
from distrib.errors import LocalError
from distrib.layerarchive import LAYER_GZIP, LAYER_TAR
from distrib.layerstore import LayerStore
from distrib.refs import ImageRef
from tests.test_layerstore import docker_saving, layer  # noqa: F401 - fixture

__all__ = ["docker_saving"]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_save(tmp_path: Path, layers: list[bytes], compress: bool) -> tuple[LocalImage, Path]:
    """What docker 25+ `docker save` writes: blobs named by digest (raw layers on the classic
    store, gzip blobs on the containerd store), then index.json and manifest.json last."""
    diff_ids = [sha(data) for data in layers]
    config = json.dumps({"os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    config_bytes = config.encode()
    blobs = [gzip.compress(data, mtime=0) if compress else data for data in layers]
    path = tmp_path / f"oci-{len(layers)}-{compress}.tar"
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for blob in sorted([*blobs, config_bytes], key=sha):  # docker writes them by digest
            add(f"blobs/sha256/{sha(blob)[7:]}", blob)
        add("index.json", b'{"schemaVersion":2,"manifests":[]}')
        entry = {
            "Config": f"blobs/sha256/{sha(config_bytes)[7:]}",
            "RepoTags": ["demo/x:1"],
            "Layers": [f"blobs/sha256/{sha(b)[7:]}" for b in blobs],
        }
        add("manifest.json", json.dumps([entry]).encode())
    image = LocalImage(
        ImageRef.parse("demo/x:1"), sha(config_bytes), tuple(diff_ids), sum(map(len, layers))
    )
    return image, path


@pytest.mark.parametrize("compress", [False, True], ids=["classic store", "containerd store"])
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_oci_saves_fill_the_store(
    tmp_path: Path,
    docker_saving: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    compress: bool,
    codec: str,
) -> None:
    layers = [layer(5000, "base"), layer(300, "app")]
    image, save = oci_save(tmp_path, layers, compress)
    monkeypatch.setenv("FAKE_SAVE", str(save))
    store = LayerStore(str(tmp_path / "cache"), codec=codec)
    compressed = store.ensure([image])
    assert store.has(image)
    adopted = compress and codec == "gzip"
    assert (compressed == 0) == adopted, "a gzip blob of the engine is kept, not recompressed"
    for data, diff_id in zip(layers, image.diff_ids):
        blob = store.blob(diff_id)
        assert blob is not None and blob.raw_size == len(data)
        stored = Path(blob.path).read_bytes()
        unpacked = gzip.decompress(stored) if codec == "gzip" else zstd_decompress(stored)
        assert unpacked == data
        assert blob.sha256 == hashlib.sha256(stored).hexdigest()
    assert not [p for p in (tmp_path / "cache" / "layers" / "blobs").iterdir() if p.name[0] == "."]


def zstd_decompress(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout


def test_a_saved_blob_that_is_not_its_layer_is_refused(
    tmp_path: Path,
    docker_saving: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image, save = oci_save(tmp_path, [layer(5000, "base")], compress=True)
    lying = LocalImage(image.ref, image.id, (sha(b"something else"),), image.size)
    monkeypatch.setenv("FAKE_SAVE", str(save))
    store = LayerStore(str(tmp_path / "cache"))
    with pytest.raises(LocalError, match="does not match its diffID|lacks its config"):
        store.ensure([lying])
    assert store.blob(lying.diff_ids[0]) is None


def members(archive: object) -> dict[str, bytes]:
    data = b"".join(archive.chunks())  # type: ignore[attr-defined]
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = zstd_decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture
def filled(
    tmp_path: Path,
    docker_saving: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[LayerStore, LocalImage]:
    image, save = oci_save(
        tmp_path, [layer(5000, "base"), layer(900, "lib"), layer(70, "app")], False
    )
    monkeypatch.setenv("FAKE_SAVE", str(save))
    store = LayerStore(str(tmp_path / "cache"))
    store.ensure([image])
    return store, image


def test_containerd_store_delta_names_the_blobs_the_host_holds(
    filled: tuple[LayerStore, LocalImage],
) -> None:
    store, image = filled
    a, b, c = image.diff_ids
    gz_b = store.blob(b)
    assert gz_b is not None
    chains = {(a,), (a, b)}
    # the host holds a raw (digest = diffID) and b as this store's gzip blob
    held = frozenset({a, "sha256:" + gz_b.sha256})
    archive = store.assemble([image], chains, held)
    assert archive.layers == [c]
    got = members(archive)
    index = json.loads(got["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "docker.io/demo/x:1"
    manifest = json.loads(got[f"blobs/sha256/{entry['digest'][7:]}"])
    assert sha(got[f"blobs/sha256/{entry['digest'][7:]}"]) == entry["digest"]
    layers = manifest["layers"]
    assert [(d["mediaType"], d["digest"]) for d in layers[:2]] == [
        (LAYER_TAR, a),
        (LAYER_GZIP, "sha256:" + gz_b.sha256),
    ]
    sent = layers[2]
    assert sent["mediaType"] == LAYER_GZIP and f"blobs/sha256/{sent['digest'][7:]}" in got
    assert sha(got[f"blobs/sha256/{sent['digest'][7:]}"]) == sent["digest"]
    assert manifest["config"]["digest"] == image.id and f"blobs/sha256/{image.id[7:]}" in got
    assert got["oci-layout"] == b'{"imageLayoutVersion":"1.0.0"}'
    legacy = json.loads(got["manifest.json"])[0]
    assert legacy["Layers"] == [f"blobs/sha256/{d['digest'][7:]}" for d in layers]


def test_containerd_store_sends_a_layer_held_only_in_another_form(
    filled: tuple[LayerStore, LocalImage],
) -> None:
    """The chain is there but its blob came from elsewhere (another compression): naming a
    blob the host lacks makes a broken image on docker 28 (measured), so it is sent."""
    store, image = filled
    a, b, _ = image.diff_ids
    archive = store.assemble([image], {(a,), (a, b)}, frozenset({a}))
    assert archive.layers == sorted(image.diff_ids[1:])
    assert store.missing(image, {(a,), (a, b)}, frozenset({a})) == list(image.diff_ids[1:])
    assert store.missing(image, {(a,), (a, b)}, None) == [image.diff_ids[2]], "classic: chains"


def test_containerd_store_steps_name_earlier_steps_and_stand_ins_by_manifest(
    filled: tuple[LayerStore, LocalImage],
) -> None:
    store, image = filled
    store.step_bytes = 1  # every layer its own step
    steps = list(store.steps([image], set(), frozenset()))
    assert [s.layers for s in steps] == [[d] for d in image.diff_ids]
    held: set[str] = set()
    for step in steps:
        got = members(step)
        (entry,) = json.loads(got["index.json"])["manifests"]
        manifest = json.loads(got[f"blobs/sha256/{entry['digest'][7:]}"])
        for desc in manifest["layers"]:
            name = f"blobs/sha256/{desc['digest'][7:]}"
            assert name in got or desc["digest"] in held, "every blob is sent or held"
            held.add(desc["digest"])
        if step is steps[-1]:
            assert step.stand_in is None and "annotations" in entry
        else:
            assert step.stand_in == entry["digest"] and "annotations" not in entry


def test_zstd_store_sends_raw_layers_named_by_diffid(
    tmp_path: Path,
    docker_saving: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image, save = oci_save(tmp_path, [layer(5000, "base"), layer(70, "app")], True)
    monkeypatch.setenv("FAKE_SAVE", str(save))
    store = LayerStore(str(tmp_path / "cache"), codec="zstd")
    store.ensure([image])
    a, b = image.diff_ids
    archive = store.assemble([image], {(a,)}, frozenset({a}))
    got = members(archive)
    assert f"blobs/sha256/{b[7:]}" in got and sha(got[f"blobs/sha256/{b[7:]}"]) == b
    assert f"blobs/sha256/{a[7:]}" not in got


@pytest.mark.parametrize(
    ("stdout", "blobs"),
    [
        ('["sha256:aa"]\n', None),
        ("store=containerd\n", frozenset()),
        (
            '["sha256:aa"]\nstore=containerd\nblob=sha256:aa\nblob=sha256:bb\nblob=junk\n',
            frozenset({"sha256:aa", "sha256:bb"}),
        ),
    ],
)
def test_host_blobs_parse(stdout: str, blobs: frozenset[str] | None) -> None:
    assert commands.parse_host_blobs(stdout) == blobs


def test_host_layers_asks_ctr_only_on_the_containerd_store() -> None:
    assert "ctr" not in commands.host_layers(["docker"])
    script = commands.host_layers(["docker"], containerd_store=True)
    assert "content ls -q" in script and "{{.Containerd.Address}}" in script


def test_a_corrupt_blob_is_caught_as_it_is_read_and_removed(
    filled: tuple[LayerStore, LocalImage],
) -> None:
    """Issue 19: the store is not trusted on read. A flipped byte in a stored blob fails the
    archive before its last bytes leave, and the entry is gone (the next fill stores it)."""
    store, image = filled
    blob = store.blob(image.diff_ids[0])
    assert blob is not None
    data = bytearray(Path(blob.path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(blob.path).write_bytes(bytes(data))
    archive = store.assemble([image])
    with pytest.raises(LocalError, match="corrupt"):
        b"".join(archive.chunks())
    assert store.blob(image.diff_ids[0]) is None and not store.has(image)
    assert not Path(blob.path).exists()


def test_a_corrupt_config_is_caught_and_removed(filled: tuple[LayerStore, LocalImage]) -> None:
    store, image = filled
    Path(store.config_path(image.id)).write_bytes(b'{"os":"linux"}')
    with pytest.raises(LocalError, match="corrupt"):
        store.assemble([image])
    assert not store.has(image)


def test_resumed_reads_still_check_the_whole_blob(filled: tuple[LayerStore, LocalImage]) -> None:
    store, image = filled
    archive = store.assemble([image])
    whole = b"".join(archive.chunks())
    for offset in (0, 1, 700, len(whole) - 1):
        assert b"".join(archive.chunks(offset)) == whole[offset:]
