"""Preparing the lab's hosts before their daemons start: the bridge, each host's namespace,
directories, keys and sshd_config, and the commands that start its sshd and engine daemon."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from distrib import local
from distrib.lab import config, engines
from distrib.lab.state import LabHost
from distrib.lab.teardown import CLIENT_KEY, run_checked, try_run


def probe_storage_driver(root: Path) -> str:
    """overlay2 when an overlay mount works under the lab dir (the data roots live there)."""
    probe = root / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    for sub in ("lower", "upper", "work", "merged"):
        (probe / sub).mkdir(parents=True)
    opts = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
    ok = try_run(["mount", "-t", "overlay", "overlay", "-o", opts, str(probe / "merged")])
    if ok:
        try_run(["umount", str(probe / "merged")])
    shutil.rmtree(probe, ignore_errors=True)
    return "overlay2" if ok else "vfs"


def setup_bridge(instance: int, uplink: str | None) -> None:
    br = config.bridge_name(instance)
    address = f"{config.workstation_address(instance)}/24"
    run_checked(["ip", "link", "add", br, "type", "bridge"], "creating bridge")
    run_checked(["ip", "addr", "add", address, "dev", br], "bridge address")
    run_checked(["ip", "link", "set", br, "up"], "bridge up")
    # A local dockerd sets FORWARD policy DROP, and with bridge-nf-call-iptables=1 frames
    # bridged between two lab hosts traverse FORWARD: accept them explicitly.
    run_checked(["iptables", "-w", "-I", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT"], "iptables")
    if uplink:
        # The root qdisc of the bridge device only sees what the workstation itself sends
        # into the bridge; frames forwarded between ports (host to host) leave through the
        # veth ends and are not shaped. Measured on this machine (python TCP sender, 4 s of
        # 64 KiB writes, receiver in node1): workstation -> node1 195 Mbit/s with 200mbit,
        # 964 Mbit/s with 1gbit, 18 Gbit/s unshaped; node2 -> node1 19-20 Gbit/s in all three.
        run_checked(["tc", *config.tbf_args(br, uplink)], "tc qdisc (uplink shaping)")


def host_paths(root: Path, index: int, instance: int) -> LabHost:
    name = config.host_name(index)
    hd = root / "hosts" / name
    veth_root, veth_host = config.veth_names(index, instance)
    return LabHost(
        name=name,
        address=config.host_address(index, instance),
        netns=config.netns_name(index, instance),
        veth_root=veth_root,
        veth_host=veth_host,
        host_dir=str(hd),
        sshd_pid=0,
        sshd_config=str(hd / "ssh" / "sshd_config"),
        dockerd_pid=0,
        docker_socket=str(hd / "docker.sock"),
        data_root=str(hd / "docker"),
        exec_root=str(hd / "exec"),
        storage_driver="",
        tmp_dir=str(hd / "tmp"),
        var_tmp_dir=str(hd / "var-tmp"),
        ssh_dir=str(hd / "root-ssh"),
    )


def prepare_host(
    host: LabHost,
    bridge: str,
    client_pub: str,
    authorized_keys: str = "/root/.ssh/authorized_keys",
    password_user: str | None = None,
) -> str:
    """Directories, host key, sshd_config and network of one host; returns its known_hosts line."""
    hd = Path(host.host_dir)
    for d, mode in (
        (hd / "ssh", 0o700),
        (Path(host.tmp_dir), 0o1777),
        (Path(host.var_tmp_dir), 0o1777),
        (Path(host.ssh_dir), 0o700),
        (Path(host.data_root), 0o711),
        (Path(host.exec_root), 0o700),
    ):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)  # mkdir's mode is filtered by the umask; /tmp needs its sticky bit
    key = keypair(Path(host.host_dir).parent.parent / "keys" / f"{host.name}_ed25519", host.name)
    auth = Path(host.ssh_dir) / "authorized_keys"
    auth.write_text(client_pub)
    os.chmod(auth, 0o600)
    Path(host.sshd_config).write_text(
        config.sshd_config(
            address=host.address,
            host_key=str(key),
            # Resolved inside the host's mount namespace, where /root/.ssh is host.ssh_dir:
            # sshd's StrictModes then checks /root/.ssh, not the lab dir's parents (which may
            # be a world-writable /tmp for a custom --dir).
            authorized_keys=authorized_keys,
            pid_file=str(hd / "sshd.pid"),
            docker_socket=host.docker_socket,
            password_user=password_user,
        )
    )
    ns = host.netns
    run_checked(["ip", "netns", "add", ns], f"{host.name}: ip netns add")
    run_checked(["ip", "link", "add", host.veth_root, "type", "veth",
          "peer", "name", host.veth_host, "netns", ns], f"{host.name}: veth")  # fmt: skip
    run_checked(["ip", "link", "set", host.veth_root, "master", bridge, "up"], "veth on bridge")
    run_checked(
        ["ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", host.veth_host], "address"
    )
    run_checked(["ip", "-n", ns, "link", "set", host.veth_host, "up"], f"{host.name}: link up")
    run_checked(["ip", "-n", ns, "link", "set", "lo", "up"], f"{host.name}: lo up")
    return config.known_hosts_line(host.address, Path(f"{key}.pub").read_text())


def keypair(path: Path, comment: str) -> Path:
    """An ed25519 key pair without passphrase at `path`, generated unless both halves exist."""
    if path.is_file() and Path(f"{path}.pub").is_file():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in (path, Path(f"{path}.pub")):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    run_checked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
         f"ssh-keygen {comment}")  # fmt: skip
    return path


def daemon_json(directory: Path, res: engines.Resolution) -> str | None:
    """A daemon.json for an engine with the containerd image store (None otherwise)."""
    if not res.spec.containerd_store:
        return None
    path = directory / "daemon.json"
    path.write_text(engines.daemon_json(res.spec))
    return str(path)


def spawn_logged(
    cmd: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> local.Process[bytes]:
    with open(log, "wb") as fh:
        # A new session: the daemons must outlive the CLI process that started them.
        return local.spawn(cmd, stdout=fh, stderr=fh, new_session=True, env=env)


def _shell_rc_binds(root: Path) -> list[config.Bind]:
    """A stock root ~/.bashrc inside every host: the hosts share the workstation's /root, and
    bash sources ~/.bashrc for every command sshd runs. A workstation rc that starts version
    managers (pyenv init: ~120 ms here) would otherwise be paid by each remote command, a
    cost no real host of the inventory has."""
    rc = Path("/root/.bashrc")
    if not rc.is_file():
        return []
    stock = root / "root-bashrc"
    if not stock.exists():
        default = Path("/usr/share/base-files/dot.bashrc")
        stock.write_text(default.read_text() if default.is_file() else "")
        os.chmod(stock, 0o644)
    return [config.Bind(str(stock), str(rc))]


def sshd_command(
    host: LabHost, root: Path, extra: Sequence[config.Bind] = (), docker: bool = True
) -> list[str]:
    binds = [
        config.Bind(host.tmp_dir, "/tmp"),
        config.Bind(host.var_tmp_dir, "/var/tmp"),
        config.Bind(host.ssh_dir, "/root/.ssh"),
        # sudo drops DOCKER_HOST, so the default socket path must be this host's dockerd too.
        *([config.Bind(host.docker_socket, "/run/docker.sock")] if docker else []),
        *extra,
        # The workstation's client key must not be readable from a host, or host-to-host
        # tests would pass on a key a real host never has.
        config.Bind("/dev/null", str(root / CLIENT_KEY)),
        *_shell_rc_binds(root),
    ]
    script = config.sshd_wrapper_script(binds, host.sshd_config, host.name)
    # --uts too: `hostname` inside a host says node1, not the workstation's name.
    return ["nsenter", f"--net=/run/netns/{host.netns}", "unshare", "--mount", "--uts",
            "--propagation", "private", "sh", "-c", script]  # fmt: skip
