"""Layer store + delta on the lab (issue 8): a new release that adds a thin layer over a large
base is sent to each host as little more than that layer, measured on the wire from each
host's link counters (the root-side veth's tx_bytes), not only from distrib's own report."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Lab, distrib, local_id

pytestmark = pytest.mark.lab

V1 = "demo/big:1.0"
V2 = "demo/big:2.0"
BASE = "distrib/busybox:latest"



@pytest.fixture(scope="module")
def releases(lab: Lab) -> Iterator[None]:
    """v1: the lab's ~500 MB image of real files; v2: v1 plus a ~5 MB layer of real files."""
    distrib("lab", "images", "--bench", check=True)
    with tempfile.TemporaryDirectory() as ctx:
        src = Path("/usr/lib/python3")
        if not src.exists():
            src = Path(os.__file__).parent
        subprocess.run(
            ["sh", "-c", f"tar -C {src} -cf - . 2>/dev/null | head -c 5000000 > {ctx}/payload.tar"],
            check=True,
        )
        Path(ctx, "Dockerfile").write_text(f"FROM {V1}\nCOPY payload.tar /opt/release-2/\n")
        subprocess.run(
            ["docker", "build", "-q", "-t", V2, ctx],
            check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
    yield


def tx_bytes(lab: Lab, host: str) -> int:
    veth = lab.state().host(host).veth_root
    return int(Path(f"/sys/class/net/{veth}/statistics/tx_bytes").read_text())


def run(lab: Lab, tmp_path: Path, image: str, limit: str, codec: str = "gzip") -> tuple[dict, dict[str, int]]:  # type: ignore[type-arg]
    book = tmp_path / f"play-{image.replace('/', '_').replace(':', '_')}-{limit}-{codec}.yaml"
    book.write_text(f"- hosts: lab\n  images: [{image}]\n  compression: {codec}\n")
    before = {h: tx_bytes(lab, h) for h in lab.hosts}
    proc = distrib("run", str(book), "-i", str(lab.inventory), "--limit", limit, "--json")
    assert proc.returncode == 0, proc.stderr
    wire = {h: tx_bytes(lab, h) - before[h] for h in lab.hosts}
    return json.loads(proc.stdout)["plays"][0]["hosts"], wire


def test_v2_sends_little_more_than_the_new_layer(lab: Lab, releases: None, tmp_path: Path) -> None:
    lab.remove_images(V1, V2, BASE)
    hosts, _ = run(lab, tmp_path, V1, "node1:node2")
    assert all(hosts[h]["status"] == "changed" for h in ("node1", "node2"))
    # node3 holds only the busybox base, i.e. some of v1's base layers
    pushed = distrib("run", str(_play(tmp_path, BASE)), "-i", str(lab.inventory), "--limit", "node3")
    assert pushed.returncode == 0, pushed.stderr
    store_blob = _new_layer_blob_size()
    hosts, wire = run(lab, tmp_path, V2, "all")
    total = hosts["node1"]["layers_total"]
    for h in ("node1", "node2"):
        assert hosts[h]["status"] == "changed" and hosts[h]["layers_sent"] == 1
        budget = 1.1 * store_blob + 64 * 1024 + 200 * 1024  # + SSH and TCP framing, checks
        assert wire[h] <= budget, f"{h}: {wire[h]} bytes on the wire, budget {budget:.0f}"
    assert hosts["node3"]["layers_sent"] == total - 1, "all but the base layer it had"
    assert wire["node3"] > 50 * wire["node1"]
    for h in lab.hosts:
        assert lab.image_id(h, V2) == local_id(V2), h


def test_host_without_v1_gets_everything(lab: Lab, releases: None, tmp_path: Path) -> None:
    lab.remove_images(V1, V2, BASE)
    lab.exec("node1", "docker", "image", "prune", "-af", check=False)
    hosts, wire = run(lab, tmp_path, V2, "node1")
    assert hosts["node1"]["layers_sent"] == hosts["node1"]["layers_total"] > 1
    assert lab.image_id("node1", V2) == local_id(V2)
    assert wire["node1"] >= hosts["node1"]["bytes_sent"]
    # loaded in steps (one per >= 16 MiB of layers) while the rest was on the wire; the
    # steps' untagged stand-in images are gone, nothing dangles, nothing staged is left
    assert "loaded in 4 steps" in hosts["node1"]["message"], hosts["node1"]["message"]
    dangling = lab.exec("node1", "docker", "images", "-q", "--filter", "dangling=true").stdout
    assert dangling.split() == [], "no stand-in or other untagged image left"
    assert lab.temp_files("node1") == []


def test_zstd_plays_send_deltas_and_steps_too(lab: Lab, releases: None, tmp_path: Path) -> None:
    """A zstd play uses the layer store too: zstd blobs, one zstd stream per step (docker
    20.10 reads it through `zstd -dc`), only the missing layers on the wire."""
    lab.remove_images(V1, V2, BASE)
    lab.exec("node2", "docker", "image", "prune", "-af", check=False)
    hosts, _ = run(lab, tmp_path, V1, "node2", codec="zstd")
    assert hosts["node2"]["status"] == "changed" and "loaded in 3 steps" in hosts["node2"]["message"]
    assert lab.image_id("node2", V1) == local_id(V1)
    hosts, wire = run(lab, tmp_path, V2, "node2", codec="zstd")
    assert hosts["node2"]["layers_sent"] == 1, hosts["node2"]
    budget = 1.1 * _new_layer_blob_size("zstd") + 64 * 1024 + 200 * 1024
    assert wire["node2"] <= budget, f"{wire['node2']} bytes on the wire, budget {budget:.0f}"
    assert lab.image_id("node2", V2) == local_id(V2)
    dangling = lab.exec("node2", "docker", "images", "-q", "--filter", "dangling=true").stdout
    assert dangling.split() == [] and lab.temp_files("node2") == []


def test_check_mode_shows_delta_and_full_sizes(lab: Lab, releases: None, tmp_path: Path) -> None:
    lab.remove_images(V2)
    run(lab, tmp_path, V1, "node2")
    proc = distrib("run", str(_play(tmp_path, V2)), "-i", str(lab.inventory), "--limit", "node2", "--check")
    assert proc.returncode == 0, proc.stderr
    assert "would send 1 of" in proc.stdout and "full archive:" in proc.stdout
    assert lab.image_id("node2", V2) is None


def test_delta_off_sends_the_whole_archive(lab: Lab, releases: None, tmp_path: Path) -> None:
    lab.remove_images(V2)
    run(lab, tmp_path, V1, "node2")
    book = tmp_path / "off.yaml"
    book.write_text(f"- hosts: lab\n  images: [{V2}]\n  delta: 'off'\n")
    proc = distrib("run", str(book), "-i", str(lab.inventory), "--limit", "node2", "--json")
    node2 = json.loads(proc.stdout)["plays"][0]["hosts"]["node2"]
    assert proc.returncode == 0 and node2["layers_total"] == 0
    assert node2["bytes_sent"] > 100_000_000


def _play(tmp_path: Path, image: str) -> Path:
    book = tmp_path / f"p-{image.replace('/', '_').replace(':', '_')}.yaml"
    book.write_text(f"- hosts: lab\n  images: [{image}]\n")
    return book


def _new_layer_blob_size(codec: str = "gzip") -> int:
    """Compressed size of v2's top layer, as the layer store holds it."""
    from distrib.archive import inspect_local
    from distrib.layerstore import LayerStore
    from distrib.refs import ImageRef

    found, _ = inspect_local([ImageRef.parse(V2)])
    image = found[ImageRef.parse(V2)]
    store = LayerStore(codec=codec)
    store.ensure([image])
    blob = store.blob(image.diff_ids[-1])
    assert blob is not None
    return blob.size
