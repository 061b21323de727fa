"""The whole manual workflow on the lab (issue 7): commit, backup and restore, push to a real
registry (Debian's docker-registry on a lab host) and pull from it.

Real sshd + dockerd hosts; every outcome is checked independently of distrib's own report,
with `docker` inside the hosts (`distrib lab exec`), the workstation's docker, sha256 of the
files written, and HTTP requests to the registry itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Lab, distrib

pytestmark = pytest.mark.lab

WEB = "demo/web:1.0"
WORKER = "demo/worker:1.0"
PASSWORD = "s3cret-Pa55-" + uuid.uuid4().hex[:8]


def local(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=check)


def local_id(ref: str) -> str:
    return local("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def hosts_of(proc: subprocess.CompletedProcess[str], play: int = 0) -> dict[str, Any]:
    return dict(json.loads(proc.stdout)["plays"][play]["hosts"])


def no_leftovers(lab: Lab) -> None:
    for host in lab.hosts:
        assert lab.temp_files(host) == [], f"temp files left on {host}"
        creds = lab.exec(host, "sh", "-c", "cat /root/.docker/config.json 2>/dev/null || true")
        assert PASSWORD not in creds.stdout and "auths" not in creds.stdout, host


@pytest.fixture(scope="module")
def containers(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """demo/web on every host (by distrib), containers web and db on node1 and node2, each
    with a file of its own; node3 has no container."""
    book = tmp_path_factory.mktemp("wf") / "web.yaml"
    book.write_text(f"- hosts: lab\n  images: [{WEB}, {WORKER}]\n")
    distrib("run", str(book), "-i", str(lab.inventory), check=True)
    for host in ("node1", "node2"):
        for name in ("web", "db"):
            lab.exec(host, "docker", "rm", "-f", name, check=False)
            lab.exec(host, "docker", "run", "-d", "--name", name, WEB, "sleep", "3600")
            lab.exec(host, "docker", "exec", name, "sh", "-c", f"echo {name}-on-{host} > /state")
    yield
    for host in lab.hosts:
        lab.exec(host, "docker", "rm", "-f", "web", "db", check=False)


# --- commit -----------------------------------------------------------------------------------


def test_commit_records_message_and_author(lab: Lab, containers: None) -> None:
    proc = distrib(
        "commit", "-i", str(lab.inventory), "--limit", "node1", "web", "demo/committed:1",
        "-m", "after the fix; it's 'quoted'", "-a", "Ops Team <ops@example.test>", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    node1 = hosts_of(proc)["node1"]
    assert node1["status"] == "changed"
    seen = lab.exec(
        "node1", "docker", "inspect", "--format", "{{.Id}}|{{.Comment}}|{{.Author}}",
        "demo/committed:1",
    ).stdout.strip()  # fmt: skip
    image_id, comment, author = seen.split("|")
    assert comment == "after the fix; it's 'quoted'"
    assert author == "Ops Team <ops@example.test>"
    assert node1["images"] == {"demo/committed:1": image_id}
    # the snapshot holds the container's changes
    out = lab.exec("node1", "docker", "run", "--rm", "demo/committed:1", "cat", "/state")
    assert out.stdout.strip() == "web-on-node1"
    lab.exec("node1", "docker", "rmi", "demo/committed:1")


def test_commit_on_the_workstation(lab: Lab) -> None:
    name = f"distrib-wf-{uuid.uuid4().hex[:8]}"
    local("create", "--name", name, WEB, "true")
    try:
        proc = distrib("commit", "--local", name, "demo/local-commit:1", "-m", "local", "-a", "me")
        assert proc.returncode == 0, proc.stderr
        seen = local("inspect", "--format", "{{.Comment}}|{{.Author}}", "demo/local-commit:1")
        assert seen.stdout.strip() == "local|me"
    finally:
        local("rm", "-f", name, check=False)
        local("rmi", "demo/local-commit:1", check=False)


@pytest.mark.parametrize(
    "argv, error",
    [
        (["--limit", "node1", "web;reboot", "demo/x:1"], "invalid container name"),
        (["--limit", "node1", "web", "Demo/X:1"], "lowercase"),
        (["--limit", "lab", "web", "demo/x:1"], "selects 4 hosts"),
        (["web", "demo/x:1"], "needs --limit HOST"),
    ],
)
def test_commit_refuses_bad_input_before_connecting(
    lab: Lab, tmp_path: Path, argv: list[str], error: str
) -> None:
    # a host that does not exist is in the inventory: connecting would hang on it
    inv = lab.inventory_with(
        tmp_path,
        extra_hosts={"ghost": {"ansible_host": lab.spare_address(60), "connect_timeout": 600}},
    )
    started = time.monotonic()
    proc = distrib("commit", "-i", str(inv), *argv)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert error in proc.stderr
    assert time.monotonic() - started < 300  # nothing connected (the ghost would hang 600 s)


# --- backup and restore -----------------------------------------------------------------------


def test_backup_of_two_containers_from_two_hosts(
    lab: Lab, containers: None, tmp_path: Path
) -> None:
    dest = tmp_path / "backups"
    proc = distrib("backup", "-i", str(lab.inventory), "web", "db", "--dest", str(dest), "--json")
    # node3 has neither container: reported, and the others are backed up all the same
    assert proc.returncode == 2, proc.stderr
    hosts = hosts_of(proc)
    assert hosts["node3"]["status"] == "failed"
    assert "no container named web, db" in hosts["node3"]["message"]
    assert {hosts["node1"]["status"], hosts["node2"]["status"]} == {"changed"}
    backups = json.loads(proc.stdout)["backups"]
    assert sorted((b["host"], b["container"]) for b in backups) == [
        ("node1", "db"), ("node1", "web"), ("node2", "db"), ("node2", "web"),
    ]  # fmt: skip
    for entry in backups:
        archive = Path(entry["archive"])
        assert archive.parent == dest / entry["host"]
        assert archive.name.startswith(entry["container"] + "-") and archive.suffix == ".gz"
        data = archive.read_bytes()
        meta = json.loads(Path(entry["metadata"]).read_text())
        # the file on disk is what the host hashed while it sent it
        assert hashlib.sha256(data).hexdigest() == meta["sha256"] == entry["sha256"]
        assert meta["size"] == len(data) and meta["codec"] == "gzip"
        assert (meta["host"], meta["container"], meta["image_id"]) == (
            entry["host"], entry["container"], entry["image_id"],
        )  # fmt: skip
        assert meta["container_image"] == WEB
        assert archive.stat().st_mode & 0o077 == 0  # backups hold container data: private
    assert not list(dest.rglob("*.part"))
    for host in ("node1", "node2"):
        left = lab.exec(host, "docker", "images", "-q", "--filter", "reference=distrib-backup/*")
        assert left.stdout.strip() == "", f"backup image left on {host}"
    no_leftovers(lab)


def test_restore_lands_with_identical_ids(lab: Lab, containers: None, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    proc = distrib(
        "backup", "-i", str(lab.inventory), "--limit", "node1", "web", "--dest", str(dest),
        "--compression", "zstd", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)["backups"]
    assert entry["archive"].endswith(".tar.zst")
    restore = distrib(
        "restore", entry["archive"], "-i", str(lab.inventory), "--limit", "node2:node3", "--json"
    )
    assert restore.returncode == 0, restore.stderr
    assert "matches" in restore.stderr  # checked against its metadata before anything else
    hosts = hosts_of(restore)
    assert {h: v["status"] for h, v in hosts.items()} == {"node2": "changed", "node3": "changed"}
    for host in ("node2", "node3"):
        assert lab.image_id(host, entry["image"]) == entry["image_id"]
    out = lab.exec("node3", "docker", "run", "--rm", entry["image"], "cat", "/state")
    assert out.stdout.strip() == "web-on-node1"
    again = distrib("restore", entry["archive"], "-i", str(lab.inventory), "--limit", "node3")
    assert again.returncode == 0 and "ok: [node3]" in again.stdout
    no_leftovers(lab)
    for host in lab.hosts:
        lab.exec(host, "docker", "rmi", entry["image"], check=False)


def test_restore_refuses_a_corrupt_archive(lab: Lab, containers: None, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    proc = distrib(
        "backup", "-i", str(lab.inventory), "--limit", "node2", "db", "--dest", str(dest),
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)["backups"]
    archive = Path(entry["archive"])
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    inv = lab.inventory_with(
        tmp_path,
        extra_hosts={"ghost": {"ansible_host": lab.spare_address(61), "connect_timeout": 600}},
    )
    started = time.monotonic()
    restore = distrib("restore", str(archive), "-i", str(inv))
    assert restore.returncode == 5, restore.stdout + restore.stderr
    assert "corrupt or a different file; not restored" in restore.stderr
    assert time.monotonic() - started < 300  # nothing connected (the ghost would hang 600 s)
    assert lab.image_id("node1", entry["image"]) is None


# --- registry -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Debian's docker-registry on node1:5000 (plain HTTP, htpasswd login)."""
    secret = tmp_path_factory.mktemp("registry") / "password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    distrib(
        "lab", "registry", "up", "--host", "node1", "--port", "5000", "--htpasswd",
        f"ops:{secret}", check=True,
    )  # fmt: skip
    address = lab.state().host("node1").address
    try:
        yield f"{address}:5000", secret
    finally:
        distrib("lab", "registry", "down", check=True)


