"""Pure helpers of the lab: names, addresses, config texts and parsers of `ip`/mountinfo output.

Nothing here touches the system, so every function is unit-tested from literal inputs.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distrib.errors import LabError

# Lab instances let several labs share this machine (one per engineer running tests at the same
# time). Instance 0 keeps the names the lab always had; instance N>0 gets its own bridge,
# namespace and veth prefixes, /24 and lab dir. Every name below derives from the instance.
ENV_INSTANCE = "DISTRIB_LAB_INSTANCE"
MAX_INSTANCE = 9
INSTANCES = range(MAX_INSTANCE + 1)
DEFAULT_DIR = "/var/lib/distrib-lab"  # instance 0; instance N uses DEFAULT_DIR + "-N"
FIRST_HOST_OFFSET = 10  # node K gets 10.213.N.(10+K)
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


def check_instance(instance: int) -> int:
    """`instance` itself if it is a valid lab instance (0..9), else LabError."""
    if isinstance(instance, bool) or not isinstance(instance, int) or instance not in INSTANCES:
        raise LabError(f"lab instance must be an integer 0..{MAX_INSTANCE}, got {instance!r}")
    return instance


def resolve_instance(option: int | None, environ: Mapping[str, str]) -> int:
    """The lab instance: `option` (--instance) if given, else $DISTRIB_LAB_INSTANCE, else 0."""
    if option is not None:
        return check_instance(option)
    text = environ.get(ENV_INSTANCE, "").strip()
    if not text:
        return 0
    if not text.isdigit() or int(text) not in INSTANCES:
        raise LabError(f"${ENV_INSTANCE}={text!r}: must be an integer 0..{MAX_INSTANCE}")
    return int(text)


def bridge_name(instance: int = 0) -> str:
    """Bridge of the instance's lab: distrib0, distrib1, ..."""
    return f"distrib{check_instance(instance)}"


def netns_prefix(instance: int = 0) -> str:
    """Prefix of the instance's network namespaces: `distrib-` (0), `distribN-` (N>0)."""
    return "distrib-" if check_instance(instance) == 0 else f"distrib{instance}-"


def veth_prefix(instance: int = 0) -> str:
    """Prefix of the instance's root-side veth ends: `dlab-` (0), `dlN-` (N>0).

    IFNAMSIZ is 16 (15 usable): `dl9-n240` leaves room to spare.
    """
    return "dlab-" if check_instance(instance) == 0 else f"dl{instance}-"


def subnet(instance: int = 0) -> ipaddress.IPv4Network:
    """The instance's /24: 10.213.N.0/24."""
    return ipaddress.IPv4Network(f"10.213.{check_instance(instance)}.0/24")


def workstation_address(instance: int = 0) -> ipaddress.IPv4Address:
    """The workstation's address on the instance's bridge: 10.213.N.1."""
    return subnet(instance).network_address + 1


def default_lab_dir(instance: int = 0) -> str:
    """Default lab dir: /var/lib/distrib-lab (0), /var/lib/distrib-lab-N (N>0)."""
    return DEFAULT_DIR if check_instance(instance) == 0 else f"{DEFAULT_DIR}-{instance}"


def other_instances(instance: int) -> list[int]:
    """Every instance but `instance`, in order."""
    check_instance(instance)
    return [i for i in INSTANCES if i != instance]


def host_name(index: int) -> str:
    """Inventory name of the 1-based host `index`: node1, node2, ... (in every instance)."""
    return f"node{index}"


def host_address(index: int, instance: int = 0) -> str:
    """Lab address of the 1-based host `index` (10.213.N.11 for node1 of instance N)."""
    if not 1 <= index <= MAX_HOSTS:
        raise LabError(f"host index {index} out of range 1..{MAX_HOSTS}")
    return str(subnet(instance).network_address + FIRST_HOST_OFFSET + index)


def netns_name(index: int, instance: int = 0) -> str:
    """Network namespace of host `index`: distrib-node1 (instance 0), distrib3-node1 (3)."""
    return f"{netns_prefix(instance)}{host_name(index)}"


def veth_names(index: int, instance: int = 0) -> tuple[str, str]:
    """(root-side end on the bridge, end inside the host namespace)."""
    return f"{veth_prefix(instance)}n{index}", "eth0"


def check_host_count(n_hosts: int) -> None:
    """Reject a host count the /24 cannot hold."""
    if not 1 <= n_hosts <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}, got {n_hosts}")


# Inside a host these paths are replaced by bind mounts, so a lab dir below them would be
# hidden from the host's own sshd (its config, keys and the bind sources live in the lab dir).
_SHADOWED = ("/tmp", "/var/tmp", "/root/.ssh", "/run/docker.sock")


