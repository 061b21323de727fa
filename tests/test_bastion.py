"""ProxyJump through a lab bastion (issue 6): node1 is the bastion, the workstation's direct SSH
to node2 and node3 is refused (`lab up --bastion`). One and two hops, from
`ansible_ssh_common_args` and from ssh_config; inner host keys still checked; one bastion
connection shared by every host behind it (counted in the bastion's own sshd log).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Lab, distrib, local_id

pytestmark = pytest.mark.lab

IMAGES = ("demo/web:1.0", "demo/worker:1.0")
PLAY = "- hosts: {hosts}\n  images: [demo/web:1.0, demo/worker:1.0]\n"



@dataclass(frozen=True)
class Bastion:
    lab: Lab
    inventory: Path  # node2/node3 carry ansible_ssh_common_args: -o ProxyJump=root@node1
    key: Path
    known_hosts: Path
    addresses: dict[str, str]
    logs: Path
    workstation: str

    def accepted(self, host: str, source: str) -> int:
        """Logins sshd of `host` accepted from `source` so far (sshd -e logs them)."""
        text = (self.logs / f"{host}-sshd.log").read_text(errors="replace")
        return len(re.findall(rf"Accepted publickey for \S+ from {re.escape(source)} ", text))


@pytest.fixture(scope="module")
def bastion(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bastion]:
    inventory = tmp_path_factory.mktemp("bastion") / "inventory.yaml"
    distrib("lab", "up", "--hosts", "3", "--bastion", "--inventory", str(inventory), check=True)
    try:
        state = lab.state()
        yield Bastion(lab, inventory, Path(state.client_key), Path(state.known_hosts),
                      {h.name: h.address for h in state.hosts}, Path(state.lab_dir) / "logs",
                      state.workstation_address)  # fmt: skip
    finally:
        lab.restore()


def play(tmp_path: Path, hosts: str = "all") -> Path:
    path = tmp_path / "play.yaml"
    path.write_text(PLAY.format(hosts=hosts))
    return path


def run(book: Path, inventory: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:  # fmt: skip
    proc = distrib("run", str(book), "-i", str(inventory), "--json", *extra)
    try:
        return proc, json.loads(proc.stdout)["plays"][0]["hosts"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}") from None


def inventory(b: Bastion, directory: Path, hosts: dict[str, dict[str, Any]], **all_vars: Any) -> Path:
    data = {"all": {"vars": {"ansible_user": "root", "ansible_ssh_private_key_file": str(b.key),
                             "known_hosts": str(b.known_hosts), "ssh_config": "none", **all_vars},
                    "hosts": hosts}}  # fmt: skip
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_direct_connection_to_inner_hosts_is_refused(bastion: Bastion, tmp_path: Path) -> None:
    inv = inventory(bastion, tmp_path, {"node2": {"ansible_host": bastion.addresses["node2"]}})
    proc, hosts = run(play(tmp_path), inv)
    assert proc.returncode == 4
    assert "connection refused" in hosts["node2"]["message"]


def test_rollout_through_the_bastion_shares_one_connection(bastion: Bastion, tmp_path: Path) -> None:
    bastion.lab.remove_images(*IMAGES)
    before = bastion.accepted("node1", bastion.workstation)
    proc, hosts = run(play(tmp_path, "lab"), bastion.inventory)
    assert proc.returncode == 0, proc.stderr
    assert {h: v["status"] for h, v in hosts.items()} == dict.fromkeys(("node1", "node2", "node3"), "changed")
    for host in ("node1", "node2", "node3"):
        for ref in IMAGES:
            assert bastion.lab.image_id(host, ref) == local_id(ref), f"{ref} on {host}"
    # node1 as a target (1) + ONE bastion connection carrying node2's and node3's channels (1)
    assert bastion.accepted("node1", bastion.workstation) - before == 2
    # the inner hosts saw their logins come from the bastion, not the workstation
    assert bastion.accepted("node2", bastion.addresses["node1"]) >= 1
    assert bastion.accepted("node2", bastion.workstation) == 0


def test_two_hops_from_ssh_config(bastion: Bastion, tmp_path: Path) -> None:
    """workstation -> node1 -> node2 -> node3, all from ssh_config (alias + ProxyJump chain)."""
    bastion.lab.remove_images(*IMAGES)
    a = bastion.addresses
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host hop1\n  HostName {a['node1']}\n  User root\n  IdentityFile {bastion.key}\n"
        f"Host hop2\n  HostName {a['node2']}\n  User root\n  IdentityFile {bastion.key}\n"
        f"Host deep\n  HostName {a['node3']}\n  ProxyJump hop1,hop2\n"
    )
    inv = inventory(bastion, tmp_path, {"deep": {}}, ssh_config=str(config))
    before = bastion.accepted("node3", a["node2"])
    proc, hosts = run(play(tmp_path), inv)
    assert proc.returncode == 0, proc.stderr
    assert hosts["deep"]["status"] == "changed"
    assert bastion.lab.image_id("node3", "demo/web:1.0") == local_id("demo/web:1.0")
    assert bastion.accepted("node3", a["node2"]) - before == 1


def test_two_hops_from_ssh_common_args(bastion: Bastion, tmp_path: Path) -> None:
    a = bastion.addresses
    host = {"ansible_host": a["node3"],
            "ansible_ssh_common_args": f"-o ProxyJump=root@{a['node1']},root@{a['node2']}"}  # fmt: skip
    inv = inventory(bastion, tmp_path, {"node3": host})
    proc, hosts = run(play(tmp_path), inv)
    assert proc.returncode == 0, proc.stderr
    assert hosts["node3"]["status"] in ("ok", "changed")


def test_wrong_inner_host_key_is_refused(bastion: Bastion, tmp_path: Path) -> None:
    """The bastion's key is right, node3's is not (node2's key recorded under node3's
    address): node3 is refused as a possible man in the middle, node2 still works."""
    a = bastion.addresses
    lines = bastion.known_hosts.read_text().splitlines()
    node2_key = next(ln for ln in lines if ln.startswith(a["node2"] + " ")).split(" ", 1)[1]
    forged = [ln for ln in lines if not ln.startswith(a["node3"] + " ")] + [f"{a['node3']} {node2_key}"]
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(forged) + "\n")
    jump = {"ansible_ssh_common_args": f"-o ProxyJump=root@{a['node1']}"}
    inv = inventory(
        bastion, tmp_path,
        {"node2": {"ansible_host": a["node2"], **jump}, "node3": {"ansible_host": a["node3"], **jump}},
        known_hosts=str(known),
    )  # fmt: skip
    proc, hosts = run(play(tmp_path), inv)
    assert proc.returncode == 4
    assert hosts["node3"]["status"] == "unreachable"
    assert "has CHANGED" in hosts["node3"]["message"] and a["node3"] in hosts["node3"]["message"]
    assert hosts["node2"]["status"] in ("ok", "changed")


def test_unknown_bastion_key_is_refused(bastion: Bastion, tmp_path: Path) -> None:
    a = bastion.addresses
    lines = bastion.known_hosts.read_text().splitlines()
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(ln for ln in lines if not ln.startswith(a["node1"] + " ")) + "\n")
    host = {"ansible_host": a["node2"], "ansible_ssh_common_args": f"-J root@{a['node1']}"}
    inv = inventory(bastion, tmp_path, {"node2": host}, known_hosts=str(known))
    proc, hosts = run(play(tmp_path), inv)
    assert proc.returncode == 4
    message = hosts["node2"]["message"]
    assert f"host key of bastion root@{a['node1']}:22 is not in" in message
    assert "ssh-keyscan" in hosts["node2"]["hint"]
