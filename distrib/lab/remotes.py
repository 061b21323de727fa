"""Real-world remotes in the lab (issue 6): host kinds (docker, podman, containerd), login users
for privilege tests, and a bastion that inner hosts are only reachable through.

Host kinds
  docker      the lab's classic host: its own dockerd.
  podman      Debian's podman, no daemon: the host's mount namespace sees its own
              /etc/containers (storage.conf -> a store in the host dir), so any `podman` run
              over SSH (or through sudo) uses that host's private store.
  containerd  Debian's containerd with its own config, root, state and socket; the host's
              mount namespace sees that socket as /run/containerd/containerd.sock, the default
              of `ctr` (also under sudo, which resets the environment).

Users (workstation-wide: lab hosts share /etc/passwd with the workstation)
  distrib-docker  in group `docker`: reaches the host's dockerd socket (0660 root:docker)
  distrib-sudo    sudo NOPASSWD
  distrib-sudopw  sudo with a password (USER_PASSWORD; a lab-only account)
Each gets a home whose `.ssh` is replaced, inside every host's mount namespace, by a private
dir holding only that instance's client key: no host and no other instance shares it. The
accounts and /etc/sudoers.d/distrib-lab-users are created idempotently by `up --users` and
removed by `down` unless another instance's lab was also made with `--users` (they are harmless
if left: no password login for the first two, and only lab sshds know their keys).

Bastion
  `up --bastion`: node1 is the bastion; a REJECT rule in the workstation's OUTPUT chain (tagged
  with the instance's comment, so `down` finds it) refuses the workstation's direct SSH
  connections to every other host. Host-to-host traffic is bridged, not OUTPUT: node1 still
  reaches them.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distrib import local
from distrib.errors import LabError, LocalError
from distrib.lab import config

KINDS = ("docker", "podman", "containerd")
USERS = ("distrib-docker", "distrib-sudo", "distrib-sudopw")
PASSWORD_USER = "distrib-sudopw"  # `up --password-login`: may log in with USER_PASSWORD
USER_PASSWORD = "distrib-lab-pw"  # noqa: S105 - a throwaway lab account, documented as such
SUDOERS_FILE = "/etc/sudoers.d/distrib-lab-users"
CONTAINERD_SOCKET_DIR = "/run/containerd"


def parse_kinds(spec: str | None, n_hosts: int) -> list[str]:
    """`docker,podman,containerd` -> one kind per host; the last kind repeats; default docker."""
    if not spec:
        return ["docker"] * n_hosts
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise LabError(f"--kinds: unknown kind {', '.join(bad) or spec!r} (use {', '.join(KINDS)})")
    if len(kinds) > n_hosts:
        raise LabError(f"--kinds names {len(kinds)} hosts but --hosts is {n_hosts}")
    return kinds + [kinds[-1]] * (n_hosts - len(kinds))


def bastion_comment(instance: int) -> str:
    return f"distrib-lab-{config.check_instance(instance)}-bastion"


def bastion_rule(bridge: str, address: str, instance: int) -> list[str]:
    """iptables rule (without -I/-D) refusing the workstation's SSH to `address`."""
    return ["OUTPUT", "-o", bridge, "-d", f"{address}/32", "-p", "tcp", "-m", "tcp",
            "--dport", "22", "-m", "comment", "--comment", bastion_comment(instance),
            "-j", "REJECT", "--reject-with", "tcp-reset"]  # fmt: skip


def parse_rules_with_comment(output: str, comment: str) -> list[list[str]]:
    """The `-A OUTPUT ...` rules of `iptables -S OUTPUT` carrying `comment`, as -D arguments."""
    out = []
    for line in output.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == "-A" and comment in words:
            out.append([w.strip('"') for w in words[1:]])
    return out


