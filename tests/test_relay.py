"""Relay fan-out, pure and local tiers (issue 9): tree planning from tables, the command and
parser pairs, and the relaying shell scripts run for real under dash (POSIX sh) with local
stand-ins for `ssh child` (integration against real hosts: test_relay_lab.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from distrib import commands, engines
from distrib.engine import HostResult
from distrib.relay.run import tree_text
from distrib.relay.tree import Node, draw, plan_tree

SH = shutil.which("dash") or "/bin/sh"


def nodes(spec: str) -> list[Node]:
    """`a b:g1 c:g1! d!` -> hosts in order; `:GROUP`, `!` = cannot relay."""
    out = []
    for word in spec.split():
        relay = not word.endswith("!")
        word = word.rstrip("!")
        name, _, group = word.partition(":")
        out.append(Node(name, group or None, relay))
    return out


@pytest.mark.parametrize(
    ("spec", "width", "roots", "expected"),
    [
        # no group: the workstation feeds ONE host (issue 16), breadth-first below
        ("a", 3, 1, {"a": None}),
        ("a b c", 3, 1, {"a": None, "b": "a", "c": "a"}),
        ("a b c d e", 2, 1, {"a": None, "b": "a", "c": "a", "d": "b", "e": "b"}),
        ("a b c d", 1, 1, {"a": None, "b": "a", "c": "b", "d": "c"}),
        # ... unless the play asks for more roots (relay_roots)
        ("a b c", 3, 3, {"a": None, "b": None, "c": None}),
        ("a b c d e", 2, 2, {"a": None, "b": None, "c": "a", "d": "a", "e": "b"}),
        # one group: entered once, whatever the width or roots
        ("a:s b:s c:s d:s", 3, 1, {"a": None, "b": "a", "c": "a", "d": "a"}),
        ("a:s b:s c:s d:s", 3, 3, {"a": None, "b": "a", "c": "a", "d": "a"}),
        (
            "a:s b:s c:s d:s e:s f:s",
            2,
            1,
            {"a": None, "b": "a", "c": "a", "d": "b", "e": "b", "f": "c"},
        ),
        # two sites: each entered once, relays stay within their site
        (
            "a:x b:y c:x d:y e:x",
            3,
            1,
            {"a": None, "b": None, "c": "a", "e": "a", "d": "b"},
        ),
        # hosts that cannot relay become leaves; relay-capable ones go up the tree
        ("a:s! b:s c:s!", 1, 1, {"b": None, "a": "b", "c": None}),
        ("a:s! b:s c:s d:s!", 1, 1, {"b": None, "c": "b", "a": "c", "d": None}),
        ("a! b c!", 3, 1, {"b": None, "a": "b", "c": "b"}),
        # nobody can relay: the workstation feeds everyone
        ("a:s! b:s!", 3, 1, {"a": None, "b": None}),
        ("a! b! c!", 3, 1, {"a": None, "b": None, "c": None}),
        # grouped and ungrouped hosts mixed
        ("a b:s c d:s", 1, 1, {"a": None, "c": "a", "b": None, "d": "b"}),
        ("a:s b c d", 3, 2, {"a": None, "b": None, "c": None, "d": "b"}),
    ],
)
def test_plan_tree(spec: str, width: int, roots: int, expected: dict[str, str | None]) -> None:
    tree = plan_tree(nodes(spec), width, roots)
    assert dict(tree.parent) == expected
    for name, up in expected.items():  # within a group, and never more than width children
        if up is not None:
            assert tree.parent[name] is None or nodes_group(spec, name) == nodes_group(spec, up)
        assert len(tree.children(name)) <= width


@pytest.mark.parametrize("hosts", [4, 16, 32, 64])
def test_ungrouped_inventory_is_entered_once(hosts: int) -> None:
    """Issue 16: without relay_group the workstation sends the payload once (one root)."""
    tree = plan_tree([Node(f"n{i}") for i in range(1, hosts + 1)], 3)
    assert tree.roots == ["n1"]


def nodes_group(spec: str, name: str) -> str | None:
    return next(n.group for n in nodes(spec) if n.name == name)


def test_sixteen_hosts_one_site_is_shallow_and_single_entry() -> None:
    tree = plan_tree([Node(f"n{i}", "site") for i in range(1, 17)], 3)
    assert tree.roots == ["n1"]
    assert max(tree.depth(h) for h in tree.order) == 4  # 1 + 3 + 9 + 3
    assert tree.relays() == ["n1", "n2", "n3", "n4", "n5"]


@pytest.mark.parametrize(("width", "roots"), [(0, 1), (-1, 1), (3, 0)])
def test_plan_tree_rejects_bad_width(width: int, roots: int) -> None:
    with pytest.raises(ValueError):
        plan_tree(nodes("a"), width, roots)


def test_draw() -> None:
    tree = plan_tree(nodes("a:s b:s c:s d:s"), 2)
    assert draw(tree.parent, tree.order) == (
        "workstation\n└── a\n    ├── b\n    │   └── d\n    └── c"
    )


def test_tree_text_from_results_shows_who_fed_whom() -> None:
    results = [
        HostResult("a", "changed", fed_by="workstation"),
        HostResult("b", "changed", fed_by="a"),
        HostResult("c", "ok"),  # up to date: not in the tree
        HostResult("d", "failed", fed_by="b"),
    ]
    assert tree_text(results) == (
        "workstation\n└── a (changed)\n    └── b (changed)\n        └── d (failed)"
    )


# --- command and parser pairs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "address", "relay", "receive", "tmp"),
    [
        (
            "address=10.0.0.5\nuser=root\nhas_ssh=1\nhas_mkfifo=1\nhas_tee=1\nhas_tail=1\n"
            "has_sha256sum=1\ntee_p=1\ntmp_avail_kb=1000\n",
            "10.0.0.5", True, True, 1024000,
        ),
        # busybox tee has no -p: receive only
        (
            "address=10.0.0.6\nuser=ops\nhas_ssh=1\nhas_mkfifo=1\nhas_tee=1\nhas_tail=1\n"
            "has_sha256sum=1\n",
            "10.0.0.6", False, True, None,
        ),
        ("address=\nuser=root\n", "", False, False, None),
    ],
)  # fmt: skip
def test_parse_relay_probe(
    stdout: str, address: str, relay: bool, receive: bool, tmp: int | None
) -> None:
    facts = commands.parse_relay_probe(stdout)
    assert (facts.address, facts.can_relay, facts.can_receive, facts.tmp_avail) == (
        address, relay, receive, tmp,
    )  # fmt: skip


def test_relay_probe_runs_under_dash(tmp_path: Path) -> None:
    env = {**os.environ, "SSH_CONNECTION": "10.0.0.9 5555 10.0.0.5 22"}
    out = subprocess.run(
        [SH, "-c", commands.relay_probe(str(tmp_path / "not" / "yet"))],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    facts = commands.parse_relay_probe(out.stdout)
    assert facts.address == "10.0.0.5" and facts.tmp_avail and facts.can_receive


@pytest.mark.parametrize(
    ("stdout", "started", "received", "size"),
    [
        ("received=\nsize=0\n", False, None, 0),
        ("started=1\nreceived=\nsize=1048576\n", True, None, 1048576),
        ("started=1\nreceived=0\nsize=3282944\n", True, 0, 3282944),
        ("started=1\nreceived=1\nsize=12\n", True, 1, 12),
    ],
)
def test_parse_relay_watch(stdout: str, started: bool, received: int | None, size: int) -> None:
    assert commands.parse_relay_watch(stdout) == commands.RelayWatch(started, received, size)


def test_relay_options_quote_the_command_for_authorized_keys() -> None:
    options = commands.relay_options("10.0.0.1", 'cd /x && echo "$a"')
    assert options == 'from="10.0.0.1",restrict,command="cd /x && echo \\"$a\\""'


@pytest.mark.parametrize(
    ("address", "command"),
    [
        ("10.0.0.1", "a\nb"),  # a newline ends the authorized_keys line
        ("10.0.0.1", 'echo \\"'),  # sshd would unquote it differently
        ('10.0.0.1",command="x', "true"),  # the address cannot smuggle options in
        ("", "true"),
    ],
)
def test_relay_options_refuse_what_cannot_be_represented(address: str, command: str) -> None:
    with pytest.raises(ValueError):
        commands.relay_options(address, command)


def test_relay_ssh_checks_host_keys_and_uses_only_the_run_key() -> None:
    argv = commands.relay_ssh("10.0.0.2", 2222, "ops", "/t/d/relay.key", "/t/d/relay.known_hosts")
    text = " ".join(argv)
    for option in (
        "-F /dev/null", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/t/d/relay.known_hosts",
        "IdentitiesOnly=yes", "BatchMode=yes", "-i /t/d/relay.key", "IdentityAgent=none",
        "ForwardAgent=no", "-p 2222", "-l ops",
    ):  # fmt: skip
        assert option in text
    assert argv[-3:] == ["--", "10.0.0.2", "distrib-relay"]
    with pytest.raises(ValueError):
        commands.relay_ssh("h", 22, "u", "/t/my dir/key", "/t/kh")


# --- the scripts, run for real under dash -------------------------------------------------------


def sh(
    script: str, *, stdin: bytes = b"", cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:  # noqa: E501
    return subprocess.run(
        [SH, "-c", script], input=stdin, capture_output=True, cwd=cwd, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_relay_receive_writes_own_copy_and_forwards_to_every_child(tmp_path: Path) -> None:
    d = tmp_path / "distrib.abc"
    d.mkdir(mode=0o700)
    data = os.urandom(3 * 1024 * 1024 + 17)
    kids = [["sh", "-c", f"cat > {tmp_path}/child{i}"] for i in (1, 2, 3)]
    out = sh(commands.relay_receive(str(d), str(d / "images.tar.gz.part"), kids), stdin=data)
    assert out.returncode == 0, out.stderr
    assert (d / "images.tar.gz.part").read_bytes() == data
    for i in (1, 2, 3):
        assert (tmp_path / f"child{i}").read_bytes() == data
        assert (d / f"relay.status.{i}").read_text().strip() == "0"
    assert (d / "relay.received").read_text().strip() == "0"
    left = sorted(p.name for p in d.iterdir())
    assert left == [
        "images.tar.gz.part",
        "relay.err.1",
        "relay.err.2",
        "relay.err.3",
        "relay.received",
        "relay.started",
        "relay.status.1",
        "relay.status.2",
        "relay.status.3",
    ]  # fmt: skip  (no fifo, no pid file once done)


@pytest.mark.parametrize("child", [["false"], ["sh", "-c", "head -c 1000 > /dev/null"]])
def test_a_child_that_dies_never_stops_the_others(tmp_path: Path, child: list[str]) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    data = os.urandom(2 * 1024 * 1024)
    kids = [["sh", "-c", f"cat > {tmp_path}/ok1"], child, ["sh", "-c", f"cat > {tmp_path}/ok2"]]
    out = sh(commands.relay_receive(str(d), str(d / "p"), kids), stdin=data)
    assert (d / "p").read_bytes() == data
    assert (tmp_path / "ok1").read_bytes() == data and (tmp_path / "ok2").read_bytes() == data
    if child == ["false"]:
        assert (d / "relay.status.2").read_text().strip() == "1"
    assert out.returncode in (0, 1)  # tee's status; the copies are what is checked


def test_a_closed_dir_refuses_a_late_receiver(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    assert sh(commands.relay_stop(str(d))).returncode == 0
    out = sh(commands.relay_receive(str(d), str(d / "p"), []), stdin=b"late bytes")
    assert out.returncode == 4 and not (d / "p").exists() and not (d / "relay.pid").exists()


def test_relay_stop_kills_a_running_pipeline_and_waits(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    proc = subprocess.Popen(
        [SH, "-c", commands.relay_receive(str(d), str(d / "p"), [["sleep", "600"]])],
        stdin=subprocess.PIPE, start_new_session=True,  # like sshd: a session leader
    )  # fmt: skip
    try:
        for _ in range(100):
            if (d / "relay.started").exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert sh(commands.relay_stop(str(d))).returncode == 0
        assert proc.wait(timeout=10) != 0
    finally:  # the whole group: a child blocked opening the fifo outlives its shell
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_relay_watch_and_send_and_append(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    (d / "full").write_bytes(b"0123456789")
    (d / "p").write_bytes(b"0123")
    watch = commands.parse_relay_watch(
        sh(commands.relay_watch(str(d), str(d / "p"), 0)).stdout.decode()
    )
    assert watch == commands.RelayWatch(False, None, 4)
    out = sh(
        commands.relay_send(
            str(d / "full"), 4, ["sh", "-c", commands.relay_append(str(d), str(d / "p"))]
        )
    )
    assert out.returncode == 0 and (d / "p").read_bytes() == b"0123456789"


def test_reset_leaves_nothing_of_an_earlier_run(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    for name in ("relay.closed", "relay.received", "relay.key", "x.part"):
        (d / name).write_text("old")
    assert sh(commands.relay_reset(str(d), str(d / "x.part"))).returncode == 0
    assert list(d.iterdir()) == []


# --- authorized_keys: added for the run, removed whatever happened ---------------------------------

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEUA7gC507a8r+9Brw+QXQM8kP5Jv8mLNEozYdrkmStl"


def test_authorize_then_unauthorize_restores_the_file(tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    ssh.mkdir(mode=0o700)
    ak = ssh / "authorized_keys"
    original = "ssh-ed25519 AAAAexisting admin@site"  # no trailing newline
    ak.write_text(original)
    ak.chmod(0o600)
    env = {"HOME": str(tmp_path)}
    options = commands.relay_options(
        "10.0.0.1", commands.relay_append("/var/tmp/d", "/var/tmp/d/p")
    )
    assert sh(commands.relay_authorize(options, KEY, "abc123"), env=env).returncode == 0
    lines = ak.read_text().splitlines()
    assert lines[0] == original and len(lines) == 2
    assert lines[1].startswith('expiry-time="') and lines[1].endswith(f"{KEY} distrib-relay:abc123")
    assert 'from="10.0.0.1",restrict,command="umask 077' in lines[1]
    # a second authorization (re-parenting) replaces the run's entry
    assert sh(commands.relay_authorize(options, KEY, "abc123"), env=env).returncode == 0
    assert len(ak.read_text().splitlines()) == 2
    assert sh(commands.relay_unauthorize("abc123"), env=env).returncode == 0
    assert ak.read_text() == original + "\n"
    assert oct(ak.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in ssh.iterdir()) == ["authorized_keys"]


def test_authorize_creates_a_private_file_and_drops_expired_entries(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    ak = tmp_path / ".ssh" / "authorized_keys"
    assert (
        sh(
            commands.relay_authorize('from="h",restrict,command="true"', KEY, "run1"), env=env
        ).returncode
        == 0
    )
    assert oct(ak.stat().st_mode & 0o777) == "0o600"
    stale = (
        f'expiry-time="202001010000Z",from="x",restrict,command="true" {KEY} distrib-relay:old\n'
    )
    ak.write_text(ak.read_text() + stale)
    assert sh(commands.relay_unauthorize("run1"), env=env).returncode == 0
    assert ak.read_text() == ""  # this run's entry and the expired one are gone


def test_unauthorize_without_a_file_is_fine(tmp_path: Path) -> None:
    assert sh(commands.relay_unauthorize("abc"), env={"HOME": str(tmp_path)}).returncode == 0
    assert not (tmp_path / ".ssh").exists()


# --- playbook keys, host vars and the executor's batch hook ---------------------------------------


def test_playbook_fanout_keys_and_relay_group_var() -> None:
    from distrib.errors import ConfigError
    from distrib.plan import make_plan
    from distrib.playbook import Playbook
    from tests.test_plan import H, Inv

    book = Playbook.from_text(
        "- hosts: all\n  images: [demo/web:1.0]\n  fanout: relay\n  relay_width: 2\n", "b.yaml"
    )
    play = book.plays[0]
    assert (play.fanout, play.relay_width) == ("relay", 2)
    assert Playbook.from_text("- hosts: all\n  images: [a:1]\n").plays[0].fanout == "direct"
    plan = make_plan(Inv(H("a", {"relay_group": "paris"}), H("b")), book)
    assert [h.relay_group for h in plan.plays[0].hosts] == ["paris", None]
    for bad in ("  fanout: tree\n", "  relay_width: 0\n"):
        with pytest.raises(ConfigError) as err:
            Playbook.from_text("- hosts: all\n  images: [a:1]\n" + bad, "b.yaml")
        assert "b.yaml:3" in str(err.value)


def test_executor_batch_hook_runs_relay_batches_whole() -> None:
    import threading

    from distrib.engine import Job
    from distrib.executor import run_plan
    from distrib.plan import make_plan
    from distrib.playbook import Playbook
    from tests.test_plan import H, Inv

    book = Playbook.from_text(
        "- hosts: all\n  images: [a:1]\n  serial: 1\n  fanout: relay\n"
        "- hosts: all\n  images: [a:1]\n"
    )
    plan = make_plan(Inv(H("a"), H("b")), book)
    seen: list[tuple[str, ...]] = []

    def whole(play_plan, batch, job, connect, progress, cancel):  # type: ignore[no-untyped-def]
        if play_plan.play.fanout != "relay":
            return None
        seen.append(tuple(h.name for h in batch))
        return [HostResult(h.name, "changed", fed_by="workstation") for h in batch]

    def step(host, job, connect, progress, cancel):  # type: ignore[no-untyped-def]
        return HostResult(host.name, "ok")

    run = run_plan(
        plan, {0: Job(()), 1: Job(())}, lambda t: None,  # type: ignore[arg-type,return-value]
        cancel=threading.Event(), step=step, batch_step=whole,
    )  # fmt: skip
    assert seen == [("a",), ("b",)]  # serial: 1 -> one relay tree per batch
    assert [r.status for r in run.plays[0].hosts] == ["changed", "changed"]
    assert [r.status for r in run.plays[1].hosts] == ["ok", "ok"]


# --- tree members on any engine, become or not (issue 15 item 2) --------------------------------

PROBED = (
    "address=10.0.0.5\nuser=ops\nhas_ssh=1\nhas_mkfifo=1\nhas_tee=1\nhas_tail=1\n"
    "has_sha256sum=1\ntee_p=1\ntmp_avail_kb=1000\n"
)


@pytest.mark.parametrize(
    ("become", "stdout", "state"),
    [
        (False, PROBED, "nopasswd"),
        (True, f"{PROBED}\n{commands.PART_MARK}\nbecome=nopasswd\n", "nopasswd"),
        (True, f"{PROBED}\n{commands.PART_MARK}\nbecome=sudo: a password is required\n", "password"),
        (True, f"{PROBED}\n{commands.PART_MARK}\nbecome=nosudo\n", "nosudo"),
        (True, f"{PROBED}\n{commands.PART_MARK}\nbecome=ops is not in the sudoers file\n", "denied"),
    ],
)  # fmt: skip
def test_parse_member_probe(become: bool, stdout: str, state: str) -> None:
    engine = engines.Engine(engines.PODMAN, ("podman",), become=engines.Become() if become else None)
    relay, sudo = engine.parse_member_probe(stdout)
    assert (relay.address, relay.user, relay.can_relay, sudo) == ("10.0.0.5", "ops", True, state)


def test_parse_member_probe_cut_short() -> None:
    engine = engines.Engine(engines.CONTAINERD, ("ctr",), become=engines.Become())
    with pytest.raises(ValueError):
        engine.parse_member_probe(PROBED)


@pytest.mark.parametrize(("rule", "state"), [("exit 0", "nopasswd"), ("echo 'sudo: a password is required' >&2; exit 1", "password")])  # fmt: skip
def test_member_probe_runs_under_dash(tmp_path: Path, rule: str, state: str) -> None:
    """The relay facts and sudo's answer in one command (a stand-in sudo on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text(f"#!/bin/sh\n{rule}\n")
    (bin_dir / "sudo").chmod(0o755)
    env = {**os.environ, "SSH_CONNECTION": "10.0.0.9 5555 10.0.0.5 22",
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}  # fmt: skip
    engine = engines.Engine(engines.DOCKER, ("docker",), become=engines.Become("root"))
    out = subprocess.run([SH, "-c", engine.member_probe(str(tmp_path))],
                         capture_output=True, text=True, env=env, check=True)  # fmt: skip
    relay, sudo = engine.parse_member_probe(out.stdout)
    assert relay.address == "10.0.0.5" and relay.can_receive and sudo == state


