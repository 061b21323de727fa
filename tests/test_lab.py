"""The lab: pure helpers (no system access) and one integration test against real hosts."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from distrib import local, yamlio
from distrib.errors import LabError
from distrib.lab import cli, config, core, images, procs, teardown, testing
from distrib.lab.state import LabHost, LabState, current_instance, lab_dir, load_state

# ---------------------------------------------------------------------------------- addressing


@pytest.mark.parametrize(
    ("index", "name", "address", "netns", "veth"),
    [
        (1, "node1", "10.213.0.11", "distrib-node1", "dlab-n1"),
        (8, "node8", "10.213.0.18", "distrib-node8", "dlab-n8"),
        (240, "node240", "10.213.0.250", "distrib-node240", "dlab-n240"),
    ],
)
def test_host_naming(index: int, name: str, address: str, netns: str, veth: str) -> None:
    assert config.host_name(index) == name
    assert config.host_address(index) == address
    assert config.netns_name(index) == netns
    assert config.veth_names(index) == (veth, "eth0")
    assert len(config.veth_names(index)[0]) < 16  # IFNAMSIZ


@pytest.mark.parametrize(
    ("instance", "bridge", "netns_prefix", "veth_prefix", "subnet", "workstation", "lab_dir"),
    [
        # instance 0 keeps exactly the names the lab always had
        (0, "distrib0", "distrib-", "dlab-", "10.213.0.0/24", "10.213.0.1", "/var/lib/distrib-lab"),
        (
            1,
            "distrib1",
            "distrib1-",
            "dl1-",
            "10.213.1.0/24",
            "10.213.1.1",
            "/var/lib/distrib-lab-1",
        ),
        (
            9,
            "distrib9",
            "distrib9-",
            "dl9-",
            "10.213.9.0/24",
            "10.213.9.1",
            "/var/lib/distrib-lab-9",
        ),
    ],
)
def test_instance_names(
    instance: int,
    bridge: str,
    netns_prefix: str,
    veth_prefix: str,
    subnet: str,
    workstation: str,
    lab_dir: str,
) -> None:
    assert config.bridge_name(instance) == bridge
    assert config.netns_prefix(instance) == netns_prefix
    assert config.veth_prefix(instance) == veth_prefix
    assert str(config.subnet(instance)) == subnet
    assert str(config.workstation_address(instance)) == workstation
    assert config.default_lab_dir(instance) == lab_dir


@pytest.mark.parametrize(
    ("index", "instance", "address", "netns", "veth"),
    [
        (1, 1, "10.213.1.11", "distrib1-node1", "dl1-n1"),
        (3, 5, "10.213.5.13", "distrib5-node3", "dl5-n3"),
        (240, 9, "10.213.9.250", "distrib9-node240", "dl9-n240"),
    ],
)
def test_host_naming_per_instance(
    index: int, instance: int, address: str, netns: str, veth: str
) -> None:
    assert config.host_name(index) == f"node{index}"  # inventories rely on node1..nodeN
    assert config.host_address(index, instance) == address
    assert config.netns_name(index, instance) == netns
    assert config.veth_names(index, instance) == (veth, "eth0")
    assert len(veth) < 16  # IFNAMSIZ


def test_every_instance_has_distinct_names_and_subnets() -> None:
    for attr in ("bridge_name", "netns_prefix", "veth_prefix", "subnet", "default_lab_dir"):
        values = [getattr(config, attr)(i) for i in config.INSTANCES]
        assert len(set(values)) == len(values), attr
    assert config.other_instances(3) == [0, 1, 2, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("instance", [-1, 10, True, "1"])
def test_bad_instance_rejected(instance: object) -> None:
    with pytest.raises(LabError, match="0..9"):
        config.bridge_name(instance)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "env", "expected"),
    [
        (None, {}, 0),
        (None, {"DISTRIB_LAB_INSTANCE": ""}, 0),
        (None, {"DISTRIB_LAB_INSTANCE": "3"}, 3),
        (None, {"DISTRIB_LAB_INSTANCE": " 9 "}, 9),
        (2, {"DISTRIB_LAB_INSTANCE": "3"}, 2),  # the option wins over the environment
        (0, {"DISTRIB_LAB_INSTANCE": "3"}, 0),
    ],
)
def test_resolve_instance(option: int | None, env: dict[str, str], expected: int) -> None:
    assert config.resolve_instance(option, env) == expected


@pytest.mark.parametrize("text", ["10", "-1", "x", "1.0", "one"])
def test_resolve_instance_rejects_bad_env(text: str) -> None:
    with pytest.raises(LabError, match="DISTRIB_LAB_INSTANCE"):
        config.resolve_instance(None, {"DISTRIB_LAB_INSTANCE": text})


@pytest.mark.parametrize("index", [0, -1, 241])
def test_host_address_out_of_range(index: int) -> None:
    with pytest.raises(LabError, match="out of range"):
        config.host_address(index)


@pytest.mark.parametrize("count", [0, 241])
def test_host_count_rejected(count: int) -> None:
    with pytest.raises(LabError, match="--hosts"):
        config.check_host_count(count)


@pytest.mark.parametrize("path", ["/tmp", "/tmp/lab", "/var/tmp/x", "/root/.ssh/lab"])
def test_lab_dir_under_shadowed_path_rejected(path: str) -> None:
    with pytest.raises(LabError, match="replaces"):
        config.check_lab_dir(path)


@pytest.mark.parametrize("path", ["/var/lib/distrib-lab", "/tmpfoo/lab", "/srv/lab"])
def test_lab_dir_accepted(path: str) -> None:
    config.check_lab_dir(path)


@pytest.mark.parametrize(
    ("path", "instance"),
    [
        ("/var/lib/distrib-lab-1", 1),
        ("/var/lib/distrib-lab-10", 1),  # not instance 1's dir: no component in common
        ("/var/lib/distrib-lab.1", 2),
        ("/srv/lab", 4),
    ],
)
def test_lab_dir_of_instance_accepted(path: str, instance: int) -> None:
    config.check_lab_dir(path, instance)


@pytest.mark.parametrize(
    ("path", "instance"),
    [
        ("/var/lib/distrib-lab", 1),  # instance 0's dir
        ("/var/lib/distrib-lab/mine", 2),  # instance 0's cleanup would hit it
        ("/var/lib/distrib-lab-3/x", 0),
        ("/var/lib", 5),  # holds every default dir
        ("/", 0),
    ],
)
def test_lab_dir_overlapping_another_instance_rejected(path: str, instance: int) -> None:
    with pytest.raises(LabError, match="overlaps"):
        config.check_lab_dir(path, instance)


@pytest.mark.parametrize(
    ("path", "directory", "inside"),
    [
        ("/var/lib/distrib-lab", "/var/lib/distrib-lab", True),
        ("/var/lib/distrib-lab/hosts", "/var/lib/distrib-lab/", True),
        ("/var/lib/distrib-lab-1", "/var/lib/distrib-lab", False),
        ("/var/lib/distrib-lab-1/hosts", "/var/lib/distrib-lab", False),
        ("/var/lib/distrib", "/var/lib/distrib-lab", False),
        ("/anything", "/", True),
    ],
)
def test_path_within(path: str, directory: str, inside: bool) -> None:
    assert config.path_within(path, directory) is inside


def test_lab_dir_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTRIB_LAB_DIR", raising=False)
    monkeypatch.delenv("DISTRIB_LAB_INSTANCE", raising=False)
    assert lab_dir() == Path("/var/lib/distrib-lab")
    assert lab_dir(instance=4) == Path("/var/lib/distrib-lab-4")
    monkeypatch.setenv("DISTRIB_LAB_INSTANCE", "3")
    assert lab_dir() == Path("/var/lib/distrib-lab-3")
    assert lab_dir(instance=0) == Path("/var/lib/distrib-lab")  # the option wins
    monkeypatch.setenv("DISTRIB_LAB_DIR", "/srv/lab")  # the dir override wins over both
    assert lab_dir() == Path("/srv/lab")
    assert lab_dir(instance=5) == Path("/srv/lab")
    assert lab_dir("/opt/other") == Path("/opt/other")


def test_require_environment_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root on Linux"):
        core.require_environment()


def test_require_environment_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(local, "which", lambda name: None if name == "tc" else f"/bin/{name}")
    with pytest.raises(LabError, match="needs tc") as err:
        core.require_environment()
    assert "apt-get install iproute2" in str(err.value)


# ---------------------------------------------------------------------------------- shaping


@pytest.mark.parametrize(
    ("rate", "bytes_per_s"),
    [
        ("200mbit", 25_000_000),
        ("1gbit", 125_000_000),
        ("800kbit", 100_000),
        ("25mbps", 25_000_000),
        ("1.5Gbit", 187_500_000),
    ],
)
def test_parse_rate(rate: str, bytes_per_s: float) -> None:
    assert config.parse_rate(rate) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize("rate", ["", "fast", "200", "200mb", "-5mbit", "0mbit"])
def test_parse_rate_rejects(rate: str) -> None:
    with pytest.raises(LabError, match="invalid --uplink"):
        config.parse_rate(rate)


def test_tbf_args_burst_holds_a_tick_and_a_gso_segment() -> None:
    args = config.tbf_args("distrib0", "200mbit")
    assert args[:6] == ["qdisc", "replace", "dev", "distrib0", "root", "tbf"]
    assert args[args.index("rate") + 1] == "200mbit"
    assert int(args[args.index("burst") + 1]) == 250_000  # 10 ms at 25 MB/s
    slow = config.tbf_args("distrib0", "1mbit")
    assert int(slow[slow.index("burst") + 1]) == 128 * 1024  # the floor


# ---------------------------------------------------------------------------------- daemon configs


def test_sshd_config() -> None:
    text = config.sshd_config(
        address="10.213.0.11",
        host_key="/lab/hosts/node1/ssh/ssh_host_ed25519_key",
        authorized_keys="/root/.ssh/authorized_keys",
        pid_file="/lab/hosts/node1/sshd.pid",
        docker_socket="/lab/hosts/node1/docker.sock",
    )
    lines = set(text.splitlines())
    for expected in [
        "ListenAddress 10.213.0.11:22",
        "HostKey /lab/hosts/node1/ssh/ssh_host_ed25519_key",
        "PidFile /lab/hosts/node1/sshd.pid",
        "AuthorizedKeysFile /root/.ssh/authorized_keys",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "UsePAM no",
        "MaxStartups 100",
        "MaxSessions 100",
        "SetEnv DOCKER_HOST=unix:///lab/hosts/node1/docker.sock",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ]:
        assert expected in lines
    assert text.endswith("\n")


def test_dockerd_argv() -> None:
    argv = config.dockerd_argv(
        data_root="/lab/d", exec_root="/lab/e", socket="/lab/s.sock", pid_file="/lab/p",
        storage_driver="overlay2",
    )  # fmt: skip
    assert argv[0] == "dockerd"
    assert {
        "--data-root=/lab/d", "--exec-root=/lab/e", "--host=unix:///lab/s.sock",
        "--pidfile=/lab/p", "--bridge=none", "--iptables=false", "--ip-masq=false",
        "--storage-driver=overlay2",
    } == set(argv[1:])  # fmt: skip


def test_sshd_wrapper_script_mounts_then_execs_sshd() -> None:
    script = config.sshd_wrapper_script(
        [config.Bind("/lab/node1/tmp", "/tmp"), config.Bind("/lab dir/x", "/root/.ssh")],
        "/lab/node1/sshd_config",
        "node1",
    )
    lines = script.splitlines()
    assert lines[0] == "set -e"  # a failed bind must not start sshd on the shared /tmp
    assert "hostname node1" in lines
    assert "mkdir -p /run/sshd" in lines
    assert "mount --bind /lab/node1/tmp /tmp" in lines
    assert "mount --bind '/lab dir/x' /root/.ssh" in lines
    assert lines[-1] == "exec /usr/sbin/sshd -D -e -f /lab/node1/sshd_config"


def test_known_hosts_line() -> None:
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFNX node1\n"
    assert (
        config.known_hosts_line("10.213.0.11", pub)
        == "10.213.0.11 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFNX"
    )
    with pytest.raises(LabError):
        config.known_hosts_line("10.213.0.11", "garbage")


def test_inventory_round_trips_through_yamlio() -> None:
    data = config.inventory_data(
        [("node1", "10.213.0.11"), ("node2", "10.213.0.12")],
        private_key="/lab/id_ed25519",
        known_hosts="/lab/known_hosts",
    )
    loaded = yamlio.loads(yamlio.dump(data))
    assert loaded == {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": "/lab/id_ed25519",
                "known_hosts": "/lab/known_hosts",
            },
            "children": {
                "lab": {
                    "hosts": {
                        "node1": {"ansible_host": "10.213.0.11"},
                        "node2": {"ansible_host": "10.213.0.12"},
                    }
                }
            },
        }
    }


# ---------------------------------------------------------------------------------- parsers

IP_LINK_OUTPUT = """\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP mode DEFAULT group default qlen 1000\\    link/ether 06:00:ac:10:00:02 brd ff:ff:ff:ff:ff:ff
5: distrib0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc tbf state UP mode DEFAULT group default qlen 1000\\    link/ether 2a:1c:3e:7f:44:10 brd ff:ff:ff:ff:ff:ff
6: dlab-n1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master distrib0 state UP mode DEFAULT group default qlen 1000\\    link/ether 5e:63:5b:5b:0b:95 brd ff:ff:ff:ff:ff:ff link-netns distrib-node1
7: docker0: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN mode DEFAULT group default \\    link/ether 02:42:5f:43:98:d5 brd ff:ff:ff:ff:ff:ff
8: dlab-n2@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master distrib0 state UP mode DEFAULT group default qlen 1000\\    link/ether 9a:f7:60:a4:7d:a2 brd ff:ff:ff:ff:ff:ff link-netns distrib-node2
"""  # noqa: E501 - real `ip -o link` output


def test_parse_link_names_and_lab_links() -> None:
    names = config.parse_link_names(IP_LINK_OUTPUT)
    assert names == ["lo", "eth0", "distrib0", "dlab-n1", "docker0", "dlab-n2"]
    # veths first: deleting the bridge first would leave them detached but alive
    assert config.lab_links(names) == ["dlab-n1", "dlab-n2", "distrib0"]
    assert config.lab_links(names, 1) == []


# Links of instances 0, 1 and 10-lookalikes side by side on one machine.
MIXED_LINKS = [
    "lo", "eth0", "docker0",
    "distrib0", "dlab-n1", "dlab-n2",
    "distrib1", "dl1-n1", "dl1-n12",
    "distrib11", "dl11-n1",  # not an instance, but must not be claimed by instance 1
    "distrib5x", "dl5-n1x", "dl5-nx", "dlab-n", "dlab-foo", "xdl5-n1",
]  # fmt: skip


@pytest.mark.parametrize(
    ("instance", "owned"),
    [
        (0, ["dlab-n1", "dlab-n2", "distrib0"]),
        (1, ["dl1-n1", "dl1-n12", "distrib1"]),
        (5, []),
    ],
)
def test_lab_links_only_claim_their_own_instance(instance: int, owned: list[str]) -> None:
    assert config.lab_links(MIXED_LINKS, instance) == owned


MIXED_NETNS = [
    "distrib-node1", "distrib-node2", "distrib1-node1", "distrib1-node10", "distrib11-node1",
    "distrib-foo", "distrib-node", "distrib-node1x", "xdistrib-node1", "other",
]  # fmt: skip


@pytest.mark.parametrize(
    ("instance", "owned"),
    [
        (0, ["distrib-node1", "distrib-node2"]),  # not distrib1-*, not distrib-foo
        (1, ["distrib1-node1", "distrib1-node10"]),  # not distrib11-node1
        (9, []),
    ],
)
def test_lab_netns_only_claim_their_own_instance(instance: int, owned: list[str]) -> None:
    assert config.lab_netns(MIXED_NETNS, instance) == owned
    assert config.lab_netns(config.parse_netns_list(NETNS_LIST)) == [
        "distrib-node1",
        "distrib-node2",
    ]


@pytest.mark.parametrize(
    ("text", "directory", "mentioned"),
    [
        ("--pidfile=/var/lib/distrib-lab/workstation-dockerd.pid", "/var/lib/distrib-lab", True),
        ("/var/lib/distrib-lab", "/var/lib/distrib-lab", True),
        ("/var/lib/distrib-lab", "/var/lib/distrib-lab/", True),
        ("--data-root=/var/lib/distrib-lab/hosts/node1/docker", "/var/lib/distrib-lab/hosts", True),
        (
            "set -e\nmount --bind /var/lib/distrib-lab/hosts/node1/tmp /tmp",
            "/var/lib/distrib-lab",
            True,
        ),
        ("cd /var/lib/distrib-lab && ls", "/var/lib/distrib-lab", True),
        ("lowerdir=/var/lib/distrib-lab,upperdir=/x", "/var/lib/distrib-lab", True),
        # another instance's dir starts with the same characters: not ours
        ("--pidfile=/var/lib/distrib-lab-1/workstation-dockerd.pid", "/var/lib/distrib-lab", False),
        ("--data-root=/var/lib/distrib-lab-1/hosts/node1/docker", "/var/lib/distrib-lab", False),
        ("/var/lib/distrib-lab-10/x", "/var/lib/distrib-lab-1", False),
        ("/var/lib/distrib-lab.bak/x", "/var/lib/distrib-lab", False),
        ("/srv/var/lib/distrib-lab/x", "/var/lib/distrib-lab", False),
        # ...but a later, real mention after a lookalike still counts
        ("/var/lib/distrib-lab-1/a:/var/lib/distrib-lab/b", "/var/lib/distrib-lab", True),
        ("dockerd", "/var/lib/distrib-lab", False),
        ("/anything", "/", False),
    ],
)
def test_mentions_path_matches_whole_components(text: str, directory: str, mentioned: bool) -> None:
    assert config.mentions_path(text, directory) is mentioned


MOUNTINFO = r"""22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
301 22 0:4 net:[4026532290] /run/netns/distrib-node1 rw shared:100 - nsfs nsfs rw
310 22 0:60 / /var/lib/distrib-lab/hosts/node1/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/x,upperdir=/y,workdir=/z
311 22 254:0 /srv /var/lib/distrib-lab/hosts/node1/exec/with\040space rw,relatime - ext4 /dev/vda rw
312 22 0:61 / /var/lib/distrib-lab rw,relatime - tmpfs tmpfs rw
313 22 0:62 / /var/lib/distrib-lab-other/x rw,relatime - tmpfs tmpfs rw
"""  # noqa: E501 - real mountinfo lines


def test_parse_mountinfo_unescapes() -> None:
    points = config.parse_mountinfo(MOUNTINFO)
    assert points[0] == "/"
    assert "/var/lib/distrib-lab/hosts/node1/exec/with space" in points
    assert len(points) == 7


def test_mounts_under_deepest_first_and_not_siblings() -> None:
    points = config.parse_mountinfo(MOUNTINFO)
    assert config.mounts_under(points, "/var/lib/distrib-lab/") == [
        "/var/lib/distrib-lab/hosts/node1/docker/overlay2/abc/merged",
        "/var/lib/distrib-lab/hosts/node1/exec/with space",
        "/var/lib/distrib-lab",
    ]
    assert config.mounts_under(points, "/nowhere") == []


NETNS_LIST = "distrib-node1 (id: 0)\ndistrib1-node1 (id: 3)\ndistrib-node2\n\n"


def test_parse_busybox_applets() -> None:
    out = "[\n[[\nbusybox\ncat\nsh\nls\ncat\n\n"
    assert config.parse_busybox_applets(out) == ["[", "[[", "cat", "ls", "sh"]


# ---------------------------------------------------------------------------------- state


def _host(name: str = "node1") -> LabHost:
    return LabHost(
        name=name, address="10.213.0.11", netns="distrib-node1", veth_root="dlab-n1",
        veth_host="eth0", host_dir="/lab/hosts/node1", sshd_pid=10, sshd_config="/c",
        dockerd_pid=11, docker_socket="/lab/hosts/node1/docker.sock", data_root="/d",
        exec_root="/e", storage_driver="overlay2", tmp_dir="/t", var_tmp_dir="/vt",
        ssh_dir="/s",
    )  # fmt: skip


def _state() -> LabState:
    return LabState(
        lab_dir="/lab", bridge="distrib0", workstation_address="10.213.0.1",
        uplink="200mbit", client_key="/lab/id_ed25519", known_hosts="/lab/known_hosts",
        inventory="/lab/inventory.yaml", forward_rule=True, workstation_dockerd_pid=None,
        hosts=(_host(),),
    )  # fmt: skip


def test_state_json_round_trip() -> None:
    state = _state()
    assert LabState.from_json(state.to_json()) == state
    assert state.host("node1").docker_host == "unix:///lab/hosts/node1/docker.sock"
    with pytest.raises(LabError, match="no lab host 'node9'"):
        state.host("node9")


def test_state_rejects_unknown_and_garbage() -> None:
    raw = json.loads(_state().to_json())
    raw["hosts"][0]["surprise"] = 1
    with pytest.raises(LabError, match="surprise"):
        LabState.from_json(json.dumps(raw), "x.json")
    with pytest.raises(LabError, match="unreadable"):
        LabState.from_json("{not json", "x.json")


def test_load_state_absent(tmp_path: Path) -> None:
    assert load_state(tmp_path) is None


def test_exec_argv_enters_the_hosts_namespaces() -> None:
    argv = core.exec_argv(_host(), ["docker", "images"])
    assert argv[:3] == ["nsenter", "-t", "10"]
    assert {"-n", "-m"} <= set(argv)
    assert argv[-3:] == ["DOCKER_HOST=unix:///lab/hosts/node1/docker.sock", "docker", "images"]
    with pytest.raises(LabError):
        core.exec_argv(_host(), [])


def test_state_of_another_instance_is_refused() -> None:
    teardown.check_owner(_state(), Path("/lab"), 0)
    teardown.check_owner(None, Path("/lab"), 3)
    with pytest.raises(LabError, match="bridge distrib0, not lab instance 3"):
        teardown.check_owner(_state(), Path("/lab"), 3)


def test_other_instances_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The input of the workstation dockerd rule, from a fake /var/lib and /run (no real lab).
    monkeypatch.setattr(config, "default_lab_dir", lambda i: str(tmp_path / f"lab-{i}"))
    monkeypatch.setattr(teardown, "LOCK_DIR", tmp_path / "run")
    monkeypatch.setattr(teardown, "bridge_exists", lambda i: i == 7)
    assert teardown.other_instances_in_use(2) == [7]
    (tmp_path / "lab-4").mkdir()
    (tmp_path / "lab-4" / "state.json").write_text("{}")
    (tmp_path / "lab-5").mkdir()  # a dir without state (a lab that is down) is not in use
    assert teardown.other_instances_in_use(2) == [4, 7]
    assert teardown.other_instances_in_use(4) == [7]  # never counts itself
    with procs.flock(teardown.instance_lock(9)):  # an up/down of instance 9 in progress
        # flock is per open file: probe from another process, as another instance would.
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            assert pool.apply(teardown.other_instances_in_use, (2,)) == [4, 7, 9]
    assert teardown.other_instances_in_use(2) == [4, 7]


def test_ssh_argv_is_strict() -> None:
    argv = core.ssh_argv(_state(), "node1", ["docker", "info"])
    assert "StrictHostKeyChecking=yes" in argv
    assert "UserKnownHostsFile=/lab/known_hosts" in argv
    assert argv[-3:] == ["root@10.213.0.11", "docker", "info"]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_tree_cpu_seconds_counts_reaped_and_live_descendants(tmp_path: Path) -> None:
    # The root shell itself only forks and waits: every CPU second of its tree is its
    # children's, the first one reaped (in its cutime), the second still running.
    busy = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"
    script = f"({busy}); ({busy}; exec sleep 60) & wait"
    root = local.spawn(["sh", "-c", script], stdout=None, stderr=None)
    live: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while True:  # until the second child has finished its loop (it is `sleep` now)
            table = procs.cpu_table()
            live = [p for p, (ppid, _) in table.items() if ppid == root.pid]
            if live and procs.cmdline(live[0])[:1] == ["sleep"]:
                break
            assert time.monotonic() < deadline, "the busy children did not finish"
            time.sleep(0.2)
        reaped = table[root.pid][1]  # root's own (≈ 0) + the first child's, reaped
        total = procs.tree_cpu_seconds([root.pid], table)
        assert reaped > 0.05
        assert total - reaped > 0.05  # the live child's loop counts too
        assert procs.tree_cpu_seconds([root.pid, live[0]], table) == total  # each counted once
        assert procs.tree_cpu_seconds([0], table) == 0.0  # a podman host has no daemon pid
    finally:
        procs.terminate([root.pid, *live], grace=0)


# ---------------------------------------------------------------------------------- images


def test_busybox_rootfs_tar_is_deterministic(tmp_path: Path) -> None:
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF fake busybox")
    first = images.busybox_rootfs_tar(str(fake), ["sh", "ls"])
    assert first == images.busybox_rootfs_tar(str(fake), ["sh", "ls"])
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["tmp"].mode == 0o1777
    assert "etc/passwd" in members


def test_dockerfile_has_a_layer_per_spec() -> None:
    big = next(s for s in images.IMAGES if s.tag == "demo/big:1.0")
    text = images.dockerfile(big)
    assert text.startswith("FROM distrib/busybox:latest\n")
    assert text.count("COPY layer") == len(big.layers) == 3
    web = next(s for s in images.IMAGES if s.tag == "demo/web:1.0")
    assert "COPY extra/ /" in images.dockerfile(web)


# ---------------------------------------------------------------------------------- CLI wiring


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distrib")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_instance_option_on_every_subcommand() -> None:
    parser = _parser()
    for argv in (["up"], ["down"], ["status"], ["exec", "node1", "--", "true"], ["images"]):
        assert parser.parse_args(["lab", *argv]).instance is None  # then env, then 0
        # right after the subcommand (for exec, everything after HOST is the command)
        args = parser.parse_args(["lab", argv[0], "--instance", "7", *argv[1:]])
        assert args.instance == 7


@pytest.mark.parametrize("value", ["10", "-1", "x"])
def test_instance_option_rejects(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["lab", "status", "--instance", value])
    assert "0..9" in capsys.readouterr().err


def test_register_wires_subcommands() -> None:
    parser = _parser()
    args = parser.parse_args(["lab", "up", "--hosts", "8", "--uplink", "200mbit"])
    assert (args.func, args.hosts, args.uplink, args.inventory) == (cli.cmd_up, 8, "200mbit", None)
    args = parser.parse_args(["lab", "exec", "node1", "--", "docker", "images", "-q"])
    assert args.func is cli.cmd_exec
    assert args.host == "node1"
    assert args.command[-3:] == ["docker", "images", "-q"]
    args = parser.parse_args(["lab", "images", "--bench"])
    assert args.func is cli.cmd_images and args.bench and not args.rebuild
    for name, func in [("down", cli.cmd_down), ("status", cli.cmd_status)]:
        assert parser.parse_args(["lab", name]).func is func


# ---------------------------------------------------------------------------------- integration


def _skip_reason() -> str | None:
    return testing.unavailable_reason()


def _sh(cmd: str, **kwargs: object) -> local.Completed:
    return local.run(["sh", "-c", cmd], check=False, timeout=300, **kwargs)  # type: ignore[arg-type]


def _ssh(state: LabState, host: str, command: str) -> local.Completed:
    return local.run(core.ssh_argv(state, host, [command]), check=False, timeout=60)


def _assert_clean(root: Path, instance: int) -> None:
    netns = os.listdir("/run/netns") if Path("/run/netns").exists() else []
    assert config.lab_netns(netns, instance) == []
    links = config.parse_link_names(local.run(["ip", "-o", "link", "show"]).stdout)
    assert config.lab_links(links, instance) == []
    mounts = config.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    assert config.mounts_under(mounts, str(root)) == []
    leftover = procs.daemons_mentioning(str(root))
    if teardown.other_instances_in_use(instance):  # they keep the shared workstation dockerd
        leftover -= {teardown.workstation_dockerd(root)}
    assert leftover == set()
    br = config.bridge_name(instance)
    rule = ["iptables", "-w", "-C", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT"]
    assert not local.run(rule, check=False).ok
    assert load_state(root) is None


def _require_lab() -> None:
    reason = _skip_reason()
    if reason:
        if os.environ.get("DISTRIB_REQUIRE_LAB") == "1":
            pytest.fail(f"lab required but unavailable: {reason}")
        pytest.skip(reason)


@pytest.mark.lab
def test_lab_end_to_end() -> None:
    _require_lab()
    # The instance of $DISTRIB_LAB_INSTANCE (0 by default), like the CLI calls below.
    # A session lab of the suite may be up: put the same shape back afterwards (keys and host
    # keys survive a re-up, so its inventory and known_hosts stay valid).
    instance = current_instance()
    before = load_state()
    root = lab_dir()
    try:
        state = core.up(3)
        images.build_images()
        assert [h.name for h in state.hosts] == ["node1", "node2", "node3"]

        # Real OpenSSH, strict host keys from the generated known_hosts, the generated key.
        for h in state.hosts:
            out = _ssh(state, h.name, "docker info --format '{{.DockerRootDir}}'; hostname")
            assert out.ok, out.stderr
            assert out.stdout.split() == [h.data_root, h.name]

        # Each host has its own image store.
        base = " ".join(core.ssh_argv(state, "node1", ["docker", "load"]))
        load = _sh(f"docker save demo/web:1.0 | {base}")
        assert load.ok, load.stderr
        assert core.exec_in("node1", ["docker", "image", "inspect", "demo/web:1.0"]).ok
        assert not core.exec_in("node2", ["docker", "image", "inspect", "demo/web:1.0"]).ok

        # /tmp is private to each host.
        name = f"/tmp/distrib-lab-probe-{uuid.uuid4().hex}"
        assert _ssh(state, "node1", f"echo remote > {name}").ok
        assert core.exec_in("node1", ["cat", name]).stdout == "remote\n"
        assert not Path(name).exists()
        assert not core.exec_in("node2", ["test", "-e", name]).ok

        # /root/.ssh holds only authorized_keys; the workstation's client key is unreadable.
        assert _ssh(state, "node1", "ls -A /root/.ssh").stdout.split() == ["authorized_keys"]
        assert _ssh(state, "node1", f"cat {state.client_key}").stdout == ""
        # sudo-less default socket is the host's own dockerd too.
        out = _ssh(state, "node1", "DOCKER_HOST= docker images -q demo/web:1.0")
        assert out.ok and out.stdout.strip()

        # Hosts reach each other through the bridge (FORWARD rule).
        # (ssh-keyscan, not this Python: a checkout under /tmp is hidden inside the hosts)
        node1 = config.host_address(1, instance)
        scan = core.exec_in("node2", ["ssh-keyscan", "-T", "5", "-t", "ed25519", node1])
        assert scan.ok and "ssh-ed25519" in scan.stdout, scan.stderr

        # The CLI passes the command's exit code through.
        cli_exec = [sys.executable, "-m", "distrib.lab", "exec", "node3", "--", "sh", "-c"]
        assert local.run([*cli_exec, "exit 7"], check=False).returncode == 7
        assert local.run([sys.executable, "-m", "distrib.lab", "status"], check=False).ok

        # A killed session: every daemon SIGKILLed, namespaces and mounts left behind.
        targets = [p for h in state.hosts for p in (h.sshd_pid, h.dockerd_pid)]
        targets += procs.daemons_mentioning(f"{root}/hosts/")  # the hosts' containerd too
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):  # a containerd may follow its dockerd
                os.kill(pid, 9)
        assert [r.healthy for r in core.status()] == [False, False, False]
        known_before = Path(state.known_hosts).read_text()
        assert local.run([sys.executable, "-m", "distrib.lab", "status"], check=False).returncode
        state = core.up(3)
        assert all(r.healthy for r in core.status())
        assert Path(state.known_hosts).read_text() == known_before  # identities survive
        assert _ssh(state, "node2", "docker info -f '{{.Images}}'").stdout.strip() == "0"
    finally:
        core.down()
    core.down()
    _assert_clean(root, instance)
    assert local.run([sys.executable, "-m", "distrib.lab", "status"], check=False).returncode == 1
    if before is not None:
        core.up(len(before.hosts), uplink=before.uplink, inventory=before.inventory)


def _test_instances() -> tuple[int, int]:
    # Instances 8 and 9 by default: never the suite's own lab (instance 0, or
    # $DISTRIB_LAB_INSTANCE), which the other integration tests share for the whole session.
    text = os.environ.get("DISTRIB_LAB_TEST_INSTANCES", "8,9")
    first, second = (config.check_instance(int(t)) for t in text.split(","))
    assert first != second, text
    return first, second


@pytest.mark.lab
def test_two_instances_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    _require_lab()
    # One dir per instance (a shared $DISTRIB_LAB_DIR is refused for two instances).
    monkeypatch.delenv("DISTRIB_LAB_DIR", raising=False)
    keep, drop = _test_instances()
    before = {i: load_state(instance=i) for i in (keep, drop)}
    roots = {i: lab_dir(instance=i) for i in (keep, drop)}
    try:
        # `drop` first: if no workstation dockerd answered, `drop` starts it, and its `down`
        # must still leave it running for `keep`.
        states = {i: core.up(1, instance=i) for i in (drop, keep)}
        for i, state in states.items():
            (host,) = state.hosts
            assert (host.name, host.address) == ("node1", config.host_address(1, i))
            assert host.netns == config.netns_name(1, i)
            assert host.host_dir.startswith(str(roots[i]) + "/")
            assert state.bridge == config.bridge_name(i)
            out = _ssh(state, "node1", "hostname; docker info --format '{{.DockerRootDir}}'")
            assert out.ok, out.stderr
            assert out.stdout.split() == ["node1", host.data_root]

        core.down(instance=drop)
        _assert_clean(roots[drop], drop)

        # `keep` is untouched: daemons answer, ssh works, its names and rule are all there.
        assert [r.healthy for r in core.status(instance=keep)] == [True]
        state = states[keep]
        out = _ssh(state, "node1", "docker info --format '{{.DockerRootDir}}'")
        assert out.ok and out.stdout.strip() == state.hosts[0].data_root, out.stderr
        assert procs.docker_ping(state.hosts[0].docker_socket)
        assert procs.docker_ping(core.WORKSTATION_SOCKET)  # shared: never stopped under keep
        netns = config.parse_netns_list(local.run(["ip", "netns", "list"]).stdout)
        assert config.lab_netns(netns, keep) == [state.hosts[0].netns]
        links = config.parse_link_names(local.run(["ip", "-o", "link", "show"]).stdout)
        assert config.lab_links(links, keep) == [state.hosts[0].veth_root, state.bridge]
        br = state.bridge
        rule = ["iptables", "-w", "-C", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT"]
        assert local.run(rule, check=False).ok
    finally:
        core.down(instance=drop)
        core.down(instance=keep)
    for i in (keep, drop):
        _assert_clean(roots[i], i)
        prior = before[i]
        if prior is not None:  # a session lab was up there: put the same shape back
            core.up(len(prior.hosts), uplink=prior.uplink, inventory=prior.inventory, instance=i)
