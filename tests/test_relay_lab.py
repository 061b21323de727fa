"""Relay fan-out on the lab (issue 9): real sshd + dockerd hosts that hold no keys of their own,
the workstation's uplink shaped (tc tbf on the lab bridge), host<->host fast.

After every scenario (success, a relay killed mid-stream, SIGINT) every host's authorized_keys
is exactly what it was, and no staging dir, key or fifo is left anywhere.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distrib.lab import config as lab_config
from tests.conftest import ROOT, Lab, distrib

pytestmark = pytest.mark.lab

IMAGE = "demo/big:1.0"  # ~500 MB of real files (distrib lab images --bench)


def book(tmp_path: Path, width: int, name: str = "book.yaml", codec: str = "gzip") -> Path:
    path = tmp_path / name
    path.write_text(
        f"- name: relay\n  hosts: lab\n  images: [{IMAGE}]\n  compression: {codec}\n"
        f"  fanout: relay\n  relay_width: {width}\n"
    )
    return path


@pytest.fixture(scope="module")
def relay_lab(lab: Lab) -> Iterator[Lab]:
    have = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    if have.returncode != 0:
        distrib("lab", "images", "--bench", check=True, timeout=1800)
    originals = {h: authorized_keys(lab, h) for h in lab.hosts}
    assert all(originals.values())
    yield lab
    for host in lab.hosts:  # the module leaves the hosts as it found them
        assert authorized_keys(lab, host) == originals[host]


def authorized_keys(lab: Lab, host: str) -> str:
    return lab.exec(host, "cat", "/root/.ssh/authorized_keys").stdout


def leftovers(lab: Lab, host: str) -> list[str]:
    out = lab.exec(
        host, "sh", "-c",
        "ls -A /root/.ssh; ls -A /var/tmp /tmp | grep -v '^/' | grep . || true",
    )  # fmt: skip
    return [line for line in out.stdout.split() if line not in ("authorized_keys",)]


def assert_clean(lab: Lab, originals: dict[str, str]) -> None:
    for host in lab.hosts:
        assert authorized_keys(lab, host) == originals[host], f"{host}: authorized_keys changed"
        assert "distrib-relay" not in authorized_keys(lab, host)
        assert leftovers(lab, host) == [], f"{host}: files left behind"


def tx_bytes(lab: Lab) -> int:
    bridge = lab.state().bridge
    return int(Path(f"/sys/class/net/{bridge}/statistics/tx_bytes").read_text())


class Shaped:
    def __init__(self, lab: Lab, rate: str) -> None:
        self.bridge = lab.state().bridge
        self.rate = rate

    def __enter__(self) -> Shaped:
        subprocess.run(["tc", *lab_config.tbf_args(self.bridge, self.rate)], check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", self.bridge, "root"], check=False)


def grouped_inventory(lab: Lab, tmp_path: Path) -> Path:
    return lab.inventory_with(tmp_path, extra_vars={"relay_group": "site1"})


def run_json(*args: str, timeout: float = 900) -> tuple[int, dict[str, Any], str]:
    proc = distrib("run", *args, "--json", "-v", timeout=timeout)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def part_bytes(lab: Lab, host: str) -> int:
    out = lab.exec(
        host, "sh", "-c", "cat /var/tmp/distrib.*/*.part 2>/dev/null | wc -c", check=False
    )
    return int(out.stdout.strip() or 0)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_relay_check_draws_the_tree(relay_lab: Lab, tmp_path: Path) -> None:
    relay_lab.remove_images(IMAGE)
    inventory = grouped_inventory(relay_lab, tmp_path)
    proc = distrib("run", str(book(tmp_path, 1)), "-i", str(inventory), "--check")
    assert proc.returncode == 0, proc.stderr
    assert (
        "workstation\n└── node1 (changed)\n    └── node2 (changed)\n        └── node3 (changed)"
        in (proc.stdout)
    )


@pytest.mark.parametrize("codec", ["gzip", "zstd"])  # both come from the layer store
def test_relay_uplink_carries_one_copy_all_verified_nothing_left(
    relay_lab: Lab, tmp_path: Path, codec: str
) -> None:
    lab = relay_lab
    originals = {h: authorized_keys(lab, h) for h in lab.hosts}
    lab.remove_images(IMAGE)
    inventory = grouped_inventory(lab, tmp_path)
    with Shaped(lab, "200mbit"):
        before = tx_bytes(lab)
        code, doc, err = run_json(str(book(tmp_path, 2, codec=codec)), "-i", str(inventory))
        sent_on_wire = tx_bytes(lab) - before
    assert code == 0, err
    hosts = doc["plays"][0]["hosts"]
    assert {h: r["status"] for h, r in hosts.items()} == dict.fromkeys(lab.hosts, "changed")
    assert [hosts[h]["fed_by"] for h in lab.hosts] == ["workstation", "node1", "node1"]
    payload = hosts["node1"]["bytes_sent"]
    assert (
        payload > 50_000_000 and hosts["node2"]["bytes_sent"] == hosts["node3"]["bytes_sent"] == 0
    )
    assert hosts["node2"]["bytes_relayed"] == hosts["node3"]["bytes_relayed"] == payload
    local = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", IMAGE],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    for host in lab.hosts:
        assert lab.image_id(host, IMAGE) == local
    print(f"uplink: {sent_on_wire} bytes on the wire for a {payload}-byte payload "
          f"({sent_on_wire / payload:.4f}x)")  # fmt: skip
    assert sent_on_wire <= 1.1 * payload
    assert_clean(lab, originals)


def test_relay_killed_mid_stream_children_reparented(relay_lab: Lab, tmp_path: Path) -> None:
    """node1 -> node2 -> node3; node2's sshd sessions (its forwarding included) are killed
    mid-stream: node3 resumes from a host with a checked copy, every host is loaded."""
    lab = relay_lab
    originals = {h: authorized_keys(lab, h) for h in lab.hosts}
    lab.remove_images(IMAGE)
    inventory = grouped_inventory(lab, tmp_path)
    with Shaped(lab, "100mbit"):
        before = tx_bytes(lab)
        proc = subprocess.Popen(
            [sys.executable, "-m", "distrib", "run", str(book(tmp_path, 1)), "-i", str(inventory),
             "--json", "-v"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            wait_for(lambda: part_bytes(lab, "node3") > 20_000_000, 300, "node3 receiving")
            sshd = lab.state().host("node2").sshd_pid
            subprocess.run(["pkill", "-KILL", "-P", str(sshd)], check=False)
            out, err = proc.communicate(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
        sent_on_wire = tx_bytes(lab) - before
    assert proc.returncode == 0, err
    hosts = json.loads(out)["plays"][0]["hosts"]
    assert {h: r["status"] for h, r in hosts.items()} == dict.fromkeys(lab.hosts, "changed")
    assert "re-parented to node1" in hosts["node3"]["message"]
    assert hosts["node3"]["fed_by"] == "node1" and hosts["node3"]["resumed_from"] > 0
    payload = hosts["node1"]["bytes_sent"]
    print(f"kill: {sent_on_wire} bytes on the wire ({sent_on_wire / payload:.4f}x); "
          f"node2: {hosts['node2']['message']}; node3: {hosts['node3']['message']}")  # fmt: skip
    assert sent_on_wire <= 1.1 * payload  # the repair went host to host
    assert_clean(lab, originals)


def test_relay_sigint_mid_stream_leaves_nothing(relay_lab: Lab, tmp_path: Path) -> None:
    lab = relay_lab
    originals = {h: authorized_keys(lab, h) for h in lab.hosts}
    lab.remove_images(IMAGE)
    inventory = grouped_inventory(lab, tmp_path)
    with Shaped(lab, "50mbit"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "distrib", "run", str(book(tmp_path, 2)), "-i", str(inventory),
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            wait_for(lambda: part_bytes(lab, "node3") > 5_000_000, 300, "node3 receiving")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    assert json.loads(out)["interrupted"] is True, err
    time.sleep(1)  # a pipeline stopped by the sweep has exited
    assert_clean(lab, originals)
    for host in lab.hosts:
        assert lab.image_id(host, IMAGE) is None  # nothing half-loaded