def test_member_layers_only_for_docker_and_as_the_engine_user() -> None:
    assert engines.Engine().member_layers(False) == commands.host_layers(["docker"], False)
    become = engines.Engine(become=engines.Become("root")).member_layers(True)
    assert become is not None and become.startswith("sudo -n -u root -- /bin/sh -c ")
    for kind in (engines.PODMAN, engines.CONTAINERD):
        assert engines.Engine(kind, engines.DEFAULT_ARGV[kind]).member_layers(False) is None


def test_member_load_of_plain_docker_is_the_load_distrib_always_ran() -> None:
    sha = "a" * 64
    load = commands.load(["docker"], "/t/d/images.tar.zst", "zstd", True)
    assert engines.Engine().member_load(
        "/t/d/images.tar.zst.part", "/t/d/images.tar.zst", sha, "zstd", True, ()
    ) == commands.checked_load("/t/d/images.tar.zst.part", "/t/d/images.tar.zst", sha, load)


FAKE_SUDO = """#!/bin/sh
s=0
while [ $# -gt 0 ]; do case "$1" in --) shift; break;; -S) s=1;; -u|-p) shift;; esac; shift; done
if [ $s = 1 ]; then IFS= read -r pw; printf '%s' "$pw" > "$OUT/password"; fi
exec "$@"
"""
FAKE_PODMAN = """#!/bin/sh
case "$1" in
load) cat > "$OUT/loaded"; echo "Loaded image: docker.io/demo/web:1.0";;
tag) echo "tag $2 $3" >> "$OUT/engine";;
esac
"""
FAKE_CTR = """#!/bin/sh
[ "$1" = -n ] && { echo "namespace $2" >> "$OUT/engine"; shift 2; }
case "$1 $2" in
"images import") cat > "$OUT/loaded"; echo "unpacking docker.io/demo/web:1.0 (sha256:abc)...done";;
"images label") echo "label $3 $4" >> "$OUT/engine";;
esac
"""


