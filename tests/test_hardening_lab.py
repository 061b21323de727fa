"""Issue 19 against real hosts (sshd + dockerd lab): a host that floods its output, a command
whose data never pauses, ProxyCommand to a real sshd, and two runs at once against one host."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from distrib import commands, transport
from distrib.errors import HostError
from distrib.inventory import Inventory
from distrib.plan import make_plan
from distrib.playbook import Playbook
from tests.conftest import Lab, distrib

pytestmark = pytest.mark.lab


def target_of(lab: Lab, host: str = "node1") -> transport.Target:
    inventory = Inventory.load([str(lab.inventory)])
    plan = make_plan(inventory, Playbook.from_text(f"- hosts: {host}\n  images: [demo/web:1.0]\n"))
    return plan.hosts[0].target


def test_a_flooding_host_is_stopped_at_the_output_cap(lab: Lab) -> None:
    session = transport.connect(dataclasses.replace(target_of(lab), max_output=1_000_000))
    try:
        started = time.monotonic()
        with pytest.raises(HostError) as info:
            session.run("yes", timeout=120)
        assert time.monotonic() - started < 15
        assert str(info.value).startswith(
            "remote command sent more than 1,000,000 bytes of output, stopped: yes"
        )
        assert "max_command_output" in str(info.value)
        assert session.run("echo still usable", timeout=30).stdout == "still usable\n"
    finally:
        session.close()


def test_the_deadline_holds_while_data_keeps_arriving(lab: Lab) -> None:
    session = transport.connect(target_of(lab))
    received = [0]

    def discard(block: bytes) -> None:
        received[0] += len(block)

    try:
        started = time.monotonic()
        with pytest.raises(HostError, match=r"remote command timed out after 2s: cat /dev/zero"):
            session.download("cat /dev/zero", discard, timeout=2)
        assert time.monotonic() - started < 10
        assert received[0] > 1_000_000  # data was flowing the whole time
    finally:
        session.close()


RELAY = (
    "import os, socket, threading; s = socket.create_connection(('{address}', {port})); "
    "threading.Thread(target=lambda: [s.sendall(b) for b in iter(lambda: os.read(0, 65536), b'')],"
    " daemon=True).start(); [os.write(1, b) for b in iter(lambda: s.recv(65536), b'')]"
)


def test_proxy_command_reaches_a_real_host(lab: Lab, tmp_path: Path) -> None:
    real = target_of(lab)
    config = tmp_path / "ssh_config"
    relay = f'{sys.executable} -c "{RELAY.format(address=real.address, port=real.port)}"'
    # `far` resolves nowhere: the session can only come through the ProxyCommand
    config.write_text(f"Host far\n  HostName nowhere.invalid\n  ProxyCommand {relay}\n")
    # its host key is recorded under that name: a first contact, accepted into a new file
    far = dataclasses.replace(real, address="far", ssh_config=str(config),
                              host_key_checking="accept-new",
                              known_hosts=str(tmp_path / "known_hosts"))  # fmt: skip
    session = transport.connect(far)
    try:
        assert session.run("hostname", timeout=30).ok
    finally:
        session.close()


PLAY = "- hosts: node1,node2\n  images: [demo/web:1.0, demo/worker:1.0]\n"


def waiting() -> int:
    """Deploys waiting for a host lock: their `flock -w 1800` (lab hosts share the machine's
    process table, so this counts every host's)."""
    out = subprocess.run(["pgrep", "-c", "-f", "^flock -w 1800 "], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


@pytest.mark.parametrize("delta", ["auto"])  # the layer store: steps and stand-ins
def test_two_runs_at_once_against_the_same_hosts_both_succeed(
    lab: Lab, tmp_path: Path, delta: str
) -> None:
    """Issue 19 item 8: they shared the staging dir and the delta's stand-in images (one run's
    cleanup broke the other's load: "mv: cannot stat ...part", "delta refused"); now a
    host-side lock lets one deploy while the other waits, then finds the images there. The
    test holds the lock itself first, so that both runs surely overlap."""
    lab.remove_images("demo/web:1.0", "demo/worker:1.0")
    book = tmp_path / "play.yml"
    book.write_text(PLAY + f"  delta: '{delta}'\n")
    holders = [transport.connect(target_of(lab, h)) for h in ("node1", "node2")]
    releases = []
    for session in holders:
        line, release = session.hold(commands.host_lock("/var/tmp", 60), timeout=60)
        assert line == commands.LOCKED
        releases.append(release)
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    def one(index: int) -> None:
        results[index] = distrib("run", str(book), "-i", str(lab.inventory), "--json")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        # both runs connected and waiting on each host (their flock waits up to 1800 s)
        deadline = time.monotonic() + 180
        while waiting() < 4:
            assert time.monotonic() < deadline, "the runs never waited for the lock"
            assert not results, results  # a run that ended while the lock was held
            time.sleep(0.5)
        time.sleep(1)
    finally:
        for release in releases:
            release()
        for session in holders:
            session.close()
    for thread in threads:
        thread.join(600)
    statuses: dict[str, list[str]] = {"node1": [], "node2": []}
    for proc in results.values():
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
        hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
        for name, host in hosts.items():
            statuses[name].append(host["status"])
            assert "for another distrib run on this host" in host["message"], host["message"]
            assert host["timings"]["lock"] >= 1
    # on each host one run deployed, the other waited for it and found the images there
    assert {name: sorted(s) for name, s in statuses.items()} == {
        "node1": ["changed", "ok"],
        "node2": ["changed", "ok"],
    }
    for host in ("node1", "node2"):
        assert lab.image_id(host, "demo/web:1.0") and lab.image_id(host, "demo/worker:1.0")
        assert lab.temp_files(host) == []
        dangling = lab.exec(host, "docker", "images", "-q", "--filter", "dangling=true")
        assert dangling.stdout.strip() == "", "a stand-in image was left behind"


EVIL_DOCKER = """#!/bin/sh
# a compromised host: its `docker save` of the committed image also tags it as demo/worker:1.0
if [ "$1" = save ]; then
    shift; [ "$1" = -- ] && shift
    docker tag "$1" demo/worker:1.0 && exec docker save "$1" demo/worker:1.0
fi
exec docker "$@"
"""


def test_a_commit_host_cannot_retag_workstation_images(lab: Lab, tmp_path: Path) -> None:
    """Issue 19 item 1: the commit step's stream is checked before the workstation's docker
    loads it. A host whose save also names demo/worker:1.0 is refused; the workstation's
    demo/worker:1.0 keeps its content and the committed image is not loaded either."""
    ship = tmp_path / "ship.yaml"
    ship.write_text("- hosts: node1\n  images: [demo/web:1.0, demo/worker:1.0]\n")
    distrib("run", str(ship), "-i", str(lab.inventory), check=True)
    worker_before = local_image_id("demo/worker:1.0")
    image = f"demo/evil-commit:{int(time.time())}"
    lab.exec("node1", "docker", "rm", "-f", "evilweb", check=False)
    lab.exec("node1", "docker", "run", "-d", "--name", "evilweb", "demo/web:1.0", "sleep", "600")
    lab.exec("node1", "sh", "-c", f"cat > /tmp/evil-docker <<'EOF'\n{EVIL_DOCKER}EOF\n"
             "chmod 755 /tmp/evil-docker")  # fmt: skip
    inv = lab.inventory_with(tmp_path, host_vars={"node1": {"docker_command": "/tmp/evil-docker"}})
    book = tmp_path / "snapshot.yaml"
    book.write_text(
        f"- hosts: node2\n  commit: {{host: node1, container: evilweb, image: {image}}}\n"
    )
    try:
        proc = distrib("run", str(book), "-i", str(inv))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"the fetched archive for {image} names" in proc.stderr, proc.stderr
        assert "demo/worker:1.0" in proc.stderr and "nothing loaded" in proc.stderr
        assert local_image_id("demo/worker:1.0") == worker_before
        assert local_image_id(image) is None
    finally:
        lab.exec("node1", "docker", "rm", "-f", "evilweb", check=False)
        lab.exec("node1", "docker", "rmi", image, check=False)
        lab.exec("node1", "docker", "tag", worker_before or "demo/worker:1.0", "demo/worker:1.0",
                 check=False)  # fmt: skip
        lab.exec("node1", "rm", "-f", "/tmp/evil-docker", check=False)


def local_image_id(ref: str) -> str | None:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip() if out.returncode == 0 else None