def check_lab_dir(path: str, instance: int = 0) -> None:
    """Reject a lab dir that a host's private mounts would hide (e.g. one under /tmp), or one
    that overlaps another instance's default dir (its cleanup would then hit this lab)."""
    for shadowed in _SHADOWED:
        if path == shadowed or path.startswith(shadowed + "/"):
            raise LabError(
                f"lab dir {path} is under {shadowed}, which each lab host replaces",
                hint="use the default /var/lib/distrib-lab or another dir outside /tmp",
            )
    for other in other_instances(instance):
        theirs = default_lab_dir(other)
        if path_within(path, theirs) or path_within(theirs, path):
            raise LabError(
                f"lab dir {path} overlaps {theirs}, the dir of lab instance {other}",
                hint=f"use the default {default_lab_dir(instance)} or a dir of its own",
            )


def path_within(path: str, directory: str) -> bool:
    """True if `path` is `directory` or below it, by whole components (a-1 is not in a)."""
    root = directory.rstrip("/") or "/"
    path = path.rstrip("/") or "/"
    return root == "/" or path == root or path.startswith(root + "/")


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
    password_user: str | None = None,
) -> str:
    """Text of one lab host's sshd_config: key-only root login on its own address;
    `password_user` may also log in with a password (`lab up --password-login`, issue 17)."""
    password_block = (
        [f"Match User {password_user}", "    PasswordAuthentication yes", ""]
        if password_user
        else []
    )
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
            *password_block,  # a Match block ends the file: it covers what follows it
        ]
    )


def dockerd_argv(
    *,
    data_root: str,
    exec_root: str,
    socket: str,
    pid_file: str,
    storage_driver: str,
    insecure_registries: Sequence[str] = (),
    binary: str = "dockerd",
    config_file: str | None = None,
) -> list[str]:
    """dockerd arguments of one lab host: private store, own socket, no networking of its own.

    `insecure_registries` (host:port or CIDR): plain-HTTP registries this dockerd may use
    (docker allows only 127.0.0.0/8 by default; a lab registry lives on a lab address).
    `binary`: a fetched engine's dockerd; `config_file`: its daemon.json (the containerd image
    store); an empty `storage_driver` leaves the choice to dockerd."""
    return [
        binary,
        *([f"--config-file={config_file}"] if config_file else []),
        f"--data-root={data_root}",
        f"--exec-root={exec_root}",
        f"--host=unix://{socket}",
        f"--pidfile={pid_file}",
        # Lab hosts only store and load images: no docker0 bridge and no iptables rules,
        # which would fight with the workstation's dockerd over the same tables.
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        *([f"--storage-driver={storage_driver}"] if storage_driver else []),
        *(f"--insecure-registry={r}" for r in insecure_registries),
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


def is_lab_netns(name: str, instance: int = 0) -> bool:
    """True if `name` is a host namespace of the instance (`distrib-node3`, `distrib1-node3`).

    An exact pattern, not a prefix test: `distrib-` must not claim `distrib1-node1` or some
    other tool's `distrib-foo`.
    """
    return re.fullmatch(re.escape(netns_prefix(instance)) + r"node[0-9]+", name) is not None


def lab_netns(names: Iterable[str], instance: int = 0) -> list[str]:
    """The instance's host namespaces among `names`, sorted."""
    return sorted(n for n in names if is_lab_netns(n, instance))


def lab_links(names: Iterable[str], instance: int = 0) -> list[str]:
    """The links the instance owns among `names`: its veth ends, then its bridge."""
    names = list(names)
    veth = re.compile(re.escape(veth_prefix(instance)) + r"n[0-9]+")
    owned = [n for n in names if veth.fullmatch(n)]
    return owned + [n for n in names if n == bridge_name(instance)]


# Characters that continue a path word: `/var/lib/distrib-lab` followed by `-1` or `.bak` is
# another path, followed by `/`, the end, a space, `,` or `"` it is this one.
_PATH_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~+@")


def mentions_path(text: str, directory: str) -> bool:
    """True if `text` (one argv element, maybe a whole `sh -c` script) names `directory` or a
    path below it. Whole components only: `/var/lib/distrib-lab` is NOT mentioned by
    `--pidfile=/var/lib/distrib-lab-1/x.pid` (another instance's dir)."""
    root = directory.rstrip("/")
    if not root:
        return False
    start = text.find(root)
    while start >= 0:
        end = start + len(root)
        before_ok = start == 0 or text[start - 1] not in _PATH_WORD
        after_ok = end == len(text) or text[end] == "/" or text[end] not in _PATH_WORD
        if before_ok and after_ok:
            return True
        start = text.find(root, start + 1)
    return False


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
