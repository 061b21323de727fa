"""The workflow steps on every engine kind (issue 15 item 2): commit, backup, restore, registry
push and pull (tag, login) on podman 5 and containerd 2 hosts and through become (sudo with a
password), on the lab. Each outcome is checked independently with the engine's own client
inside the host (`distrib lab exec`: docker, podman, ctr), sha256 of the files written, and HTTP
requests to the registry. What an engine cannot do is refused in one line, nothing changed.

The module brings up its own lab (node1 docker, node2 podman-5, node3 containerd-2, with the
lab users) on the session's instance and restores the standard lab afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from distrib.lab.remotes import USER_PASSWORD
from tests.conftest import Lab, distrib, local_id

pytestmark = pytest.mark.lab

WEB = "demo/web:1.0"
WORKER = "demo/worker:1.0"
PASSWORD = "r3g-Pa55-" + uuid.uuid4().hex[:8]
KINDS = "docker,podman-5,containerd-2"
BECOME = {"ansible_user": "distrib-sudopw", "ansible_become": True}


@dataclass(frozen=True)
class Fleet:
    lab: Lab
    inventory: Path  # node1 docker, node2 podman, node3 containerd
    secret: Path  # distrib-sudopw's sudo password (a file only root reads)
    registry: str  # plain HTTP, htpasswd login ops:PASSWORD
    open_registry: str  # plain HTTP, no login
    registry_secret: Path

    def inventory_with(self, directory: Path, host_vars: dict[str, dict[str, Any]]) -> Path:
        data = yaml.safe_load(self.inventory.read_text())
        hosts = data["all"]["children"]["lab"]["hosts"]
        for name, hv in host_vars.items():
            hosts[name] = {**(hosts.get(name) or {}), **hv}
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "inventory.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def x(self, host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lab.exec(host, *argv, check=check)

    def podman_id(self, name: str) -> str | None:
        out = self.x("node2", "podman", "image", "inspect", "--format", "{{.Id}}", name, check=False)
        return f"sha256:{out.stdout.strip()}" if out.returncode == 0 else None

    def docker_id(self, name: str) -> str | None:
        return self.lab.image_id("node1", name)

    def ctr_config(self, name: str) -> str | None:
        """The config digest containerd's manifest of `name` names (docker's image ID)."""
        listing = self.x("node3", "ctr", "-n", "k8s.io", "images", "ls", check=False).stdout
        for line in listing.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == name:
                blob = self.x("node3", "ctr", "-n", "k8s.io", "content", "get", fields[2]).stdout
                document = json.loads(blob)
                if "manifests" in document:
                    digest = document["manifests"][0]["digest"]
                    document = json.loads(
                        self.x("node3", "ctr", "-n", "k8s.io", "content", "get", digest).stdout
                    )
                return str(document["config"]["digest"])
        return None

    def ctr_labels(self, name: str) -> str:
        listing = self.x("node3", "ctr", "-n", "k8s.io", "images", "ls").stdout
        return next((line for line in listing.splitlines() if line.startswith(name + " ")), "")

    def no_leftovers(self) -> None:
        for host in self.lab.hosts:
            assert self.lab.temp_files(host) == [], f"temp files left on {host}"
        auth = self.x("node2", "sh", "-c", "cat /run/containers/0/auth.json 2>/dev/null; true")
        assert PASSWORD not in auth.stdout


@pytest.fixture(scope="module")
def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    from distrib.lab import config, current_instance

    base = tmp_path_factory.mktemp("wf-engines")
    inventory = base / "inventory.yaml"
    distrib("lab", "up", "--hosts", "3", "--kinds", KINDS, "--users", "--inventory",
            str(inventory), "--insecure-registry", str(config.subnet(current_instance())),
            check=True)  # fmt: skip
    secret = base / "become"
    secret.write_text(USER_PASSWORD + "\n")
    secret.chmod(0o600)
    registry_secret = base / "registry"
    registry_secret.write_text(PASSWORD + "\n")
    registry_secret.chmod(0o600)
    try:
        address = lab.state().host("node1").address
        distrib("lab", "registry", "up", "--host", "node1", "--port", "5000", "--htpasswd",
                f"ops:{registry_secret}", check=True)  # fmt: skip
        distrib("lab", "registry", "up", "--host", "node1", "--port", "5001", check=True)
        book = base / "images.yaml"
        book.write_text(f"- hosts: lab\n  images: [{WEB}, {WORKER}]\n")
        distrib("run", str(book), "-i", str(inventory), check=True)
        fleet = Fleet(lab, inventory, secret, f"{address}:5000", f"{address}:5001",
                      registry_secret)  # fmt: skip
        fleet.x("node1", "docker", "run", "-d", "--name", "web", WEB, "sleep", "3600")
        fleet.x("node1", "docker", "exec", "web", "sh", "-c", "echo web-on-node1 > /state")
        fleet.x("node2", "podman", "run", "-d", "--network", "none", "--name", "web",
                f"localhost/{WEB}", "sleep", "3600")  # fmt: skip
        fleet.x("node2", "podman", "exec", "web", "sh", "-c", "echo web-on-node2 > /state")
        yield fleet
    finally:
        distrib("lab", "registry", "down")
        lab.restore()


def hosts_of(proc: subprocess.CompletedProcess[str], play: int = 0) -> dict[str, Any]:
    try:
        return dict(json.loads(proc.stdout)["plays"][play]["hosts"])
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None  # fmt: skip


def registry_tags(endpoint: str, repository: str, login: bool = True) -> list[str]:
    request = urllib.request.Request(f"http://{endpoint}/v2/{repository}/tags/list")
    if login:
        token = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.load(response).get("tags") or [])


# --- commit -----------------------------------------------------------------------------------


def test_commit_on_podman_through_sudo_with_a_password(fleet: Fleet, tmp_path: Path) -> None:
    inv = fleet.inventory_with(tmp_path, {"node2": BECOME})
    image = f"demo/committed:{uuid.uuid4().hex[:8]}"
    proc = distrib(
        "commit", "-i", str(inv), "--limit", "node2", "web", image, "-m", "it's 'quoted'",
        "-a", "Ops <ops@example.test>", "--json", "-vv",
        "--become-password-file", str(fleet.secret),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    node2 = hosts_of(proc)["node2"]
    assert node2["status"] == "changed"
    assert "sudo -k -S -p ''" in proc.stderr and USER_PASSWORD not in proc.stdout + proc.stderr
    # podman's own view: its name for it, the message and author kept (docker format)
    seen = fleet.x("node2", "podman", "image", "inspect", "--format",
                   "{{.Id}}|{{.Comment}}|{{.Author}}", f"localhost/{image}").stdout.strip()  # fmt: skip
    image_id, comment, author = seen.split("|")
    assert (comment, author) == ("it's 'quoted'", "Ops <ops@example.test>")
    assert node2["images"] == {image: f"sha256:{image_id}"}
    out = fleet.x("node2", "podman", "run", "--rm", "--network", "none", f"localhost/{image}",
                  "cat", "/state")  # fmt: skip
    assert out.stdout.strip() == "web-on-node2"
    fleet.x("node2", "podman", "rmi", f"localhost/{image}")
    fleet.no_leftovers()


@pytest.mark.parametrize("command", ["commit", "backup"])
def test_containerd_refuses_commit_and_backup_in_one_line(
    fleet: Fleet, tmp_path: Path, command: str
) -> None:
    argv = ["web", "demo/never:1"] if command == "commit" else ["web", "--dest", str(tmp_path)]
    before = fleet.x("node3", "ctr", "-n", "k8s.io", "images", "ls", "-q").stdout
    proc = distrib(command, "-i", str(fleet.inventory), "--limit", "node3", *argv, "--json")
    assert proc.returncode == 2, proc.stderr
    message = hosts_of(proc)["node3"]["message"]
    assert message == (
        f"{command} is not supported on containerd hosts: ctr has no commit (containerd keeps "
        "no container-to-image snapshot command); nothing was done"
    )
    assert fleet.x("node3", "ctr", "-n", "k8s.io", "images", "ls", "-q").stdout == before
    assert not list(tmp_path.rglob("*.gz"))


# --- backup and restore -----------------------------------------------------------------------


def test_backup_on_podman_through_sudo_restored_on_every_engine(
    fleet: Fleet, tmp_path: Path
) -> None:
    inv = fleet.inventory_with(tmp_path / "inv", {"node2": BECOME})
    dest = tmp_path / "backups"
    proc = distrib("backup", "-i", str(inv), "--limit", "node2", "web", "--dest", str(dest),
                   "--json", "--become-password-file", str(fleet.secret))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert USER_PASSWORD not in proc.stdout + proc.stderr
    (entry,) = json.loads(proc.stdout)["backups"]
    archive = Path(entry["archive"])
    meta = json.loads(Path(entry["metadata"]).read_text())
    data = archive.read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["sha256"] == entry["sha256"]
    assert meta["size"] == len(data) and meta["container_image"] == f"localhost/{WEB}"
    assert entry["image"].startswith("localhost/distrib-backup/web:")  # podman's own name
    assert fleet.podman_id(entry["image"]) is None, "the backup image stays on the host"
    fleet.no_leftovers()

    restore = distrib("restore", str(archive), "-i", str(fleet.inventory), "--json")
    assert restore.returncode == 0, restore.stderr
    assert {h: v["status"] for h, v in hosts_of(restore).items()} == {
        "node1": "changed", "node2": "changed", "node3": "changed",
    }  # fmt: skip
    name = entry["image"]
    assert fleet.docker_id(name) == entry["image_id"]
    assert fleet.podman_id(name) == entry["image_id"]
    assert fleet.ctr_config(name) == entry["image_id"]
    out = fleet.x("node1", "docker", "run", "--rm", name, "cat", "/state")
    assert out.stdout.strip() == "web-on-node2"
    fleet.no_leftovers()
    fleet.x("node1", "docker", "rmi", name)
    fleet.x("node2", "podman", "rmi", name)
    fleet.x("node3", "ctr", "-n", "k8s.io", "images", "rm", name)


# --- registry ---------------------------------------------------------------------------------


REGISTRY_PLAY = """\
- name: site registry
  hosts: lab
  images: [{web}, {worker}]
  registry: {endpoint}
  namespace: {namespace}
  registry_host: {pusher}
  pull: true
  insecure: true
