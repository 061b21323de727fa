"""End-to-end rollouts on the lab: real OpenSSH sshd + real dockerd per host, over real SSH.

Every check of what landed is made independently of distrib's own verification, with
`docker image inspect` inside each host (`distrib lab exec`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import Lab, distrib, local_id

pytestmark = pytest.mark.lab

IMAGES = ("demo/web:1.0", "demo/worker:1.0")



def playbook(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "play.yaml"
    path.write_text(text)
    return path


DEMO = "- name: demo\n  hosts: lab\n  images: [demo/web:1.0, demo/worker:1.0]\n  compression: {codec}\n"


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_images_land_with_identical_ids(lab: Lab, tmp_path: Path, codec: str) -> None:
    lab.remove_images(*IMAGES)
    book = playbook(tmp_path, DEMO.format(codec=codec))
    proc = distrib("run", str(book), "-i", str(lab.inventory), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    hosts = result["plays"][0]["hosts"]
    assert {h: v["status"] for h, v in hosts.items()} == dict.fromkeys(lab.hosts, "changed")
    for host in lab.hosts:
        for ref in IMAGES:
            assert lab.image_id(host, ref) == local_id(ref), f"{ref} on {host}"
        assert lab.temp_files(host) == [], f"temp files left on {host}"
    assert "PLAY RECAP" in proc.stderr


def test_up_to_date_host_still_verifies_and_gets_nothing(lab: Lab, tmp_path: Path) -> None:
    book = playbook(tmp_path, DEMO.format(codec="gzip"))
    first = distrib("run", str(book), "-i", str(lab.inventory))
    assert first.returncode == 0, first.stdout + first.stderr
    lab.exec("node2", "docker", "rmi", "-f", "demo/worker:1.0")
    second = distrib("run", str(book), "-i", str(lab.inventory), "--json")
    assert second.returncode == 0, second.stderr
    hosts = json.loads(second.stdout)["plays"][0]["hosts"]
    assert hosts["node1"]["status"] == "ok" and hosts["node1"]["bytes_sent"] == 0
    assert hosts["node3"]["status"] == "ok" and hosts["node3"]["bytes_sent"] == 0
    assert hosts["node1"]["images"] == {ref: local_id(ref) for ref in IMAGES}
    assert hosts["node2"]["status"] == "changed" and hosts["node2"]["bytes_sent"] > 0
    assert lab.image_id("node2", "demo/worker:1.0") == local_id("demo/worker:1.0")


def test_missing_local_image_fails_before_any_connection(lab: Lab, tmp_path: Path) -> None:
    # The inventory also names a host that does not exist: any connection attempt would hang
    # for the connect timeout and end as "unreachable" (exit 4), not as a config error (exit 5).
    ghost = {"ansible_host": lab.spare_address(50), "connect_timeout": 600}  # would hang minutes
    inv = lab.inventory_with(tmp_path, extra_hosts={"ghost": ghost})
    book = playbook(tmp_path, "- hosts: lab\n  images:\n    - demo/web:1.0\n    - demo/nope:9\n")
    started = time.monotonic()
    proc = distrib("run", str(book), "-i", str(inv))
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert f"{book}:4" in proc.stderr and "demo/nope:9 is not in the local docker" in proc.stderr
    assert time.monotonic() - started < 300
    assert "] connect" not in proc.stderr, "no host was contacted"
    assert "PLAY RECAP" not in proc.stdout


def test_unreachable_host_is_reported_while_others_succeed(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    ghost = {"ansible_host": lab.spare_address(50), "connect_timeout": 2}
    inv = lab.inventory_with(tmp_path, extra_hosts={"ghost": ghost})
    book = playbook(tmp_path, DEMO.format(codec="gzip"))
    proc = distrib("run", str(book), "-i", str(inv), "--json")
    assert proc.returncode == 4, proc.stderr
    hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
    assert hosts["ghost"]["status"] == "unreachable"
    assert "timed out" in hosts["ghost"]["message"]
    for host in lab.hosts:
        assert hosts[host]["status"] == "changed"
        assert lab.image_id(host, "demo/web:1.0") == local_id("demo/web:1.0")
    assert "ghost" in proc.stderr and "unreachable=1" in proc.stderr


def test_unknown_host_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inv = tmp_path / "inv.yaml"
    lines = [ln for ln in lab.inventory.read_text().splitlines() if "known_hosts:" not in ln]
    inv.write_text(
        "\n".join(lines).replace("vars:\n", f"vars:\n    known_hosts: {empty}\n", 1) + "\n"
    )
    book = playbook(tmp_path, DEMO.format(codec="gzip"))
    proc = distrib("run", str(book), "-i", str(inv), "--limit", "node1", "--json")
    assert proc.returncode == 4, proc.stderr
    node1 = json.loads(proc.stdout)["plays"][0]["hosts"]["node1"]
    assert node1["status"] == "unreachable"
    assert "not in" in node1["message"] and "SHA256:" in node1["message"]
    assert "ssh-keyscan" in node1["hint"]
    assert empty.read_text() == "", "an unknown key must never be added silently"