@pytest.mark.parametrize(
    ("kind", "codec", "native", "engine_log"),
    [
        (engines.PODMAN, "none", True, ["tag docker.io/demo/web:1.0 localhost/demo/web:1.0"]),
        (engines.CONTAINERD, "gzip", False,
         ["namespace ns1", "namespace ns1", f"label docker.io/demo/web:1.0 {engines.PINNED}"]),
    ],
)  # fmt: skip
def test_member_load_with_a_sudo_password_runs_under_dash(
    tmp_path: Path, kind: str, codec: str, native: bool, engine_log: list[str]
) -> None:
    """The relayed copy checked, renamed and loaded as the become user: the password line
    (the command's stdin) reaches sudo only, the archive reaches the engine intact (unpacked
    in the pipe when the engine cannot read its codec), podman's name and containerd's
    namespace and pin label as in direct mode; the password is nowhere in the command."""
    import gzip

    bin_dir, out_dir = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out_dir.mkdir()
    for name, text in (("sudo", FAKE_SUDO), ("podman", FAKE_PODMAN), ("ctr", FAKE_CTR)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    archive = os.urandom(200_000)
    data = gzip.compress(archive) if codec == "gzip" else archive
    part, final = tmp_path / "images.tar.part", tmp_path / "images.tar"
    part.write_bytes(data)
    import hashlib

    engine = engines.Engine(kind, engines.DEFAULT_ARGV[kind], "ns1", engines.Become(), True)
    command = engine.member_load(
        str(part), str(final), hashlib.sha256(data).hexdigest(), codec, native, {"gzip"}
    )
    assert "s3cret" not in command
    env = {**os.environ, "OUT": str(out_dir), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run([SH, "-c", command], input=b"s3cret\n", capture_output=True, env=env)
    assert out.returncode == 0, out.stderr
    digest, _ = commands.parse_checked_load(out.stdout.decode())
    assert digest == hashlib.sha256(data).hexdigest()
    assert (out_dir / "password").read_text() == "s3cret"
    assert (out_dir / "loaded").read_bytes() == archive
    assert (out_dir / "engine").read_text().splitlines() == engine_log
    assert final.exists() and not part.exists()


@pytest.mark.parametrize(
    ("facts", "relay", "known", "codecs", "why"),
    [
        ("engine=podman\nengine_version=5.4.2\nhas_gzip=1", PROBED, True, ("gzip", "gzip"), ""),
        ("engine=podman\nengine_version=5.4.2", PROBED, True, ("zstd", "zstd"), ""),
        ("engine=containerd\nengine_version=2.1.9\nhas_zstd=1", PROBED, True, ("zstd", "zstd"), ""),
        # compression auto gave this host a codec of its own: its own archive, directly
        ("engine=docker\nengine_version=20.10.24", PROBED, True, ("zstd", "gzip"),
         "loads gzip, the tree's stream is zstd"),
        ("engine=containerd\nengine_version=2.1.9", PROBED, True, ("zstd", "zstd"),
         "containerd cannot load the tree's zstd stream"),
        ("engine=docker\nengine_version=28.5.2", "address=10.0.0.5\n", True, ("gzip", "gzip"),
         "no sha256sum on the host"),
        ("engine=docker\nengine_version=28.5.2", PROBED.replace("1000", "10"), True,
         ("gzip", "gzip"), "staging space too small"),
        ("engine=docker\nengine_version=28.5.2", PROBED, False, ("gzip", "gzip"),
         "its host key is not in the workstation's known_hosts"),
    ],
)  # fmt: skip
def test_why_a_probed_host_goes_direct(
    facts: str, relay: str, known: bool, codecs: tuple[str, str], why: str
) -> None:
    from distrib.relay.member import why_direct

    parsed = commands.parse_probe(facts)
    tree, own = codecs
    assert why_direct(parsed, commands.parse_relay_probe(relay), known, tree, own, 100_000) == why


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({}, ""),
        ({"engine": "podman"}, ""),
        ({"engine": "containerd", "become": engines.Become()}, ""),
        ({"transfer": "stream"}, "transfer: stream"),
        ({"remote_tmp": "/var/my tmp"}, "remote_tmp unusable in ssh options"),
    ],
)
def test_which_hosts_can_never_be_members(changes: dict[str, object], why: str) -> None:
    from dataclasses import replace

    from distrib.plan import HostPlan
    from distrib.relay.member import unfit
    from distrib.target import Target

    host = HostPlan("a", Target("a", "a.lab"), ("docker",), "/var/tmp")
    assert unfit(replace(host, **changes)) == why  # type: ignore[arg-type]
    local = replace(host, target=replace(host.target, connection="local"))
    assert unfit(local) == "connection local"