"""
LOGIN = "  vars:\n    registry_username: ops\n    registry_password_file: {secret}\n"


def test_podman_pushes_with_a_login_through_sudo_and_ctr_refuses_credentials(
    fleet: Fleet, tmp_path: Path
) -> None:
    namespace = f"pod{uuid.uuid4().hex[:6]}"
    inv = fleet.inventory_with(tmp_path / "inv", {"node2": BECOME, "node1": BECOME})
    book = tmp_path / "registry.yaml"
    book.write_text(
        REGISTRY_PLAY.format(web=WEB, worker=WORKER, endpoint=fleet.registry,
                             namespace=namespace, pusher="node2")
        + LOGIN.format(secret=fleet.registry_secret)
    )  # fmt: skip
    pushed = [f"{fleet.registry}/{namespace}/{ref}" for ref in (WEB, WORKER)]
    proc = distrib("run", str(book), "-i", str(inv), "--json", "-vv",
                   "--become-password-file", str(fleet.secret))  # fmt: skip
    assert proc.returncode == 2, proc.stderr  # node3 refused
    push, pull = json.loads(proc.stdout)["plays"]
    assert push["hosts"]["node2"]["status"] == "changed", push["hosts"]["node2"]["message"]
    assert registry_tags(fleet.registry, f"{namespace}/demo/web") == ["1.0"]
    assert registry_tags(fleet.registry, f"{namespace}/demo/worker") == ["1.0"]
    assert pull["hosts"]["node1"]["status"] == "changed", pull["hosts"]["node1"]["message"]
    assert pull["hosts"]["node3"]["status"] == "failed"
    assert pull["hosts"]["node3"]["message"] == (
        "pull is not supported on containerd hosts: ctr takes registry credentials only on "
        "its command line (--user USER:PASSWORD), where every user of the host could read "
        "them; distrib keeps secrets out of argv; nothing was done"
    )
    for ref, name in zip((WEB, WORKER), pushed):
        assert fleet.podman_id(name) == fleet.podman_id(f"localhost/{ref}") == local_id(ref)
        assert fleet.docker_id(name) == local_id(ref)
        assert fleet.ctr_config(name) is None  # node3 pulled nothing
    assert "--password-stdin" in proc.stderr and "podman login --authfile" in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr and USER_PASSWORD not in proc.stderr
    fleet.no_leftovers()
    for name in pushed:
        fleet.x("node1", "docker", "rmi", name, check=False)
        fleet.x("node2", "podman", "rmi", name, check=False)


def test_containerd_pushes_and_every_engine_pulls(fleet: Fleet, tmp_path: Path) -> None:
    namespace = f"ctr{uuid.uuid4().hex[:6]}"
    inv = fleet.inventory_with(
        tmp_path / "inv", {"node3": {"ansible_user": "distrib-sudo", "ansible_become": True}}
    )
    book = tmp_path / "registry.yaml"
    book.write_text(REGISTRY_PLAY.format(web=WEB, worker=WORKER, endpoint=fleet.open_registry,
                                         namespace=namespace, pusher="node3"))  # fmt: skip
    pushed = [f"{fleet.open_registry}/{namespace}/{ref}" for ref in (WEB, WORKER)]
    proc = distrib("run", str(book), "-i", str(inv), "--json", "-vv")
    assert proc.returncode == 0, proc.stderr
    push, pull = json.loads(proc.stdout)["plays"]
    assert push["hosts"]["node3"]["status"] == "changed"
    assert "sudo -n -u root" in proc.stderr and "images push --plain-http" in proc.stderr
    assert registry_tags(fleet.open_registry, f"{namespace}/demo/web", login=False) == ["1.0"]
    assert {h: v["status"] for h, v in pull["hosts"].items()} == {
        "node1": "changed", "node2": "changed", "node3": "ok",
    }  # fmt: skip
    for ref, name in zip((WEB, WORKER), pushed):
        assert fleet.docker_id(name) == local_id(ref)
        assert fleet.podman_id(name) == local_id(ref)
        assert fleet.ctr_config(name) == fleet.ctr_config(f"docker.io/{ref}") == local_id(ref)
    fleet.no_leftovers()
    # containerd pulls (docker pushes): tagged with the play's name and pinned as the deploy
    # path pins
    fleet.x("node3", "ctr", "-n", "k8s.io", "images", "rm", f"docker.io/{WEB}", pushed[0])
    book.write_text(book.read_text().replace("registry_host: node3", "registry_host: node1"))
    again = distrib("run", str(book), "-i", str(inv), "--json", "--limit", "node3")
    assert again.returncode == 0, again.stderr
    assert hosts_of(again, 1)["node3"]["status"] == "changed"
    assert fleet.ctr_config(f"docker.io/{WEB}") == fleet.ctr_config(pushed[0]) == local_id(WEB)
    for name in (f"docker.io/{WEB}", pushed[0]):
        assert "io.cri-containerd.pinned=pinned" in fleet.ctr_labels(name), name
    fleet.no_leftovers()
    for name in pushed:
        fleet.x("node1", "docker", "rmi", name, check=False)
        fleet.x("node2", "podman", "rmi", name, check=False)
        fleet.x("node3", "ctr", "-n", "k8s.io", "images", "rm", name, check=False)


# --- a playbook's commit step -----------------------------------------------------------------


def test_playbook_commit_step_on_podman_rolled_out_everywhere(
    fleet: Fleet, tmp_path: Path
) -> None:
    image = f"demo/snapshot:{uuid.uuid4().hex[:8]}"
    book = tmp_path / "snapshot.yaml"
    book.write_text(
        "- name: snapshot node2 and roll it out\n  hosts: lab\n  commit:\n    host: node2\n"
        f"    container: web\n    image: {image}\n    message: golden\n"
    )
    try:
        proc = distrib("run", str(book), "-i", str(fleet.inventory), "--json")
        assert proc.returncode == 0, proc.stderr
        document = json.loads(proc.stdout)
        (commit,) = document["commits"]
        assert local_id(image) == commit["image_id"]  # fetched, named as the play says
        hosts = document["plays"][0]["hosts"]
        assert hosts["node2"]["status"] == "ok"  # it has what it committed
        assert fleet.docker_id(image) == commit["image_id"]
        assert fleet.podman_id(f"localhost/{image}") == commit["image_id"]
        assert fleet.ctr_config(f"docker.io/{image}") == commit["image_id"]
        out = fleet.x("node1", "docker", "run", "--rm", image, "cat", "/state")
        assert out.stdout.strip() == "web-on-node2"
        fleet.no_leftovers()
    finally:
        subprocess.run(["docker", "rmi", image], capture_output=True, check=False)
        fleet.x("node1", "docker", "rmi", image, check=False)
        fleet.x("node2", "podman", "rmi", f"localhost/{image}", check=False)
        fleet.x("node3", "ctr", "-n", "k8s.io", "images", "rm", f"docker.io/{image}", check=False)
