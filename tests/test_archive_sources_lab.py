"""Image archives as sources on real hosts (issue 18, items 2 and 3). Its own lab instance (6, or
$DISTRIB_SOURCES_LAB_INSTANCE) with a docker 20.10 host (layer store deltas), a docker 28 host on
the containerd image store (OCI-layout deltas) and a podman host (a whole archive made from the
layer store). Archives are written here with tarfile as `docker save | zstd`, skopeo (OCI layout
directory, OCI archive) and a multi-platform OCI index with a crafted arm64 image; the real CLI
ships them; what landed is checked with each engine's own CLI over the lab's ssh, and the
workstation's docker is checked to have never loaded them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from distrib.lab import config, core, testing
from distrib.lab.state import LabState
from tests.archives import Image, compress, docker_archive, layer_tar, oci_archive, oci_layout, sha
from tests.conftest import distrib, local_id

pytestmark = pytest.mark.lab

HOSTS = {"node1": "docker-20.10", "node2": "docker-28-containerd", "node3": "podman"}
REPO = "arch/app"
BUSYBOX = Path("/bin/busybox").read_bytes() if Path("/bin/busybox").exists() else b"#!/bin/sh\n"
BASE = layer_tar({"bin/busybox": BUSYBOX, "etc/os-release": b"NAME=arch-test\n"})
STATE: LabState | None = None


def _instance() -> int:
    return config.check_instance(int(os.environ.get("DISTRIB_SOURCES_LAB_INSTANCE", "6")))


@pytest.fixture(scope="module")
def archive_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = testing.unavailable_reason()
    if reason:
        if os.environ.get("DISTRIB_REQUIRE_LAB") == "1":
            pytest.fail(f"lab required but unavailable: {reason}")
        pytest.skip(reason)
    inventory = tmp_path_factory.mktemp("archives") / "inventory.yaml"
    global STATE
    STATE = core.up(
        3,
        kinds=",".join(HOSTS.values()),
        instance=_instance(),
        inventory=inventory,
        insecure_registries=[str(config.subnet(_instance()))],  # the registry test's
    )
    try:
        yield inventory
    finally:
        core.down(instance=_instance())


def _on(host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    assert STATE is not None
    return subprocess.run(
        core.ssh_argv(STATE, host, [shlex.join(argv)]), capture_output=True, text=True, timeout=120
    )


def _landed(host: str, tag: str, name: str = "") -> tuple[str, list[str], str]:
    """(config digest or '' where the engine shows none, diffIDs, Cmd) of REPO:tag (or of
    `name`, a reference with a registry) on `host`."""
    kind = HOSTS[host]
    cli = "podman" if kind == "podman" else "docker"
    name = name or (f"localhost/{REPO}:{tag}" if kind == "podman" else f"{REPO}:{tag}")
    fmt = "{{.Id}}|{{json .RootFS.Layers}}|{{json .Config.Cmd}}"
    out = _on(host, cli, "image", "inspect", "--format", fmt, name)
    assert out.returncode == 0, (host, out.stderr)
    image_id, layers, cmd = out.stdout.strip().split("|")
    image_id = "sha256:" + image_id.removeprefix("sha256:")
    shown = "" if kind == "docker-28-containerd" else image_id  # a manifest digest there
    return shown, json.loads(layers), " ".join(json.loads(cmd))


def _expect(image: Image, tag: str, name: str = "") -> None:
    for host, kind in HOSTS.items():
        shown, layers, cmd = _landed(host, tag, name)
        assert layers == image.diff_ids and cmd == " ".join(image.cmd), host
        assert shown in ("", image.id), (host, kind, shown)


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return distrib(*args, env=env)


def _not_on_workstation(tag: str) -> None:
    seen = subprocess.run(
        ["docker", "image", "inspect", f"{REPO}:{tag}"], capture_output=True, check=False
    )
    assert seen.returncode != 0, f"{REPO}:{tag} was loaded into the workstation's docker"


def test_archives_ship_to_every_engine_without_the_workstation_engine(
    archive_lab: Path, tmp_path: Path
) -> None:
    inv = archive_lab
    cache = tmp_path / "cache"
    env = {**os.environ, "DISTRIB_CACHE_DIR": str(cache)}

    # 1. `docker save | zstd` of v1, pushed ad hoc: every host gets it, the workstation never
    v1 = Image([BASE, layer_tar({"app/v": b"1\n"})], cmd=["/bin/busybox", "echo", "v1"])
    v1.names = [f"{REPO}:1"]
    saved = compress(docker_archive(tmp_path / "v1.tar", [v1]), "zstd")
    proc = _run("push", "--images-from", str(saved), "-i", str(inv), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"{REPO}:1: from {saved} (docker-archive (tar.zst), linux/amd64;" in proc.stderr
    hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
    assert {h: r["status"] for h, r in hosts.items()} == dict.fromkeys(HOSTS, "changed")
    _expect(v1, "1")
    _not_on_workstation("1")
    again = _run("push", "--images-from", str(saved), "-i", str(inv), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert all(r["status"] == "ok" for r in json.loads(again.stdout)["plays"][0]["hosts"].values())

    # 2. v2 as skopeo writes an OCI layout directory (gzip layers), from a playbook: the
    #    docker hosts are sent only the new layer (the base is there)
    v2 = Image([BASE, layer_tar({"app/v": b"2\n"})], cmd=["/bin/busybox", "echo", "v2"])
    layout = oci_layout(tmp_path / "v2-layout", [v2], ref_name=f"{REPO}:2")
    book = tmp_path / "site.yaml"
    book.write_text(f"- hosts: all\n  images_from: {layout.name}\n")
    proc = _run("run", str(book), "-i", str(inv), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
    assert "(1/2 layers sent)" in hosts["node1"]["message"], hosts["node1"]
    assert hosts["node3"]["status"] == "changed", hosts["node3"]
    _expect(v2, "2")
    _not_on_workstation("2")

    # 3. a multi-platform OCI archive (amd64 and a crafted arm64 image): the amd64 hosts get
    #    the amd64 image under the tag; the arm64 layers are never even read into the store
    amd = Image([BASE, layer_tar({"app/v": b"3 amd64\n"})], cmd=["/bin/busybox", "echo", "amd64"])
    arm_layer = layer_tar({"app/v": b"3 arm64\n"})
    arm = Image([layer_tar({"bin/sh": b"arm"}), arm_layer], architecture="arm64", cmd=["arm"])
    multi = oci_layout(tmp_path / "v3-layout", [amd, arm], multi=f"{REPO}:3")
    tarred = compress(oci_archive(tmp_path / "v3.oci.tar", multi), "gzip")
    book.write_text(f"- hosts: all\n  images_from: [{tarred.name}]\n  compression: zstd\n")
    check = _run("run", str(book), "-i", str(inv), "--check", env=env)
    assert check.returncode == 0, check.stderr
    assert "(OCI archive (tar.gz), linux/amd64, linux/arm64;" in check.stdout
    proc = _run("run", str(book), "-i", str(inv), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    _expect(amd, "3")
    blobs = cache / "layers" / "blobs"
    assert (blobs / f"{sha(amd.layers[1])[7:]}.zst").exists()
    assert not (blobs / f"{sha(arm_layer)[7:]}.zst").exists()

    # 4. a truncated archive: a config error naming the file; no host is contacted
    broken = tmp_path / "broken.tar.zst"
    broken.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    proc = _run("push", "--images-from", str(broken), "-i", str(inv), env=env)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert f"{broken}: truncated or corrupt image archive" in proc.stderr
    assert "PLAY" not in proc.stdout  # nothing ran


def test_an_unnamed_archive_is_named_by_the_play(archive_lab: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DISTRIB_CACHE_DIR": str(tmp_path / "cache")}
    app = Image([BASE, layer_tar({"app/v": b"4\n"})], cmd=["/bin/busybox", "echo", "v4"])
    path = oci_archive(tmp_path / "v4.tar", oci_layout(tmp_path / "v4", [app], ref_name="4"))
    plain = _run("push", "--images-from", str(path), "-i", str(archive_lab), env=env)
    assert plain.returncode == 5 and "holds an image with no name" in plain.stderr
    proc = _run(
        "push", "--images-from", str(path), "--archive-name", f"{REPO}:4", "-l", "node1",
        "-i", str(archive_lab), "--compression", "xz", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shown, layers, _ = _landed("node1", "4")
    assert (shown, layers) == (app.id, app.diff_ids)
    _not_on_workstation("4")
    # only when asked: local_load also loads it into the workstation's docker, named
    try:
        asked = _run(
            "push", "--images-from", str(path), "--archive-name", f"{REPO}:4", "-l", "node1",
            "-i", str(archive_lab), "--local-load", env=env,
        )  # fmt: skip
        assert asked.returncode == 0, asked.stderr
        assert f"loading {REPO}:4 into the local docker (local_load)" in asked.stdout
        assert "ok: [node1]" in asked.stdout  # already there: nothing sent
        assert local_id(f"{REPO}:4") == app.id
    finally:
        subprocess.run(["docker", "rmi", f"{REPO}:4"], capture_output=True, check=False)


def test_a_registry_index_pulls_each_platform_under_a_private_tag(
    archive_lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry's manifest list (amd64 and a crafted arm64 image) with local_pull: the
    amd64 hosts get the amd64 image; the pull of another platform (no lab host is arm64, and
    none is faked) is run for real against the index: private tag, the play's tag put back,
    saved into the layer store under the play's name."""
    from distrib import platformpull
    from distrib.archive import inspect_local
    from distrib.layerstore import LayerStore
    from distrib.platforms import Platform
    from distrib.refs import ImageRef

    assert STATE is not None
    up = ("lab", "registry", "up", "--host", "node1", "--port", "5001")
    distrib(*up, "--instance", str(_instance()), check=True)
    endpoint = f"{STATE.host('node1').address}:5001"
    ws = STATE.host("node1").docker_host  # node1's dockerd is the workstation engine here
    dk = ["docker", "-H", ws]
    repo = f"{endpoint}/arch/multi"
    amd = Image([BASE, layer_tar({"app/v": b"5 amd64\n"})], cmd=["/bin/busybox", "echo", "5"])
    arm = Image(
        [layer_tar({"bin/sh": b"arm"}), layer_tar({"app/v": b"5 arm64\n"})],
        architecture="arm64",
        cmd=["arm"],
    )
    try:
        manifests = []
        for image, tag in ((amd, "amd"), (arm, "arm")):
            image.names = [f"{repo}:{tag}"]
            data = docker_archive(tmp_path / f"{tag}.tar", [image]).read_bytes()
            subprocess.run([*dk, "load"], input=data, check=True, capture_output=True)
            pushed = subprocess.run(
                [*dk, "push", f"{repo}:{tag}"], check=True, capture_output=True, text=True
            ).stdout
            found = re.search(r"digest: (sha256:[0-9a-f]{64}) size: (\d+)", pushed)
            assert found, pushed
            manifests.append(
                {
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": found.group(1),
                    "size": int(found.group(2)),
                    "platform": {"os": "linux", "architecture": image.architecture},
                }
            )
            subprocess.run([*dk, "rmi", f"{repo}:{tag}"], check=True, capture_output=True)
        kind = "application/vnd.docker.distribution.manifest.list.v2+json"
        index = {"schemaVersion": 2, "mediaType": kind, "manifests": manifests}
        request = urllib.request.Request(
            f"http://{endpoint}/v2/arch/multi/manifests/1",
            data=json.dumps(index).encode(),
            method="PUT",
            headers={"Content-Type": kind},
        )
        urllib.request.urlopen(request, timeout=30).close()
        ref = f"{repo}:1"

        env = {
            **os.environ,
            "DISTRIB_LOCAL_DOCKER": f"docker -H {ws}",
            "DISTRIB_CACHE_DIR": str(tmp_path / "cache"),
        }
        book = tmp_path / "site.yaml"
        book.write_text(f"- hosts: all\n  images: [{ref}]\n  local_pull: missing\n")
        proc = distrib("run", str(book), "-i", str(archive_lab), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert f"pulling {ref} on this workstation" in proc.stderr
        assert "(linux/arm64)" not in proc.stderr  # every lab host is amd64
        _expect(amd, "", ref)

        monkeypatch.setenv("DISTRIB_LOCAL_DOCKER", f"docker -H {ws}")
        wanted = ImageRef.parse(ref)
        image = inspect_local([wanted])[0][wanted]
        assert image.id == amd.id
        arm64 = Platform("linux", "arm64")
        (pulled,) = platformpull.with_platforms((image,), [arm64], refresh=True)
        (alternate,) = pulled.alternates
        assert alternate.id == arm.id and alternate.ref == wanted
        assert alternate.save_as.startswith("distrib-platform/")
        assert inspect_local([wanted])[0][wanted].id == amd.id  # the play's tag put back
        assert platformpull.pull(image, Platform("linux", "s390x"), refresh=True) is None
        assert inspect_local([wanted])[0][wanted].id == amd.id
        store = LayerStore(str(tmp_path / "store"), codec="gzip")
        store.ensure([alternate])  # docker save of the private tag
        assert store.has(alternate)
        with tarfile.open(fileobj=io.BytesIO(b"".join(store.raw_archive([alternate])))) as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest[0]["RepoTags"] == [ref]  # never the private tag
    finally:
        distrib("lab", "registry", "down", "--instance", str(_instance()))


def test_a_real_docker_28_containerd_store_save_is_a_source(
    archive_lab: Path, tmp_path: Path
) -> None:
    """What docker 28 on the containerd image store writes (`docker save`: an OCI layout with
    its compressed blobs, a docker manifest, containerd's name annotation) ships to docker
    20.10 and podman as it is read: the engine's real output, not one built here."""
    env = {**os.environ, "DISTRIB_CACHE_DIR": str(tmp_path / "cache")}
    app = Image([BASE, layer_tar({"app/v": b"6\n"})], cmd=["/bin/busybox", "echo", "v6"])
    app.names = [f"{REPO}:6"]
    data = docker_archive(tmp_path / "v6.tar", [app]).read_bytes()
    assert STATE is not None
    loaded = subprocess.run(
        core.ssh_argv(STATE, "node2", ["docker load"]), input=data, capture_output=True
    )
    assert loaded.returncode == 0, loaded.stderr
    saved = subprocess.run(
        core.ssh_argv(STATE, "node2", [shlex.join(["docker", "save", f"{REPO}:6"])]),
        capture_output=True,
        check=True,
    ).stdout
    path = tmp_path / "saved-by-docker-28.tar"
    path.write_bytes(saved)
    proc = _run(
        "push", "--images-from", str(path), "-i", str(archive_lab), "-l", "node1:node3", env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{REPO}:6: from {path} (OCI archive (tar), linux/amd64;" in proc.stdout
    for host in ("node1", "node3"):
        shown, layers, cmd = _landed(host, "6")
        assert (shown, layers, cmd) == (app.id, app.diff_ids, "/bin/busybox echo v6"), host
