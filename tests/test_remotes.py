"""Real-world remotes on the lab (issue 6): a docker-group user, sudo with and without a
password, podman and containerd hosts, a mixed inventory, ssh_config aliases, ssh-agent and
encrypted keys. Real sshd, sudo, podman and containerd/ctr in every host; results checked
independently inside the hosts with each engine's own client.

The module brings up its own lab layout (4 hosts: docker, docker, podman, containerd, with the
lab users) on the session's instance and restores the standard lab afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from distrib.lab.remotes import USER_PASSWORD
from tests.conftest import ROOT, Lab, distrib, local_id

pytestmark = pytest.mark.lab

IMAGES = ("demo/web:1.0", "demo/worker:1.0")
PLAY = "- name: remotes\n  hosts: {hosts}\n  images: [demo/web:1.0, demo/worker:1.0]\n  compression: {codec}\n"



@dataclass(frozen=True)
class Remotes:
    lab: Lab
    inventory: Path  # node1 docker, node2 docker, node3 podman, node4 containerd
    key: Path
    known_hosts: Path
    addresses: dict[str, str]

    def inventory_with(self, directory: Path, host_vars: dict[str, dict[str, Any]],
                       only: tuple[str, ...] | None = None, drop_all: tuple[str, ...] = ()) -> Path:  # fmt: skip
        data = yaml.safe_load(self.inventory.read_text())
        for key in drop_all:
            data["all"]["vars"].pop(key, None)
        hosts = data["all"]["children"]["lab"]["hosts"]
        for name, hv in host_vars.items():
            hosts[name] = {**(hosts.get(name) or {}), **hv}
        if only is not None:
            for name in list(hosts):
                if name not in only:
                    del hosts[name]
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "inventory.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def clear(self) -> None:
        """No demo image anywhere (each engine's own client)."""
        for host in ("node1", "node2"):
            self.lab.exec(host, "docker", "rmi", "-f", *IMAGES, check=False)
        self.lab.exec("node3", "podman", "rmi", "-f", *(f"localhost/{r}" for r in IMAGES), check=False)
        for ns in ("k8s.io", "custom"):
            self.lab.exec("node4", "ctr", "-n", ns, "images", "rm",
                          *(f"docker.io/{r}" for r in IMAGES), check=False)  # fmt: skip


@pytest.fixture(scope="module")
def remotes(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remotes]:
    inventory = tmp_path_factory.mktemp("remotes") / "inventory.yaml"
    distrib("lab", "up", "--hosts", "4", "--kinds", "docker,docker,podman,containerd", "--users",
            "--inventory", str(inventory), check=True)  # fmt: skip
    try:
        state = lab.state()
        yield Remotes(
            lab,
            inventory,
            Path(state.client_key),
            Path(state.known_hosts),
            {h.name: h.address for h in state.hosts},
        )
    finally:
        lab.restore()


def play(tmp_path: Path, hosts: str = "lab", codec: str = "gzip") -> Path:
    path = tmp_path / "play.yaml"
    path.write_text(PLAY.format(hosts=hosts, codec=codec))
    return path


def run(book: Path, inventory: Path, *extra: str, **kw: Any) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:  # fmt: skip
    proc = distrib("run", str(book), "-i", str(inventory), "--json", *extra, **kw)
    try:
        hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
    return proc, hosts


def docker_id(r: Remotes, host: str, ref: str) -> str | None:
    return r.lab.image_id(host, ref)


def podman_id(r: Remotes, ref: str) -> str | None:
    out = r.lab.exec("node3", "podman", "image", "inspect", "--format", "{{.Id}}", f"localhost/{ref}", check=False)
    return f"sha256:{out.stdout.strip()}" if out.returncode == 0 else None


def containerd_config_digest(r: Remotes, ref: str, ns: str = "k8s.io") -> str | None:
    """The config digest of `ref` in containerd (its manifest names it): docker's image ID."""
    listing = r.lab.exec("node4", "ctr", "-n", ns, "images", "ls", check=False).stdout
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == f"docker.io/{ref}":
            manifest = r.lab.exec("node4", "ctr", "-n", ns, "content", "get", fields[2]).stdout
            return str(json.loads(manifest)["config"]["digest"])
    return None


def no_temp_files(r: Remotes, *hosts: str) -> None:
    for host in hosts:
        assert r.lab.temp_files(host) == [], f"temp files left on {host}"


# --- privilege --------------------------------------------------------------------------------


def test_docker_group_user_needs_no_sudo(remotes: Remotes, tmp_path: Path) -> None:
    remotes.clear()
    inv = remotes.inventory_with(tmp_path, {"node1": {"ansible_user": "distrib-docker"}}, only=("node1",))
    proc, hosts = run(play(tmp_path), inv, "-vv")
    assert proc.returncode == 0, proc.stderr
    assert hosts["node1"]["status"] == "changed"
    assert "sudo" not in proc.stderr  # -vv shows every command: none went through sudo
    for ref in IMAGES:
        assert docker_id(remotes, "node1", ref) == local_id(ref)
    no_temp_files(remotes, "node1")


def test_passwordless_sudo(remotes: Remotes, tmp_path: Path) -> None:
    remotes.clear()
    inv = remotes.inventory_with(
        tmp_path, {"node2": {"ansible_user": "distrib-sudo", "ansible_become": True}}, only=("node2",)
    )
    proc, hosts = run(play(tmp_path), inv, "-vv")
    assert proc.returncode == 0, proc.stderr
    assert hosts["node2"]["status"] == "changed"
    assert "sudo -n -u root" in proc.stderr and "sudo -k -S" not in proc.stderr
    for ref in IMAGES:
        assert docker_id(remotes, "node2", ref) == local_id(ref)
    no_temp_files(remotes, "node2")
    again, hosts = run(play(tmp_path), inv)
    assert again.returncode == 0 and hosts["node2"]["status"] == "ok"


def test_engine_user_differs_from_upload_user(remotes: Remotes, tmp_path: Path) -> None:
    """distrib-sudo uploads into its private 0700 staging dir; the engine runs as
    distrib-docker (become_user), who cannot read that dir: the archive is opened by its
    owner and piped, so the load works and nothing is left behind."""
    remotes.clear()
    host = {"ansible_user": "distrib-sudo", "ansible_become": True,
            "ansible_become_user": "distrib-docker", "transfer": "staged"}  # fmt: skip
    inv = remotes.inventory_with(tmp_path, {"node2": host}, only=("node2",))
    proc, hosts = run(play(tmp_path), inv, "-vv")
    assert proc.returncode == 0, proc.stderr
    assert "-u distrib-docker" in proc.stderr
    assert docker_id(remotes, "node2", "demo/web:1.0") == local_id("demo/web:1.0")
    no_temp_files(remotes, "node2")


class PsSampler:
    """Samples `ps -eo args` (every process of the machine, lab hosts included) during a run."""

    def __init__(self) -> None:
        self.samples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.samples.append(out)
            time.sleep(0.02)

    def __enter__(self) -> PsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_sudo_with_password_never_shows_it(remotes: Remotes, tmp_path: Path) -> None:
    remotes.clear()
    secret = tmp_path / "become.txt"
    secret.write_text(USER_PASSWORD + "\n")
    become = {"ansible_user": "distrib-sudopw", "ansible_become": True}
    # node2: staged load (password line, then the file); node4: streamed into ctr import
    inv = remotes.inventory_with(
        tmp_path, {"node2": become, "node4": {**become, "transfer": "stream"}}, only=("node2", "node4")
    )
    with PsSampler() as ps:
        proc, hosts = run(play(tmp_path), inv, "-vvv", "--become-password-file", str(secret))
    assert proc.returncode == 0, proc.stderr
    assert {h: v["status"] for h, v in hosts.items()} == {"node2": "changed", "node4": "changed"}
    assert "sudo -k -S -p ''" in proc.stderr and "< become password" in proc.stderr
    assert len(ps.samples) > 20 and any("sudo" in s for s in ps.samples), "ps saw the run"
    for text in (proc.stdout, proc.stderr, *ps.samples):
        assert USER_PASSWORD not in text
    assert docker_id(remotes, "node2", "demo/web:1.0") == local_id("demo/web:1.0")
    assert containerd_config_digest(remotes, "demo/web:1.0") == local_id("demo/web:1.0")
    no_temp_files(remotes, "node2", "node4")


def test_wrong_sudo_password_is_fast_and_clear(remotes: Remotes, tmp_path: Path) -> None:
    remotes.clear()
    secret = tmp_path / "become.txt"
    secret.write_text("not-the-password\n")
    inv = remotes.inventory_with(
        tmp_path, {"node2": {"ansible_user": "distrib-sudopw", "ansible_become": True}}, only=("node2",)
    )
    started = time.monotonic()
    proc, hosts = run(play(tmp_path), inv, "--become-password-file", str(secret))
    assert time.monotonic() - started < 120  # a clear failure, never a hang
    assert proc.returncode == 2, proc.stderr
    assert hosts["node2"]["status"] == "failed"
    assert "sudo rejected the password of distrib-sudopw" in hosts["node2"]["message"]
    assert hosts["node2"]["bytes_sent"] == 0
    assert docker_id(remotes, "node2", "demo/web:1.0") is None
    assert "not-the-password" not in proc.stdout + proc.stderr


def test_sudo_password_missing_or_not_allowed(remotes: Remotes, tmp_path: Path) -> None:
    inv = remotes.inventory_with(
        tmp_path,
        {"node1": {"ansible_user": "distrib-sudopw", "ansible_become": True},
         "node2": {"ansible_user": "distrib-docker", "ansible_become": True}},
        only=("node1", "node2"),
    )  # fmt: skip
    started = time.monotonic()
    proc, hosts = run(play(tmp_path), inv)
    assert time.monotonic() - started < 120  # a clear failure, never a hang
    assert proc.returncode == 2
    assert "asks distrib-sudopw for a password and none was given" in hosts["node1"]["message"]
    assert "--ask-become-pass" in hosts["node1"]["hint"]
    # distrib-docker has no sudo rule: sudo -n asks for a password it does not have
    assert hosts["node2"]["status"] == "failed" and "become" in hosts["node2"]["message"]


# --- engines -----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["gzip", "zstd", "none"])
def test_podman_host(remotes: Remotes, tmp_path: Path, codec: str) -> None:
    remotes.clear()
    inv = remotes.inventory_with(tmp_path, {}, only=("node3",))
    proc, hosts = run(play(tmp_path, codec=codec), inv, "-vv")
    assert proc.returncode == 0, proc.stderr
    assert hosts["node3"]["status"] == "changed"
    if codec == "gzip":  # podman 4.3 reads no gzip: decompressed on the host, in a pipe
        assert "-dc -- " in proc.stderr and "| { out=$(podman load" in proc.stderr
    for ref in IMAGES:
        assert podman_id(remotes, ref) == local_id(ref)
    assert hosts["node3"]["images"] == {ref: local_id(ref) for ref in IMAGES}
    no_temp_files(remotes, "node3")
    again, hosts = run(play(tmp_path, codec=codec), inv)
    assert again.returncode == 0 and hosts["node3"]["status"] == "ok"


def test_containerd_host_k8s_namespace(remotes: Remotes, tmp_path: Path) -> None:
    remotes.clear()
    inv = remotes.inventory_with(tmp_path, {}, only=("node4",))
    proc, hosts = run(play(tmp_path, codec="zstd"), inv)
    assert proc.returncode == 0, proc.stderr
    assert hosts["node4"]["status"] == "changed"
    names = remotes.lab.exec("node4", "ctr", "-n", "k8s.io", "images", "ls", "-q").stdout.split()
    assert {f"docker.io/{r}" for r in IMAGES} <= set(names)
    for ref in IMAGES:
        assert containerd_config_digest(remotes, ref) == local_id(ref)
    no_temp_files(remotes, "node4")
    verify = distrib("verify", *IMAGES, "-i", str(inv), "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_containerd_namespace_is_configurable(remotes: Remotes, tmp_path: Path) -> None:
    remotes.clear()
    inv = remotes.inventory_with(tmp_path, {"node4": {"containerd_namespace": "custom"}}, only=("node4",))
    proc, _ = run(play(tmp_path), inv)
    assert proc.returncode == 0, proc.stderr
    assert containerd_config_digest(remotes, "demo/web:1.0", "custom") == local_id("demo/web:1.0")
    assert containerd_config_digest(remotes, "demo/web:1.0", "k8s.io") is None


def test_mixed_inventory_one_run(remotes: Remotes, tmp_path: Path) -> None:
    remotes.clear()
    proc, hosts = run(play(tmp_path), remotes.inventory)
    assert proc.returncode == 0, proc.stderr
    assert {h: v["status"] for h, v in hosts.items()} == dict.fromkeys(
        ("node1", "node2", "node3", "node4"), "changed"
    )
    for ref in IMAGES:
        want = local_id(ref)
        assert docker_id(remotes, "node1", ref) == want
        assert docker_id(remotes, "node2", ref) == want
        assert podman_id(remotes, ref) == want
        assert containerd_config_digest(remotes, ref) == want
    verify = distrib("verify", *IMAGES, "-i", str(remotes.inventory))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # drift on one engine is seen by that engine's listing
    remotes.lab.exec("node3", "podman", "rmi", "-f", "localhost/demo/worker:1.0")
    drift = distrib("verify", *IMAGES, "-i", str(remotes.inventory), "--json")
    assert drift.returncode == 2
    states = json.loads(drift.stdout)["plays"][0]["hosts"]
    assert states["node3"]["states"]["demo/worker:1.0"] == "missing"
    assert states["node4"]["status"] == "ok"


# --- ssh configuration ---------------------------------------------------------------------------


def test_ssh_config_alias(remotes: Remotes, tmp_path: Path) -> None:
    remotes.clear()
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host web-primary\n  HostName {remotes.addresses['node1']}\n  User distrib-docker\n"
        f"  Port 22\n  IdentityFile {remotes.key}\n  ConnectTimeout 5\n"
    )
    data = {"all": {"vars": {"known_hosts": str(remotes.known_hosts), "ssh_config": str(config)},
                    "hosts": {"web-primary": {}}}}  # fmt: skip
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data))
    proc, hosts = run(play(tmp_path, hosts="all"), inv)
    assert proc.returncode == 0, proc.stderr
    assert hosts["web-primary"]["status"] == "changed"
    assert docker_id(remotes, "node1", "demo/web:1.0") == local_id("demo/web:1.0")


