"""Keeping hosts tidy on real engines (issue 18, item 4): keep N after a rollout, `prune
--check` then prune, rollback, and the containerd pin label. Its own lab instance (9, or
$DISTRIB_TIDY_LAB_INSTANCE) with one docker, one podman and one containerd host; what landed
is checked inside each host with the engine's own CLI, never through distrib."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from distrib import local
from distrib.lab import config, core, testing
from distrib.lab.state import LabState
from tests.conftest import distrib, local_id

pytestmark = pytest.mark.lab

REPO = "tidytest/app"
HOSTS = {"node1": "docker", "node2": "podman", "node3": "containerd"}
STORED = {"docker": REPO, "podman": f"localhost/{REPO}", "containerd": f"docker.io/{REPO}"}


def _instance() -> int:
    return config.check_instance(int(os.environ.get("DISTRIB_TIDY_LAB_INSTANCE", "9")))


@pytest.fixture(scope="module")
def tidy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = testing.unavailable_reason()
    if reason:
        if os.environ.get("DISTRIB_REQUIRE_LAB") == "1":
            pytest.fail(f"lab required but unavailable: {reason}")
        pytest.skip(reason)
    inventory = tmp_path_factory.mktemp("tidy") / "inventory.yaml"
    global STATE
    STATE = core.up(3, kinds=",".join(HOSTS.values()), instance=_instance(), inventory=inventory)
    try:
        distrib("lab", "images", check=True)  # the busybox base the test images build on
        context = tmp_path_factory.mktemp("tidy-images")
        for version in ("1", "2", "3"):  # built in order: each is more recent than the last
            (context / "version").write_text(version)
            (context / "Dockerfile").write_text("FROM distrib/busybox:latest\nCOPY version /\n")
            subprocess.run(
                ["docker", "build", "-q", "-t", f"{REPO}:{version}", str(context)],
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
                check=True,
                capture_output=True,
            )
        yield inventory
    finally:
        core.down(instance=_instance())


STATE: LabState | None = None


def _on(host: str, *argv: str) -> str:
    """Run a command on a lab host over the lab's ssh (quicker than `distrib lab exec`)."""
    assert STATE is not None
    return local.run(core.ssh_argv(STATE, host, [shlex.join(argv)]), timeout=120).stdout


def _tags(host: str) -> dict[str, str]:
    """tag -> image (ID, or the target digest on containerd) of REPO on `host`."""
    kind = HOSTS[host]
    if kind == "containerd":
        lines = _on(host, "ctr", "-n", "k8s.io", "images", "ls").splitlines()[1:]
        rows = [line.split() for line in lines]
        prefix = f"{STORED[kind]}:"
        return {r[0][len(prefix) :]: r[2] for r in rows if r[0].startswith(prefix)}
    fmt = "{{.Tag}} {{.ID}}"
    listed = _on(host, kind, "images", "--no-trunc", "--format", fmt, STORED[kind])
    return {t: i.removeprefix("sha256:") for t, i in (line.split() for line in listed.splitlines())}


def _run(inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return distrib(*args, "-i", str(inventory), "--json")


def test_keep_prune_rollback_and_pin(tidy_lab: Path) -> None:
    inv = tidy_lab
    assert _run(inv, "push", f"{REPO}:1", f"{REPO}:2").returncode == 0
    for host, kind in HOSTS.items():  # a stopped container uses :1 on every host
        if kind == "containerd":
            _on(host, "ctr", "-n", "k8s.io", "containers", "create", f"{STORED[kind]}:1", "tidy1")
        else:
            _on(host, kind, "create", "--name", "tidy1", f"{STORED[kind]}:1", "true")

    # keep 1 after a verified rollout: :2 goes, :1 stays (a container uses it), :3 shipped
    proc = _run(inv, "push", f"{REPO}:3", "--keep", "1")
    assert proc.returncode == 0, proc.stderr
    for host in HOSTS:
        assert sorted(_tags(host)) == ["1", "3"], host
        status = json.loads(proc.stdout)["plays"][0]["hosts"][host]
        assert status["status"] == "changed" and "removed" in status["message"], status
    pins = _on("node3", "ctr", "-n", "k8s.io", "images", "ls")  # every import is pinned
    assert all(
        "io.cri-containerd.pinned=pinned" in line for line in pins.splitlines() if REPO in line
    ), pins

    # prune --check lists and removes nothing; prune removes
    assert _run(inv, "push", f"{REPO}:2").returncode == 0
    check = _run(inv, "prune", REPO, "--keep", "1", "--check")
    assert check.returncode == 0, check.stderr
    would = json.loads(check.stdout)["would_remove"]
    assert would == {h: [f"{STORED[k]}:2"] for h, k in HOSTS.items()}
    assert all(sorted(_tags(h)) == ["1", "2", "3"] for h in HOSTS)
    pruned = _run(inv, "prune", REPO, "--keep", "1")
    assert pruned.returncode == 0, pruned.stderr
    before = {h: _tags(h) for h in HOSTS}
    assert all(sorted(tags) == ["1", "3"] for tags in before.values())
    assert before["node1"]["3"] == local_id(f"{REPO}:3").removeprefix("sha256:")

    # rollback: :3 -> the most recent older tag (:1), verified; again -> back to :3's image
    back = _run(inv, "rollback", f"{REPO}:3")
    assert back.returncode == 0, back.stderr
    for host in HOSTS:
        now = _tags(host)
        assert now["3"] == before[host]["1"] and now["distrib-prev-3"] == before[host]["3"]
    forward = _run(inv, "rollback", f"{REPO}:3", "-l", "node3")
    assert forward.returncode == 0, forward.stderr
    assert _tags("node3")["3"] == before["node3"]["3"]

    # a rollout with keep that replaces :3's image records it as distrib-prev-3 first
    again = _run(inv, "push", f"{REPO}:3", "--keep", "2", "-l", "node1:node2")
    assert again.returncode == 0, again.stderr
    for host in ("node1", "node2"):
        now = _tags(host)
        assert now["3"] == before[host]["3"] and now["distrib-prev-3"] == before[host]["1"]
