"""Pure helpers of the lab: names, addresses, config texts and parsers of `ip`/mountinfo output.

Nothing here touches the system, so every function is unit-tested from literal inputs.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from distrib.errors import LabError

BRIDGE = "distrib0"
NETNS_PREFIX = "distrib-"
VETH_PREFIX = "dlab-"  # root-side veth ends: dlab-n1, dlab-n2, ... (IFNAMSIZ is 16)
SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
WORKSTATION_ADDRESS = ipaddress.IPv4Address("10.213.0.1")
FIRST_HOST_OFFSET = 10  # node K gets 10.213.0.(10+K)
MAX_HOSTS = 240  # .11 .. .250 stay inside the /24
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"

# Program -> Debian package that ships it, for the "missing program" message.
REQUIRED_PROGRAMS: dict[str, str] = {
    "ip": "iproute2",
    "tc": "iproute2",
    "iptables": "iptables",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "busybox": "busybox-static",
}


def host_name(index: int) -> str:
    """Inventory name of the 1-based host `index`: node1, node2, ..."""
    return f"node{index}"


def host_address(index: int) -> str:
    """Lab address of the 1-based host `index` (10.213.0.11 for node1)."""
    if not 1 <= index <= MAX_HOSTS:
        raise LabError(f"host index {index} out of range 1..{MAX_HOSTS}")
    return str(SUBNET.network_address + FIRST_HOST_OFFSET + index)


def netns_name(index: int) -> str:
    """Network namespace of host `index`: distrib-node1, ..."""
    return f"{NETNS_PREFIX}{host_name(index)}"


def veth_names(index: int) -> tuple[str, str]:
    """(root-side end on the bridge, end inside the host namespace)."""
    return f"{VETH_PREFIX}n{index}", "eth0"


def check_host_count(n_hosts: int) -> None:
    """Reject a host count the /24 cannot hold."""
    if not 1 <= n_hosts <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}, got {n_hosts}")


# Inside a host these paths are replaced by bind mounts, so a lab dir below them would be
# hidden from the host's own sshd (its config, keys and the bind sources live in the lab dir).
_SHADOWED = ("/tmp", "/var/tmp", "/root/.ssh", "/run/docker.sock")


def check_lab_dir(path: str) -> None:
    """Reject a lab dir that a host's private mounts would hide (e.g. one under /tmp)."""
    for shadowed in _SHADOWED:
        if path == shadowed or path.startswith(shadowed + "/"):
            raise LabError(
                f"lab dir {path} is under {shadowed}, which each lab host replaces",
                hint="use the default /var/lib/distrib-lab or another dir outside /tmp",
            )


_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
_RATE_FACTOR = {
    # tc units: "bit" suffixes are bits per second, "bps" suffixes are BYTES per second.
    "bit": 1 / 8,
    "kbit": 1000 / 8,
    "mbit": 1_000_000 / 8,
    "gbit": 1_000_000_000 / 8,
    "bps": 1,
    "kbps": 1000,
    "mbps": 1_000_000,
    "gbps": 1_000_000_000,
}


