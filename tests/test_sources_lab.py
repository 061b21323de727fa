"""Sources and platforms on the lab (issue 18, items 2 and 3): the workstation pulls from a
real registry (Debian's docker-registry on a lab host) before shipping; an image whose config
names another architecture is refused before a byte is sent.

The "workstation engine" of the pull test is node3's dockerd (DISTRIB_LOCAL_DOCKER): it sits on
the lab subnet and accepts the lab's plain-HTTP registry (`lab up --insecure-registry`), which
the system's dockerd must not be reconfigured for. Outcomes are checked with docker itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Lab, distrib, local_id

pytestmark = pytest.mark.lab

WEB = "demo/web:1.0"


def docker(*argv: str, host: str | None = None, **kw: object) -> subprocess.CompletedProcess[bytes]:
    cmd = ["docker", *(["-H", host] if host else []), *argv]
    return subprocess.run(cmd, capture_output=True, check=True, **kw)  # type: ignore[call-overload]


def test_local_pull_missing_from_the_lab_registry(lab: Lab, tmp_path: Path) -> None:
    distrib("lab", "registry", "up", "--host", "node1", "--port", "5001", check=True)
    endpoint = f"{lab.state().host('node1').address}:5001"
    ref = f"{endpoint}/demo/web:pulled"
    ws = lab.state().host("node3").docker_host
    try:
        # the registry gets demo/web through node3's engine, which then forgets the tag
        docker("load", host=ws, input=docker("save", WEB).stdout)
        docker("tag", WEB, ref, host=ws)
        docker("push", ref, host=ws)
        docker("rmi", ref, host=ws)
        (tmp_path / "images.txt").write_text(f"# release\n{ref}\n")
        book = tmp_path / "site.yaml"
        book.write_text(
            "- hosts: node2\n  images_from: images.txt\n"
            "  local_pull: missing\n  platform: linux/amd64\n"
        )
        env = {**os.environ, "DISTRIB_LOCAL_DOCKER": f"docker -H {ws}"}
        proc = distrib("run", str(book), "-i", str(lab.inventory), "--json", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"pulling {ref} (linux/amd64) on this workstation" in proc.stderr
        node2 = json.loads(proc.stdout)["plays"][0]["hosts"]["node2"]
        assert node2["status"] == "changed", node2
        # pulled into the workstation engine, then shipped: the same content everywhere
        pulled = docker("image", "inspect", "--format", "{{.Id}}", ref, host=ws).stdout.decode()
        assert pulled.strip() == local_id(WEB) == lab.image_id("node2", ref)
    finally:
        lab.exec("node2", "docker", "rmi", ref, check=False)
        subprocess.run(["docker", "-H", ws, "rmi", ref], capture_output=True, check=False)
        distrib("lab", "registry", "down", check=True)


def _retarget(saved: bytes, tag: str, architecture: str) -> bytes:
    """`docker save` output re-tagged, its config saying another architecture (a new config,
    so a new image ID); written as a classic docker-archive that every docker loads."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(saved)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        manifest = json.load(src.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(src.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        config["architecture"] = architecture
        config.pop("variant", None)
        blob = json.dumps(config).encode()
        name = hashlib.sha256(blob).hexdigest() + ".json"
        manifest = [{"Config": name, "RepoTags": [tag], "Layers": manifest[0]["Layers"]}]
        for member in src.getmembers():
            if member.name in ("manifest.json", "index.json", "oci-layout", "repositories"):
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for path, data in ((name, blob), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_an_image_for_another_architecture_is_refused_before_sending(
    lab: Lab, tmp_path: Path
) -> None:
    arm = "demo/web-arm64:1.0"
    docker("load", input=_retarget(docker("save", WEB).stdout, arm, "arm64"))
    try:
        seen = docker("image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", arm)
        assert seen.stdout.decode().strip() == "linux/arm64"
        lab.remove_images(arm)
        book = tmp_path / "site.yaml"
        book.write_text(f"- hosts: node1,node2\n  images: [{arm}]\n")
        proc = distrib("run", str(book), "-i", str(lab.inventory), "--json")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
        for name in ("node1", "node2"):
            assert hosts[name]["status"] == "failed"
            assert hosts[name]["message"] == (
                f"{arm} is linux/arm64, the host is linux/amd64; nothing was sent"
            )
            assert hosts[name]["bytes_sent"] == 0
            assert lab.image_id(name, arm) is None
            assert lab.temp_files(name) == []
    finally:
        subprocess.run(["docker", "rmi", arm], capture_output=True, check=False)