def registry_tags(endpoint: str, repository: str) -> list[str]:
    """Ask the registry itself (HTTP API v2, basic auth) which tags it holds."""
    request = urllib.request.Request(f"http://{endpoint}/v2/{repository}/tags/list")
    token = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.load(response).get("tags") or [])


REGISTRY_PLAY = """\
- name: site registry
  hosts: lab
  images: [{web}, {worker}]
  registry: {endpoint}
  namespace: site
  registry_host: node1
  pull: true
  insecure: true
  vars:
    registry_username: ops
    registry_password_file: {secret}
"""


def test_registry_push_then_parallel_pull_verified(
    lab: Lab, registry: tuple[str, Path], tmp_path: Path
) -> None:
    endpoint, secret = registry
    pushed = [f"{endpoint}/site/{ref}" for ref in (WEB, WORKER)]
    lab.remove_images(WEB, WORKER, *pushed)
    book = tmp_path / "registry.yaml"
    book.write_text(REGISTRY_PLAY.format(web=WEB, worker=WORKER, endpoint=endpoint, secret=secret))
    proc = distrib("run", str(book), "-i", str(lab.inventory), "--json", "-vv")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    push, pull = document["plays"]
    assert push["name"] == f"site registry: push to {endpoint}"
    assert push["hosts"]["node1"]["status"] == "changed"
    assert push["hosts"]["node1"]["bytes_sent"] > 0  # the archive went to node1 only
    assert {h: v["status"] for h, v in pull["hosts"].items() if h != "node1"} == {
        "node2": "changed",
        "node3": "changed",
    }
    assert pull["hosts"]["node2"]["bytes_sent"] == 0  # pulled from the registry, not shipped
    # the registry really holds the images, under the namespace
    assert registry_tags(endpoint, "site/demo/web") == ["1.0"]
    assert registry_tags(endpoint, "site/demo/worker") == ["1.0"]
    for host in lab.hosts:
        for ref, name in ((WEB, pushed[0]), (WORKER, pushed[1])):
            assert lab.image_id(host, ref) == local_id(ref), f"{ref} on {host}"
            assert lab.image_id(host, name) == local_id(ref), f"{name} on {host}"
    # the password went over stdin only: not in any output, not left on any host
    assert PASSWORD not in proc.stdout + proc.stderr
    assert "--password-stdin" in proc.stderr  # the -vv command log shows how it travelled
    no_leftovers(lab)
    again = distrib("run", str(book), "-i", str(lab.inventory), "--json")
    assert again.returncode == 0, again.stderr
    assert {v["status"] for v in hosts_of(again, 1).values()} == {"ok"}


