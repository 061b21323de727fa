"""Sources on the lab (issue 18, item 2): the workstation pulls from a real registry (Debian's
docker-registry on a lab host) before shipping.

The "workstation engine" of the pull test is node3's dockerd (DISTRIB_LOCAL_DOCKER): it sits on
the lab subnet and accepts the lab's plain-HTTP registry (`lab up --insecure-registry`), which
the system's dockerd must not be reconfigured for. Outcomes are checked with docker itself.
"""

from __future__ import annotations

import json
import os
import subprocess
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