def podman_files(
    host_dir: str, storage_driver: str, helpers_dir: str | None = None
) -> dict[str, str]:
    """storage.conf and containers.conf of a podman host (names relative to /etc/containers).

    `helpers_dir`: podman 5's helper_binaries_dir (it refuses to start without netavark)."""
    helpers = [f'helper_binaries_dir = ["{helpers_dir}"]'] if helpers_dir else []
    driver = "overlay" if storage_driver == "overlay2" else "vfs"
    return {
        "storage.conf": "\n".join(
            [
                "# Written by `distrib lab up`: this lab host's private podman store.",
                "[storage]",
                f'driver = "{driver}"',
                f'graphroot = "{host_dir}/podman/root"',
                f'runroot = "{host_dir}/podman/run"',
                "",
            ]
        ),
        "containers.conf": "\n".join(
            [
                "# Written by `distrib lab up`: no systemd or journald in a lab host.",
                "[engine]",
                'events_logger = "file"',
                'cgroup_manager = "cgroupfs"',
                *helpers,
                "",
            ]
        ),
    }


def containerd_config(host_dir: str, major: int = 1) -> str:
    """A containerd config: own root, state, socket (in a dir bound over /run/containerd).

    containerd 2 reads config `version = 3` (same keys here; its CRI is three plugins)."""
    cri = ["io.containerd.grpc.v1.cri"]
    if major >= 2:
        cri += ["io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
    return "\n".join(
        [
            "# Written by `distrib lab up`: this lab host's own containerd.",
            f"version = {3 if major >= 2 else 2}",
            f'root = "{host_dir}/containerd/root"',
            f'state = "{host_dir}/containerd/state"',
            # CRI (the kubelet's API) is not needed to import images into k8s.io.
            "disabled_plugins = [" + ", ".join(f'"{p}"' for p in cri) + "]",
            "[grpc]",
            f'  address = "{host_dir}/run-containerd/containerd.sock"',
            "[plugins]",
            '  [plugins."io.containerd.internal.v1.opt"]',
            f'    path = "{host_dir}/containerd/opt"',
            "",
        ]
    )


# ---------------------------------------------------------------------------------- system


def _run(cmd: Sequence[str], what: str) -> local.Completed:
    try:
        return local.run(cmd, timeout=60, what=what)
    except LocalError as exc:
        raise LabError(str(exc)) from None


def prepare_podman(host_dir: str, storage_driver: str, helpers_dir: str | None = None) -> str:
    """The host's /etc/containers (a copy of the workstation's plus its own store); returns it."""
    etc = Path(host_dir) / "etc-containers"
    shutil.rmtree(etc, ignore_errors=True)
    if Path("/etc/containers").is_dir():
        shutil.copytree("/etc/containers", etc, symlinks=True)
    else:
        etc.mkdir(parents=True)
    for name, text in podman_files(host_dir, storage_driver, helpers_dir).items():
        (etc / name).write_text(text)
    for sub in ("podman/root", "podman/run"):
        (Path(host_dir) / sub).mkdir(parents=True, exist_ok=True)
    return str(etc)


def prepare_containerd(host_dir: str, major: int = 1) -> str:
    """containerd.toml and dirs of a containerd host; returns the config path."""
    hd = Path(host_dir)
    for sub in ("containerd/root", "containerd/state", "containerd/opt", "run-containerd"):
        (hd / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(hd / "run-containerd", 0o711)
    path = hd / "containerd.toml"
    path.write_text(containerd_config(host_dir, major))
    # Mount target inside each containerd host's namespace (an empty dir changes nothing else;
    # it is the standard containerd path, so `down` leaves it).
    Path(CONTAINERD_SOCKET_DIR).mkdir(mode=0o711, exist_ok=True)
    return str(path)


def containerd_socket(host_dir: str) -> str:
    return str(Path(host_dir) / "run-containerd" / "containerd.sock")


def ensure_users() -> None:
    """The three lab users and their sudoers file; idempotent (and safe for every instance)."""
    if local.which("sudo") is None:
        raise LabError("lab users need sudo", hint="apt-get install sudo")
    try:
        grp.getgrnam("docker")
    except KeyError:
        _run(["groupadd", "--system", "docker"], "groupadd docker")
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            _run(["useradd", "--create-home", "--shell", "/bin/sh", user], f"useradd {user}")
        home = Path(pwd.getpwnam(user).pw_dir)
        ssh = home / ".ssh"  # mount target of each host's private copy
        ssh.mkdir(mode=0o700, exist_ok=True)
        entry = pwd.getpwnam(user)
        os.chown(ssh, entry.pw_uid, entry.pw_gid)
    _run(["usermod", "-aG", "docker", "distrib-docker"], "usermod docker group")
    # '*': no password login, but not "locked" ('!'), which sshd without PAM refuses.
    _run(["usermod", "-p", "*", "distrib-docker"], "usermod")
    _run(["usermod", "-p", "*", "distrib-sudo"], "usermod")
    # the password goes to chpasswd on stdin, not argv
    local.run(["chpasswd"], input=f"distrib-sudopw:{USER_PASSWORD}\n", timeout=30, what="chpasswd")
    text = (
        "# Written by `distrib lab up --users` (issue 6): lab accounts only.\n"
        "distrib-sudo ALL=(ALL) NOPASSWD: ALL\n"
        "distrib-sudopw ALL=(ALL) ALL\n"
    )
    tmp = Path(SUDOERS_FILE + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o440)
    check = local.run(["visudo", "-cf", str(tmp)], check=False, timeout=30)
    if not check.ok:
        tmp.unlink()
        raise LabError(f"sudoers file rejected by visudo: {check.stderr.strip()}")
    os.replace(tmp, SUDOERS_FILE)


def users_exist() -> bool:
    """Whether any lab account or the lab sudoers file is on this machine."""
    if os.path.exists(SUDOERS_FILE):
        return True
    for user in USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return True
    return False


def remove_users() -> None:
    """Undo ensure_users (only when no other lab instance may use the accounts)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SUDOERS_FILE)
    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        local.run(["userdel", "--remove", user], check=False, timeout=30)


def user_ssh_dir(host_dir: str, user: str) -> str:
    return str(Path(host_dir) / "users" / user)


def prepare_user_keys(host_dir: str, client_pub: str) -> list[tuple[str, str]]:
    """Each user's private .ssh for one host: (source dir, mount target) pairs."""
    binds = []
    for user in USERS:
        entry = pwd.getpwnam(user)
        d = Path(user_ssh_dir(host_dir, user))
        d.mkdir(parents=True, exist_ok=True)
        auth = d / "authorized_keys"
        auth.write_text(client_pub)
        for path, mode in ((d, 0o700), (auth, 0o600)):
            os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(path, mode)
        binds.append((str(d), str(Path(entry.pw_dir) / ".ssh")))
    # The users' dirs sit in the host dir: they must be able to walk into it (not list it).
    os.chmod(Path(host_dir) / "users", 0o711)
    return binds


def block_direct(bridge: str, addresses: Sequence[str], instance: int) -> None:
    for address in addresses:
        _run(["iptables", "-w", "-I", *bastion_rule(bridge, address, instance)], "iptables")


def unblock_direct(instance: int) -> None:
    """Remove every bastion rule of `instance` (found by its comment)."""
    listed = local.run(["iptables", "-w", "-S", "OUTPUT"], check=False, timeout=30)
    for rule in parse_rules_with_comment(listed.stdout, bastion_comment(instance)):
        local.run(["iptables", "-w", "-D", *rule], check=False, timeout=30)


def annotate_inventory(data: dict[str, Any], hosts: Sequence[Any], bastion: str | None) -> None:
    """Per-host vars of the lab inventory: the engine of non-docker hosts, and the ProxyJump
    of hosts behind the bastion (so the inventory works as written)."""
    lab_hosts = data["all"]["children"]["lab"]["hosts"]
    for h in hosts:
        entry = lab_hosts[h.name]
        if h.kind != "docker":
            entry["engine"] = h.kind
        # informational only (distrib reads `engine`): which engine of the matrix it runs
        entry["lab_engine"] = h.engine or h.kind
        if bastion and h.behind_bastion:
            entry["ansible_ssh_common_args"] = f"-o ProxyJump=root@{bastion}"


def etc_hosts(host_dir: str, name: str) -> str:
    """A host's own /etc/hosts naming itself (sudo looks its host name up)."""
    path = Path(host_dir) / "etc-hosts"
    path.write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost\n")
    return str(path)