def test_wrong_registry_password_fails_clearly(
    lab: Lab, registry: tuple[str, Path], tmp_path: Path
) -> None:
    endpoint, _ = registry
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    book = tmp_path / "registry.yaml"
    book.write_text(REGISTRY_PLAY.format(web=WEB, worker=WORKER, endpoint=endpoint, secret=wrong))
    proc = distrib("run", str(book), "-i", str(lab.inventory), "--json")
    assert proc.returncode == 2, proc.stderr
    push, pull = json.loads(proc.stdout)["plays"]
    node1 = push["hosts"]["node1"]
    assert node1["status"] == "failed"
    assert "check registry_username and registry_password_file" in node1["hint"]
    assert {v["status"] for v in pull["hosts"].values()} == {"skipped"}
    assert "not-the-password" not in proc.stdout + proc.stderr
    no_leftovers(lab)


def test_registry_not_marked_insecure_is_refused(
    lab: Lab, registry: tuple[str, Path], tmp_path: Path
) -> None:
    endpoint, secret = registry
    book = tmp_path / "registry.yaml"
    text = REGISTRY_PLAY.format(web=WEB, worker=WORKER, endpoint=endpoint, secret=secret)
    book.write_text(text.replace("  insecure: true\n", ""))
    proc = distrib("run", str(book), "-i", str(lab.inventory), "--json")
    assert proc.returncode == 2, proc.stderr
    node1 = json.loads(proc.stdout)["plays"][0]["hosts"]["node1"]
    assert "does not say insecure: true" in node1["message"]
    assert "nothing was sent" in node1["message"] and node1["bytes_sent"] == 0
    assert "add insecure: true" in node1["hint"]