def _bare_inventory(r: Remotes, directory: Path, **host: Any) -> Path:
    data = {"all": {"vars": {"known_hosts": str(r.known_hosts), "ansible_user": "root",
                             "ssh_config": "none"},
                    "hosts": {"node1": {"ansible_host": r.addresses["node1"], **host}}}}  # fmt: skip
    path = directory / "inv.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real ssh-agent of our own (killed by its pid afterwards)."""
    sock = tmp_path / "agent.sock"
    out = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True, check=True).stdout
    pid = int(out.split("SSH_AGENT_PID=", 1)[1].split(";", 1)[0])
    try:
        yield {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    finally:
        os.kill(pid, signal.SIGTERM)


def test_ssh_agent_key(remotes: Remotes, tmp_path: Path, agent: dict[str, str]) -> None:
    remotes.clear()
    key = tmp_path / "agent_key"
    shutil.copy(remotes.key, key)
    os.chmod(key, 0o600)
    subprocess.run(["ssh-add", str(key)], env=agent, check=True, capture_output=True)
    key.unlink()  # only the agent holds it now
    inv = _bare_inventory(remotes, tmp_path)
    without = subprocess.run([sys.executable, "-m", "distrib", "run", str(play(tmp_path, hosts="all")),
                              "-i", str(inv)], capture_output=True, text=True, cwd=ROOT,
                             env={k: v for k, v in agent.items() if k != "SSH_AUTH_SOCK"})  # fmt: skip
    assert without.returncode == 4, without.stdout + without.stderr
    assert "authentication failed" in without.stdout
    proc = subprocess.run([sys.executable, "-m", "distrib", "run", str(play(tmp_path, hosts="all")),
                           "-i", str(inv)], capture_output=True, text=True, cwd=ROOT, env=agent)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert docker_id(remotes, "node1", "demo/web:1.0") == local_id("demo/web:1.0")


def test_encrypted_private_key(remotes: Remotes, tmp_path: Path) -> None:
    remotes.clear()
    passphrase = "correct horse battery"
    key = tmp_path / "enc_key"
    shutil.copy(remotes.key, key)
    os.chmod(key, 0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", passphrase, "-f", str(key)], check=True,
                   capture_output=True)  # fmt: skip
    inv = _bare_inventory(remotes, tmp_path, ansible_ssh_private_key_file=str(key))
    book = play(tmp_path, hosts="all")
    missing, hosts = run(book, inv)
    assert missing.returncode == 4
    assert "encrypted" in hosts["node1"]["message"] and "--ask-key-passphrase" in hosts["node1"]["hint"]
    wrong_file = tmp_path / "wrong.txt"
    wrong_file.write_text("nope\n")
    wrong, hosts = run(book, inv, "--key-passphrase-file", str(wrong_file))
    assert wrong.returncode == 4 and hosts["node1"]["status"] == "unreachable"
    good_file = tmp_path / "pass.txt"
    good_file.write_text(passphrase + "\n")
    with PsSampler() as ps:
        proc, hosts = run(book, inv, "-vvv", "--key-passphrase-file", str(good_file))
    assert proc.returncode == 0, proc.stderr
    assert hosts["node1"]["status"] == "changed"
    for text in (proc.stdout, proc.stderr, *ps.samples):
        assert passphrase not in text