def parse_rate(rate: str) -> float:
    """Bytes per second of a tc rate such as `200mbit` (bits) or `25mbps` (bytes)."""
    match = _RATE.match(rate.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise LabError(f"invalid --uplink rate {rate!r}: use a tc rate such as 200mbit or 1gbit")
    return float(match.group(1)) * _RATE_FACTOR[match.group(2)]


def tbf_args(device: str, rate: str) -> list[str]:
    """`tc` arguments that shape traffic leaving `device` to `rate` with a token bucket.

    The burst must hold at least one tick of traffic (HZ may be 100) and a full 64 KiB GSO
    segment, otherwise tbf stalls or drops; 10 ms of tokens with a 128 KiB floor does both.
    """
    bytes_per_s = parse_rate(rate)
    burst = max(int(bytes_per_s / 100), 128 * 1024)
    return [
        "qdisc", "replace", "dev", device, "root", "tbf",
        "rate", rate.strip().lower(), "burst", str(burst), "latency", "50ms",
    ]  # fmt: skip


def sshd_config(
    *,
    address: str,
    host_key: str,
    authorized_keys: str,
    pid_file: str,
    docker_socket: str,
) -> str:
    """Text of one lab host's sshd_config: key-only root login on its own address."""
    return "\n".join(
        [
            "# Written by `distrib lab up`: one lab host's own sshd.",
            f"ListenAddress {address}:22",
            f"HostKey {host_key}",
            f"PidFile {pid_file}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            # No PAM: nothing in a lab host is a real login, and PAM would read the
            # workstation's /etc/security and session modules.
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "AcceptEnv LANG LC_*",
            # Tests open many parallel sessions to one host; the defaults (10 / 10) refuse them.
            "MaxStartups 100",
            "MaxSessions 100",
            f"SetEnv DOCKER_HOST=unix://{docker_socket}",
            f"Subsystem sftp {SFTP_SERVER}",
            "",
        ]
    )


def dockerd_argv(
    *,
    data_root: str,
    exec_root: str,
    socket: str,
    pid_file: str,
    storage_driver: str,
) -> list[str]:
    """dockerd arguments of one lab host: private store, own socket, no networking of its own."""
    return [
        "dockerd",
        f"--data-root={data_root}",
        f"--exec-root={exec_root}",
        f"--host=unix://{socket}",
        f"--pidfile={pid_file}",
        # Lab hosts only store and load images: no docker0 bridge and no iptables rules,
        # which would fight with the workstation's dockerd over the same tables.
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        f"--storage-driver={storage_driver}",
    ]


@dataclass(frozen=True)
class Bind:
    """A bind mount made inside a lab host's private mount namespace."""

    source: str
    target: str


def sshd_wrapper_script(binds: Sequence[Bind], config_path: str, hostname: str) -> str:
    """The `sh -c` script run in fresh private mount and UTS namespaces before exec'ing sshd.

    Mounts made here are invisible to the workstation and to other hosts, and vanish with
    the namespace when sshd and its sessions exit, so no cleanup is needed for them.
    """
    lines = ["set -e", f"hostname {shlex.quote(hostname)}", "mkdir -p /run/sshd"]
    lines += [f"mount --bind {shlex.quote(b.source)} {shlex.quote(b.target)}" for b in binds]
    lines.append(f"exec {SSHD} -D -e -f {shlex.quote(config_path)}")
    return "\n".join(lines)


def known_hosts_line(address: str, host_public_key: str) -> str:
    """One known_hosts line `ADDRESS TYPE BASE64` from an ssh-keygen `.pub` file's text."""
    fields = host_public_key.split()
    if len(fields) < 2:
        raise LabError(f"not an OpenSSH public key: {host_public_key[:40]!r}")
    return f"{address} {fields[0]} {fields[1]}"


def inventory_data(
    hosts: Iterable[tuple[str, str]], *, private_key: str, known_hosts: str
) -> dict[str, Any]:
    """Ansible-style inventory of the lab: all.vars + group `lab` with (name, address) hosts."""
    return {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": private_key,
                "known_hosts": known_hosts,
            },
            "children": {
                "lab": {"hosts": {name: {"ansible_host": addr} for name, addr in hosts}},
            },
        }
    }


def parse_netns_list(output: str) -> list[str]:
    """Names from `ip netns list` output (lines like `distrib-node1 (id: 0)`)."""
    names = []
    for line in output.splitlines():
        fields = line.split()
        if fields:
            names.append(fields[0])
    return names


def parse_link_names(output: str) -> list[str]:
    """Interface names from `ip -o link show` output (`3: dlab-n1@if2: <...> ...`)."""
    names = []
    for line in output.splitlines():
        fields = line.split(":", 2)
        if len(fields) < 3:
            continue
        names.append(fields[1].strip().split("@", 1)[0])
    return names


def lab_links(names: Iterable[str]) -> list[str]:
    """The links the lab owns among `names`: its veth ends, then the bridge."""
    owned = [n for n in names if n.startswith(VETH_PREFIX)]
    return owned + [n for n in names if n == BRIDGE]


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[str]:
    """Mount points (field 5) of /proc/self/mountinfo text, unescaped, in file order."""
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            points.append(_unescape_mountinfo(fields[4]))
    return points


def mounts_under(mount_points: Iterable[str], directory: str) -> list[str]:
    """Mount points at or below `directory`, deepest first (the order to unmount them)."""
    root = directory.rstrip("/") or "/"
    inside = {p for p in mount_points if p == root or p.startswith(root + "/")}
    return sorted(inside, key=lambda p: (-p.count("/"), p))


def busybox_passwd() -> str:
    """/etc/passwd of the busybox test image."""
    return "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"


def busybox_group() -> str:
    """/etc/group of the busybox test image."""
    return "root:x:0:\nnogroup:x:65534:\n"


def parse_busybox_applets(output: str) -> list[str]:
    """Applet names from `busybox --list` (one per line), without busybox itself."""
    return sorted(
        {a.strip() for a in output.splitlines() if a.strip() and "/" not in a} - {"busybox"}
    )