def test_push_to_unreachable_registry_fails_without_affecting_other_plays(
    lab: Lab, tmp_path: Path
) -> None:
    dead = f"{lab.state().host('node1').address}:5999"  # nothing listens there
    lab.remove_images(WORKER)
    book = tmp_path / "dead.yaml"
    book.write_text(
        f"- name: dead registry\n  hosts: lab\n  images: [{WEB}]\n  registry: {dead}\n"
        "  registry_host: node1\n  pull: true\n  insecure: true\n"
        f"- name: plain rollout\n  hosts: lab\n  images: [{WORKER}]\n"
    )
    proc = distrib("run", str(book), "-i", str(lab.inventory), "--json")
    assert proc.returncode == 2, proc.stderr
    push, pull, plain = json.loads(proc.stdout)["plays"]
    node1 = push["hosts"]["node1"]
    assert node1["status"] == "failed"
    assert f"docker push to {dead} failed" in node1["message"]
    assert "connection refused" in node1["message"]
    assert f"is the registry {dead} running" in node1["hint"]
    assert {v["status"] for v in pull["hosts"].values()} == {"skipped"}
    assert all("the push to" in v["message"] for v in pull["hosts"].values())
    assert {v["status"] for v in plain["hosts"].values()} == {"changed"}
    for host in lab.hosts:
        assert lab.image_id(host, WORKER) == local_id(WORKER)
    no_leftovers(lab)


# --- a playbook's commit step -----------------------------------------------------------------


def test_playbook_commit_step_then_rollout(lab: Lab, containers: None, tmp_path: Path) -> None:
    image = f"demo/snapshot:{uuid.uuid4().hex[:8]}"
    book = tmp_path / "snapshot.yaml"
    book.write_text(
        "- name: snapshot node1 and roll it out\n  hosts: lab\n  commit:\n    host: node1\n"
        f"    container: web\n    image: {image}\n    message: golden\n    author: ops\n"
    )
    try:
        check = distrib("plan", str(book), "-i", str(lab.inventory))
        assert check.returncode == 0, check.stderr
        assert "would commit web on node1" in check.stdout
        assert lab.image_id("node1", image) is None  # check mode committed nothing
        proc = distrib("run", str(book), "-i", str(lab.inventory), "--json")
        assert proc.returncode == 0, proc.stderr
        document = json.loads(proc.stdout)
        (commit,) = document["commits"]
        assert (commit["host"], commit["container"], commit["image"]) == ("node1", "web", image)
        assert local_id(image) == commit["image_id"]  # fetched into the workstation's docker
        hosts = document["plays"][0]["hosts"]
        assert hosts["node1"]["status"] == "ok"  # it has the image it committed
        assert {hosts["node2"]["status"], hosts["node3"]["status"]} == {"changed"}
        for host in lab.hosts:
            assert lab.image_id(host, image) == commit["image_id"]
        out = lab.exec("node3", "docker", "run", "--rm", image, "cat", "/state")
        assert out.stdout.strip() == "web-on-node1"
        seen = lab.exec("node3", "docker", "inspect", "--format", "{{.Comment}}|{{.Author}}", image)
        assert seen.stdout.strip() == "golden|ops"
        no_leftovers(lab)
    finally:
        local("rmi", image, check=False)
        lab.remove_images(image)


def test_failed_commit_step_ships_nothing(lab: Lab, containers: None, tmp_path: Path) -> None:
    book = tmp_path / "snapshot.yaml"
    book.write_text("- hosts: lab\n  commit: {host: node3, container: web, image: demo/never:1}\n")
    proc = distrib("run", str(book), "-i", str(lab.inventory))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "commit step of play" in proc.stderr and "no container named web" in proc.stderr
    assert "nothing was shipped" in proc.stderr
    for host in lab.hosts:
        assert lab.image_id(host, "demo/never:1") is None
