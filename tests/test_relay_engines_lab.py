"""Relay fan-out over every engine kind (issue 15 item 2): one tree holding a docker host, a
podman 5 host, a containerd 2 host (in its own namespace) and become hosts (sudo with a
password, and NOPASSWD), mixed parents (a podman host feeds a docker and a podman child).

Checked independently inside the hosts with each engine's own client (`lab exec`): every host
holds the workstation's image ID; the tree really relayed (the workstation's side of the lab
bridge carried about one copy, not one per host); nothing is left in remote_tmp, ~/.ssh or any
authorized_keys; the sudo password is in no argv, log line or JSON.

The module brings up its own layout on the session's instance (DISTRIB_LAB_INSTANCE) and
restores the standard lab afterwards.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from distrib.lab.remotes import USER_PASSWORD
from tests.conftest import Lab, distrib, local_id
from tests.test_remotes import PsSampler

pytestmark = pytest.mark.lab

IMAGE = "demo/web:1.0"
HOSTS = ("node1", "node2", "node3", "node4", "node5")
KINDS = "docker-28,podman-5,containerd-2,docker-28,podman-5"
NAMESPACE = "distrib-relay"  # node3's own containerd namespace
USERS = ("root", "distrib-sudo", "distrib-sudopw")
# width 2, one root: node1 feeds node2 (podman) and node3 (containerd); node2 feeds node4
# (docker, sudo with a password) and node5 (podman, NOPASSWD sudo)
TREE = {"node1": "workstation", "node2": "node1", "node3": "node1", "node4": "node2", "node5": "node2"}


@dataclass(frozen=True)
class Engines:
    lab: Lab
    inventory: Path

    def inventory_for(self, directory: Path, **extra: dict[str, Any]) -> Path:
        data = yaml.safe_load(self.inventory.read_text())
        hosts = data["all"]["children"]["lab"]["hosts"]
        hosts["node3"]["containerd_namespace"] = NAMESPACE
        hosts["node4"].update(ansible_user="distrib-sudopw", ansible_become=True)
        hosts["node5"].update(ansible_user="distrib-sudo", ansible_become=True)
        for name, hv in extra.items():
            hosts[name].update(hv)
        path = directory / "inventory.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def clear(self) -> None:
        """No demo image anywhere (each engine's own client)."""
        for host in ("node1", "node4"):
            self.lab.exec(host, "docker", "rmi", "-f", IMAGE, check=False)
        for host in ("node2", "node5"):
            self.lab.exec(host, "podman", "rmi", "-f", f"localhost/{IMAGE}", f"docker.io/{IMAGE}", check=False)  # fmt: skip
        for ns in (NAMESPACE, "k8s.io"):
            self.lab.exec("node3", "ctr", "-n", ns, "images", "rm", f"docker.io/{IMAGE}", check=False)  # fmt: skip

    def image_id(self, host: str) -> str | None:
        """What `host` holds under IMAGE, asked of its own engine: docker's and podman's image
        ID; containerd's config digest (the manifest names it) in node3's namespace."""
        if host in ("node1", "node4"):
            return self.lab.image_id(host, IMAGE)
        if host in ("node2", "node5"):
            out = self.lab.exec(host, "podman", "image", "inspect", "--format", "{{.Id}}", f"localhost/{IMAGE}", check=False)  # fmt: skip
            return f"sha256:{out.stdout.strip()}" if out.returncode == 0 else None
        return containerd_config(self.lab, NAMESPACE)

    def snapshot(self) -> dict[str, str]:
        """Per host, in one `lab exec`: every lab user's authorized_keys, what ~/.ssh holds,
        and any staging file (distrib.*) in /var/tmp or /tmp (remote_tmp)."""
        homes = " ".join("/root" if u == "root" else f"/home/{u}" for u in USERS)
        script = (
            f"for h in {homes}; do echo \"== $h\"; ls -A \"$h/.ssh\"; "
            'cat "$h/.ssh/authorized_keys"; done; echo "== staging"; '
            "ls -A /var/tmp /tmp 2>/dev/null | grep distrib; true"
        )
        return {h: self.lab.exec(h, "sh", "-c", script).stdout for h in HOSTS}

    def assert_clean(self, before: dict[str, str]) -> None:
        after = self.snapshot()
        for host in HOSTS:
            assert after[host] == before[host], f"{host}: ~/.ssh or remote_tmp changed"
            assert after[host].endswith("== staging\n"), f"{host}: staging files left"
            assert "distrib-relay" not in after[host] and "relay." not in after[host], host


def containerd_config(lab: Lab, ns: str) -> str | None:
    listing = lab.exec("node3", "ctr", "-n", ns, "images", "ls", check=False).stdout
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == f"docker.io/{IMAGE}":
            manifest = lab.exec("node3", "ctr", "-n", ns, "content", "get", fields[2]).stdout
            return str(json.loads(manifest)["config"]["digest"])
    return None


@pytest.fixture(scope="module")
def engines_lab(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    inventory = tmp_path_factory.mktemp("relay-engines") / "inventory.yaml"
    distrib("lab", "up", "--hosts", str(len(HOSTS)), "--kinds", KINDS, "--users",
            "--inventory", str(inventory), check=True)  # fmt: skip
    try:
        yield Engines(lab, inventory)
    finally:
        lab.restore()


def book(tmp_path: Path, codec: str) -> Path:
    path = tmp_path / "book.yaml"
    path.write_text(
        f"- name: relay\n  hosts: lab\n  images: [{IMAGE}]\n  compression: {codec}\n"
        "  fanout: relay\n  relay_width: 2\n"
    )
    return path


def tx_bytes(lab: Lab) -> int:
    bridge = lab.state().bridge
    return int(Path(f"/sys/class/net/{bridge}/statistics/tx_bytes").read_text())


def run(tmp_path: Path, inventory: Path, codec: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:  # fmt: skip
    secret = tmp_path / "become.txt"
    secret.write_text(USER_PASSWORD + "\n")
    proc = distrib("run", str(book(tmp_path, codec)), "-i", str(inventory), "--json",
                   "--become-password-file", str(secret), *extra)  # fmt: skip
    try:
        hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
    return proc, hosts


@pytest.mark.parametrize("codec", ["auto", "gzip"])
def test_one_tree_of_docker_podman_containerd_and_become_hosts(
    engines_lab: Engines, tmp_path: Path, codec: str
) -> None:
    """auto: zstd (every host loads it; podman and docker 28 read it, containerd through the
    host's zstd); gzip: podman and containerd unpack it on the host, in the pipe."""
    r = engines_lab
    r.clear()
    before = r.snapshot()
    inventory = r.inventory_for(tmp_path)
    sent_before = tx_bytes(r.lab)
    with PsSampler() as ps:
        proc, hosts = run(tmp_path, inventory, codec, "-vvv")
    on_wire = tx_bytes(r.lab) - sent_before
    assert proc.returncode == 0, proc.stderr
    assert {h: v["status"] for h, v in hosts.items()} == dict.fromkeys(HOSTS, "changed"), hosts
    assert all("(direct:" not in v["message"] for v in hosts.values()), hosts
    assert {h: v["fed_by"] for h, v in hosts.items()} == TREE
    payload = hosts["node1"]["bytes_sent"]
    assert payload > 1_000_000
    for host in HOSTS[1:]:  # fed by their parent: nothing from the workstation
        assert hosts[host]["bytes_sent"] == 0 and hosts[host]["bytes_relayed"] == payload, host
    # independently: the workstation's side of the bridge carried about one copy (direct
    # mode: five), the rest went host to host
    print(f"{codec}: {on_wire} bytes on the wire for a {payload}-byte payload, 5 hosts")
    assert on_wire < 2 * payload
    want = local_id(IMAGE)
    assert {h: r.image_id(h) for h in HOSTS} == dict.fromkeys(HOSTS, want)
    assert containerd_config(r.lab, "k8s.io") is None, "node3's own namespace, not the default"
    # the password: on stdin only (never argv, a log line or the JSON)
    assert "< become password" in proc.stderr
    assert len(ps.samples) > 10 and any("sudo" in s for s in ps.samples), "ps saw the run"
    for text in (proc.stdout, proc.stderr, *ps.samples):
        assert USER_PASSWORD not in text
    r.assert_clean(before)
    # a second run: every host already holds it, nothing relayed
    proc, hosts = run(tmp_path, inventory, codec)
    assert proc.returncode == 0, proc.stderr
    assert {h: v["status"] for h, v in hosts.items()} == dict.fromkeys(HOSTS, "ok")
    r.assert_clean(before)


def test_a_host_that_cannot_be_a_member_goes_direct_in_one_line(
    engines_lab: Engines, tmp_path: Path
) -> None:
    """transfer: stream keeps a host out of the tree (its archive is never staged): the
    workstation feeds it, its line says why; the rest of the tree relays around it."""
    r = engines_lab
    r.clear()
    before = r.snapshot()
    inventory = r.inventory_for(tmp_path, node2={"transfer": "stream"})
    proc, hosts = run(tmp_path, inventory, "zstd")
    assert proc.returncode == 0, proc.stderr
    assert {h: v["status"] for h, v in hosts.items()} == dict.fromkeys(HOSTS, "changed"), hosts
    assert hosts["node2"]["fed_by"] == "workstation"
    assert hosts["node2"]["message"].endswith("(direct: transfer: stream)"), hosts["node2"]
    assert hosts["node2"]["bytes_sent"] > 0
    fed = {h: v["fed_by"] for h, v in hosts.items() if h != "node2"}
    assert fed["node1"] == "workstation" and set(fed.values()) == {"workstation", "node1", "node3"}
    want = local_id(IMAGE)
    assert {h: r.image_id(h) for h in HOSTS} == dict.fromkeys(HOSTS, want)
    r.assert_clean(before)


def test_containerd_members_are_pinned(engines_lab: Engines, tmp_path: Path) -> None:
    """The kubelet's image GC keeps what distrib verified: the pin label the deploy path puts
    on containerd images (issue 18) is on the relayed one too."""
    r = engines_lab
    r.clear()  # node1 (docker) feeds node3 (containerd)
    inventory = r.inventory_for(tmp_path)
    proc, hosts = run(tmp_path, inventory, "zstd", "--limit", "node1,node3")
    assert proc.returncode == 0, proc.stderr
    assert hosts["node3"]["fed_by"] == "node1" and hosts["node3"]["status"] == "changed"
    labels = r.lab.exec("node3", "ctr", "-n", NAMESPACE, "images", "ls").stdout
    # containerd 2's `ctr images import` prints `NAME<TAB>saved`, containerd 1.6 `unpacking
    # NAME (...)`: engines.Engine._containerd_pinned reads both
    assert "io.cri-containerd.pinned=pinned" in labels, labels
