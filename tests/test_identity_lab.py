"""Identity is the config (issue 14) on real engines: two images with the very same layers and
another CMD. After v1 is rolled out as tag X and v2 is tagged X on the workstation, `verify`
must report the drift (exit 2, naming it) and `run` must ship v2, on docker 20.10 (classic
store: the image ID is the config digest) and on docker 28 with the containerd image store
(the image ID is a manifest digest; the config fingerprint decides). Checked independently
inside each host with its own docker client.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Lab, distrib

pytestmark = pytest.mark.lab

BASE = "distrib/busybox:latest"  # built by `lab images` (the session's lab fixture)
V1 = "distrib-t14/drift:v1"
V2 = "distrib-t14/drift:v2"
TAG = "distrib-t14/drift:current"
HOSTS = {"node1": "docker-20.10", "node2": "docker-28-containerd"}


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    ).stdout.strip()


@pytest.fixture(scope="module")
def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """node1 docker 20.10, node2 docker 28 on the containerd image store; v1 and v2 built."""
    inventory = tmp_path_factory.mktemp("identity") / "inventory.yaml"
    kinds = ",".join(HOSTS.values())
    distrib("lab", "up", "--hosts", "2", "--kinds", kinds, "--inventory", str(inventory),
            check=True)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as ctx:
            payload = Path(ctx, "payload.txt")
            payload.write_text("the same layer in both releases\n")
            os.utime(payload, (1_700_000_000, 1_700_000_000))
            for tag, word in ((V1, "one"), (V2, "two")):
                Path(ctx, "Dockerfile").write_text(
                    f'FROM {BASE}\nCOPY payload.txt /srv/\nCMD ["/bin/echo", "{word}"]\n'
                )
                _docker("build", "-q", "-t", tag, ctx)
        layers = [_docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", t) for t in (V1, V2)]  # fmt: skip
        assert layers[0] == layers[1], "v1 and v2 must share every layer"
        assert _docker("image", "inspect", "--format", "{{.Id}}", V1) != _docker(
            "image", "inspect", "--format", "{{.Id}}", V2
        )
        yield inventory
    finally:
        subprocess.run(["docker", "rmi", V1, V2, TAG], capture_output=True, check=False)
        lab.restore()


def _json(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = distrib(*args, "--json")
    try:
        return proc, json.loads(proc.stdout)["plays"][0]["hosts"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None  # fmt: skip


def _cmd_on(lab: Lab, host: str) -> str:
    """The CMD the host's own docker has under TAG."""
    out = lab.exec(host, "docker", "image", "inspect", "--format", "{{json .Config.Cmd}}", TAG)
    return out.stdout.strip()


@pytest.mark.parametrize("host", list(HOSTS), ids=list(HOSTS.values()))
def test_same_layers_other_cmd_is_drift_and_is_shipped(
    lab: Lab, fleet: Path, tmp_path: Path, host: str
) -> None:
    inv = str(fleet)
    book = tmp_path / "play.yaml"
    book.write_text(f"- hosts: lab\n  images: [{TAG}]\n")
    lab.exec(host, "docker", "rmi", "-f", TAG, check=False)
    _docker("tag", V1, TAG)
    first, hosts = _json("run", str(book), "-i", inv, "--limit", host)
    assert first.returncode == 0, first.stderr
    assert hosts[host]["status"] == "changed", hosts[host]
    assert _cmd_on(lab, host) == '["/bin/echo","one"]'
    store = "containerd" if HOSTS[host].endswith("containerd") else "classic"
    assert hosts[host]["engine"]["name"] == "docker"
    assert hosts[host]["engine"]["store"] == store
    if store == "containerd":
        assert "containerd store)" in first.stderr, first.stderr
    clean, hosts = _json("verify", TAG, "-i", inv, "--limit", host)
    assert clean.returncode == 0, clean.stderr
    assert hosts[host]["states"] == {TAG: "present"}

    _docker("tag", V2, TAG)  # a new release under the same tag: only the CMD changed
    drift, hosts = _json("verify", TAG, "-i", inv, "--limit", host)
    assert drift.returncode == 2, drift.stderr
    assert hosts[host]["states"] == {TAG: "different"}
    assert hosts[host]["message"] == f"drift: {TAG} different config"
    assert f"drift: {TAG} different config" in drift.stderr
    assert _cmd_on(lab, host) == '["/bin/echo","one"]', "verify only reads"

    shipped, hosts = _json("run", str(book), "-i", inv, "--limit", host)
    assert shipped.returncode == 0, shipped.stderr
    assert hosts[host]["status"] == "changed", hosts[host]
    assert hosts[host]["states"] == {TAG: "present"}
    assert _cmd_on(lab, host) == '["/bin/echo","two"]'
    again, hosts = _json("verify", TAG, "-i", inv, "--limit", host)
    assert again.returncode == 0, again.stderr
    assert hosts[host]["states"] == {TAG: "present"}
