"""Faults injected for real on the lab (issue 4): killed sshd, downed links, stopped engines,
corrupted copies, tiny staging filesystems, SIGINT, bad credentials, hostile input.

Slow transfers are made by shaping the lab bridge with tc (tbf) for the duration of a test.
Tests that break a host restore the lab afterwards (`lab.restore()`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT, Lab, distrib, local_id

pytestmark = pytest.mark.lab

IMAGES = ("demo/web:1.0", "demo/worker:1.0")
# compression none: ~12 MB on the wire, ~5 s at 20 Mbit/s: long enough to hit mid-upload
SLOW_PLAY = (
    "- name: slow\n  hosts: lab\n  images: [demo/web:1.0, demo/worker:1.0]\n"
    "  compression: none\n"
)



@contextmanager
def shaped(lab: Lab, rate: str = "20mbit") -> Iterator[None]:
    """Slow the workstation->hosts link down for the duration of the block."""
    bridge = lab.state().bridge
    subprocess.run(
        ["tc", "qdisc", "replace", "dev", bridge, "root", "tbf", "rate", rate,
         "burst", "32kbit", "latency", "400ms"],
        check=True,
    )
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", bridge, "root"], check=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def staged_bytes(lab: Lab, host: str) -> int:
    out = lab.exec(host, "sh", "-c", "cat /var/tmp/distrib.*/*.part 2>/dev/null | wc -c", check=False)
    return int(out.stdout.strip() or 0)


def wait_for(predicate: object, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_run(book: Path, inventory: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "distrib", "run", str(book), "-i", str(inventory), "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (json.loads(out) if out.strip() else {}), err


def assert_no_temp_files(lab: Lab) -> None:
    for host in lab.hosts:
        assert lab.temp_files(host) == [], f"temp files left on {host}"


def test_sshd_killed_mid_upload_then_rerun_resumes(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    book = write(tmp_path, "play.yaml", SLOW_PLAY)
    with shaped(lab):
        proc = start_run(book, lab.inventory)
        wait_for(lambda: staged_bytes(lab, "node1") > 1_000_000, what="upload to node1 to start")
        # kill node1's per-connection sshd processes (children of its listener): connection cut
        subprocess.run(["pkill", "-KILL", "-P", str(lab.state().host("node1").sshd_pid)], check=False)
        rc, result, err = finish(proc)
    hosts = result["plays"][0]["hosts"]
    assert rc == 4, err
    assert hosts["node1"]["status"] == "unreachable", hosts["node1"]
    assert hosts["node2"]["status"] == hosts["node3"]["status"] == "changed"
    assert lab.image_id("node1", "demo/web:1.0") is None, "nothing half-transferred is loaded"
    kept = staged_bytes(lab, "node1")
    assert kept > 1_000_000, "the partial upload is kept for the next run"
    rerun = distrib("run", str(book), "-i", str(lab.inventory), "--json")
    assert rerun.returncode == 0, rerun.stderr
    node1 = json.loads(rerun.stdout)["plays"][0]["hosts"]["node1"]
    assert node1["status"] == "changed" and node1["resumed_from"] >= kept - 4 * 1024 * 1024
    assert lab.image_id("node1", "demo/web:1.0") == local_id("demo/web:1.0")
    assert_no_temp_files(lab)


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below `root` (a lab host's sshd listener)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        pid, ppid, *args = line.split(None, 2)
        children.setdefault(int(ppid), []).append((int(pid), args[0] if args else ""))
    found, todo = [], [root]
    while todo:
        for pid, args in children.get(todo.pop(), []):
            found.append((pid, args))
            todo.append(pid)
    return found


def test_remote_command_killed_mid_upload_is_a_failure_not_a_lost_link(lab: Lab, tmp_path: Path) -> None:
    """The receiving `cat` on node1 is killed (the link stays up): node1 failed with a message
    that says so (not unreachable), its staging dir is removed, the others are unaffected."""
    lab.remove_images(*IMAGES)
    book = write(tmp_path, "play.yaml", SLOW_PLAY)
    with shaped(lab):
        proc = start_run(book, lab.inventory)
        wait_for(lambda: staged_bytes(lab, "node1") > 1_000_000, what="upload to node1 to start")
        listener = lab.state().host("node1").sshd_pid
        cats = [pid for pid, args in descendants(listener) if args.split(" ", 1)[0] == "cat"]
        assert cats, descendants(listener)
        for pid in cats:
            os.kill(pid, signal.SIGKILL)
        rc, result, err = finish(proc)
    hosts = result["plays"][0]["hosts"]
    assert rc == 2, err
    assert hosts["node1"]["status"] == "failed", hosts["node1"]
    message = hosts["node1"]["message"]
    assert "killed by a signal" in message or "137" in message, message
    assert hosts["node2"]["status"] == hosts["node3"]["status"] == "changed"
    assert lab.image_id("node1", "demo/web:1.0") is None
    assert_no_temp_files(lab)


def test_link_down_mid_run_times_out_others_unaffected(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    inv = lab.inventory_with(tmp_path, extra_vars={"io_timeout": 3})
    book = write(tmp_path, "play.yaml", SLOW_PLAY)
    veth = lab.state().host("node2").veth_root
    try:
        with shaped(lab):
            proc = start_run(book, inv)
            wait_for(lambda: staged_bytes(lab, "node2") > 500_000, what="upload to node2")
            subprocess.run(["ip", "link", "set", veth, "down"], check=True)
            started = time.monotonic()
            rc, result, err = finish(proc)
            elapsed = time.monotonic() - started
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    hosts = result["plays"][0]["hosts"]
    assert rc == 4, err
    assert hosts["node2"]["status"] == "unreachable"
    assert "lost" in hosts["node2"]["message"]
    assert hosts["node1"]["status"] == hosts["node3"]["status"] == "changed"
    assert elapsed < 60, "a dead link must not hang the run"


def test_dockerd_stopped_fails_with_engine_message(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    book = write(tmp_path, "play.yaml", SLOW_PLAY.replace("none", "gzip"))
    pid = lab.state().host("node3").dockerd_pid
    subprocess.run(["kill", "-TERM", str(pid)], check=True)
    try:
        wait_for(lambda: lab.exec("node3", "docker", "info", check=False).returncode != 0, what="dockerd to stop")
        proc = distrib("run", str(book), "-i", str(lab.inventory), "--json")
        hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
        assert proc.returncode == 2, proc.stderr
        assert hosts["node3"]["status"] == "failed"
        assert "container engine does not answer" in hosts["node3"]["message"]
        assert "Cannot connect to the Docker daemon" in hosts["node3"]["message"]
        assert hosts["node1"]["status"] == hosts["node2"]["status"] == "changed"
    finally:
        lab.restore()


@pytest.mark.parametrize("every", [True, False], ids=["always-corrupt", "corrupt-once"])
def test_corrupted_remote_copy_is_caught_and_never_loaded(lab: Lab, tmp_path: Path, every: bool) -> None:
    lab.remove_images(*IMAGES)
    book = write(tmp_path, "play.yaml", SLOW_PLAY)
    # Inside node1: whenever a partial upload has grown past 200 kB, overwrite its first bytes.
    corruptor = (
        "end=$(($(date +%s)+60)); while [ $(date +%s) -lt $end ]; do "
        "for f in /var/tmp/distrib.*/*.part; do [ -f \"$f\" ] || continue; "
        "[ \"$(head -c 7 \"$f\")\" = CORRUPT ] && continue; "
        "[ $(stat -c %s \"$f\") -gt 200000 ] || continue; "
        "printf CORRUPT | dd of=\"$f\" bs=1 seek=0 conv=notrunc 2>/dev/null; "
        f"{'' if every else 'exit 0;'} done; sleep 0.02; done"
    )
    bg = subprocess.Popen(
        [sys.executable, "-m", "distrib", "lab", "exec", "node1", "--", "sh", "-c", corruptor],
        cwd=ROOT,
        start_new_session=True,  # its own process group: killed whole, shell loop included
    )
    try:
        with shaped(lab):
            rc, result, err = finish(start_run(book, lab.inventory, "--limit", "node1"))
    finally:
        os.killpg(bg.pid, signal.SIGKILL)
        bg.wait()
    node1 = result["plays"][0]["hosts"]["node1"]
    if every:
        assert rc == 2, err
        assert node1["status"] == "failed" and "checksum mismatch" in node1["message"]
        assert lab.image_id("node1", "demo/web:1.0") is None, "a bad copy is never loaded"
    else:
        assert rc == 0, err
        assert node1["status"] == "changed"
        assert lab.image_id("node1", "demo/web:1.0") == local_id("demo/web:1.0")
    assert_no_temp_files(lab)


def test_tiny_staging_filesystem(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    lab.exec("node1", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", "/var/tmp")
    try:
        auto = write(tmp_path, "auto.yaml", SLOW_PLAY.replace("none", "gzip"))
        proc = distrib("run", str(auto), "-i", str(lab.inventory), "--limit", "node1", "--json")
        assert proc.returncode == 0, proc.stderr
        node1 = json.loads(proc.stdout)["plays"][0]["hosts"]["node1"]
        assert node1["status"] == "changed" and "streamed" in node1["message"]
        assert lab.image_id("node1", "demo/worker:1.0") == local_id("demo/worker:1.0")
        lab.remove_images(*IMAGES)
        staged = write(tmp_path, "staged.yaml", SLOW_PLAY.replace("none", "gzip") + "  transfer: staged\n")
        proc = distrib("run", str(staged), "-i", str(lab.inventory), "--limit", "node1", "--json")
        assert proc.returncode == 2, proc.stderr
        node1 = json.loads(proc.stdout)["plays"][0]["hosts"]["node1"]
        assert "not enough space in /var/tmp" in node1["message"] and node1["bytes_sent"] == 0
    finally:
        lab.exec("node1", "umount", "/var/tmp", check=False)


def test_sigint_during_upload_cleans_every_host(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    before = {ref: local_id(ref) for ref in IMAGES}
    book = write(tmp_path, "play.yaml", SLOW_PLAY)
    with shaped(lab, "10mbit"):
        proc = start_run(book, lab.inventory)
        wait_for(lambda: all(staged_bytes(lab, h) > 100_000 for h in lab.hosts), what="uploads")
        proc.send_signal(signal.SIGINT)
        rc, _, err = finish(proc, timeout=60)
    assert rc == 130, err
    assert_no_temp_files(lab)
    for host in lab.hosts:
        assert lab.image_id(host, "demo/web:1.0") is None
    assert {ref: local_id(ref) for ref in IMAGES} == before, "local docker untouched"


def stand_ins(lab: Lab, host: str) -> list[str]:
    """The loading steps' stand-in images (label io.distrib.partial) on `host`."""
    out = lab.exec(host, "docker", "images", "-q", "--filter", "label=io.distrib.partial", check=False)
    return out.stdout.split()


def test_sigint_between_loading_steps_leaves_no_stand_in(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading steps (every layer its own step here): a run interrupted after a host loaded
    its first step removes that step's untagged stand-in image, and no tag moves."""
    lab.remove_images(*IMAGES)
    for host in lab.hosts:
        lab.exec(host, "docker", "image", "prune", "-af", check=False)
    monkeypatch.setenv("DISTRIB_STEP_BYTES", "1")
    book = write(tmp_path, "steps.yaml", "- hosts: lab\n  images: [demo/web:1.0]\n  compression: gzip\n")
    with shaped(lab, "10mbit"):
        proc = start_run(book, lab.inventory)
        wait_for(lambda: any(stand_ins(lab, h) for h in lab.hosts), timeout=120, what="a loaded step")
        proc.send_signal(signal.SIGINT)
        rc, _, err = finish(proc, timeout=60)
    assert rc == 130, err
    assert_no_temp_files(lab)
    for host in lab.hosts:
        assert stand_ins(lab, host) == [], host
        assert lab.image_id(host, "demo/web:1.0") in (None, local_id("demo/web:1.0")), host


def test_connection_failures_have_distinct_messages(lab: Lab, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    cases = {
        "wrong_key": ({"ansible_ssh_private_key_file": str(stranger)}, "authentication failed for root@"),
        "missing_key": ({"ansible_ssh_private_key_file": str(tmp_path / "nope")}, "private key file"),
        "wrong_user": ({"ansible_user": "nobody"}, "authentication failed for nobody@"),
        "closed_port": ({"ansible_port": 2222}, "connection refused"),
        "bad_name": ({"ansible_host": "no-such-host.invalid"}, "cannot resolve host name"),
    }
    book = write(tmp_path, "play.yaml", "- hosts: lab\n  images: [demo/web:1.0]\n")
    messages = set()
    for name, (hostvars, expected) in cases.items():
        inv = lab.inventory_with(tmp_path / name, host_vars={"node1": hostvars})
        proc = distrib("run", str(book), "-i", str(inv), "--limit", "node1", "--json")
        node1 = json.loads(proc.stdout)["plays"][0]["hosts"]["node1"]
        assert proc.returncode == 4, (name, proc.stderr)
        assert node1["status"] == "unreachable"
        assert expected in node1["message"], (name, node1["message"])
        messages.add(node1["message"])
    assert len(messages) == len(cases)


HOSTILE = [
    "demo/web:1.0;touch /tmp/canary",
    "demo/$(touch /tmp/canary)",
    "demo/`touch /tmp/canary`",
    "demo/web:'1.0'",
    'demo/web:"x"',
    "demo/web 1.0",
    "demo/web:1.0\ntouch /tmp/canary",
    "--output=/tmp/canary",
]


@pytest.mark.parametrize("image", HOSTILE)
def test_hostile_image_names_rejected_before_connecting(lab: Lab, tmp_path: Path, image: str) -> None:
    book = tmp_path / "play.yaml"
    book.write_text(json.dumps([{"hosts": "lab", "images": [image]}]))  # JSON is YAML
    proc = distrib("run", str(book), "-i", str(lab.inventory))
    assert proc.returncode == 5, proc.stderr
    assert f"{book}:1" in proc.stderr and "invalid image reference" in proc.stderr
    assert "PLAY" not in proc.stdout


def test_hostile_vars_are_quoted_and_no_canary_appears(lab: Lab, tmp_path: Path) -> None:
    inv = lab.inventory_with(
        tmp_path,
        extra_vars={"remote_tmp": "/var/tmp/$(touch /tmp/canary)`touch /tmp/canary`;touch /tmp/canary"},
    )
    book = write(tmp_path, "play.yaml", "- hosts: lab\n  images: [demo/web:1.0]\n")
    lab.remove_images(*IMAGES)
    proc = distrib("run", str(book), "-i", str(inv))
    assert proc.returncode == 0, proc.stderr
    for host in lab.hosts:
        assert lab.exec(host, "test", "-e", "/tmp/canary", check=False).returncode != 0
    assert not Path("/tmp/canary").exists()


@pytest.mark.parametrize(
    ("playbook", "where"),
    [
        ("- hosts: lab\n  images: [demo/web:1.0\n", ":3: invalid YAML"),
        ("- hosts: lab\n  images: [demo/web:1.0]\n  forkz: 2\n", ":3: forkz: unknown key"),
        # --strict: a pattern that matches nothing is an error (without it, Ansible's warning
        # and exit 0: tests/test_ansible_flags.py)
        ("- hosts: nosuchgroup\n  images: [demo/web:1.0]\n", ":1: "),
    ],
)
def test_bad_input_names_file_and_line_and_connects_nowhere(lab: Lab, tmp_path: Path, playbook: str, where: str) -> None:
    # every host points at an address where nothing answers, with a 600 s connect timeout: a
    # connection attempt would hang the run for minutes (a bound far from any machine noise)
    inv = lab.inventory_with(
        tmp_path, extra_vars={"ansible_host": lab.spare_address(99), "connect_timeout": 600}
    )
    book = write(tmp_path, "play.yaml", playbook)
    started = time.monotonic()
    proc = distrib("run", str(book), "-i", str(inv), "--strict")
    assert proc.returncode == 5, proc.stderr
    assert f"{book}{where}" in proc.stderr
    assert time.monotonic() - started < 300
    assert "] connect" not in proc.stderr, "no host was contacted"


def test_bad_inventory_range_names_file_and_line(lab: Lab, tmp_path: Path) -> None:
    inv = write(tmp_path, "inv.yaml", "all:\n  hosts:\n    web[01:]:\n")
    book = write(tmp_path, "play.yaml", "- hosts: all\n  images: [demo/web:1.0]\n")
    proc = distrib("run", str(book), "-i", str(inv))
    assert proc.returncode == 5 and f"{inv}:3" in proc.stderr, proc.stderr


def test_forks_bound_concurrent_ssh_sessions(lab: Lab, tmp_path: Path) -> None:
    ghosts = {f"ghost{i:02d}": {"ansible_host": lab.spare_address(i), "connect_timeout": 2} for i in range(47)}
    inv = lab.inventory_with(tmp_path, extra_hosts=ghosts)
    book = write(tmp_path, "play.yaml", "- hosts: all\n  images: [demo/web:1.0]\n  forks: 5\n")
    peak = 0
    stop = threading.Event()

    def sample(pid: int) -> None:
        nonlocal peak
        while not stop.is_set():
            out = subprocess.run(
                ["ss", "-Htnp", "state", "all", "( dport = :22 )"], capture_output=True, text=True
            ).stdout
            peak = max(peak, sum(1 for line in out.splitlines() if f"pid={pid}," in line))
            time.sleep(0.02)

    proc = start_run(book, inv)
    sampler = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
    sampler.start()
    rc, result, err = finish(proc, timeout=300)
    stop.set()
    sampler.join()
    hosts = result["plays"][0]["hosts"]
    assert rc == 4, err
    assert sum(1 for h in hosts.values() if h["status"] == "unreachable") == 47
    assert 1 <= peak <= 5, f"saw {peak} SSH sockets at once with forks 5"


def test_host_key_modes(lab: Lab, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    book = write(tmp_path, "play.yaml", "- hosts: lab\n  images: [demo/web:1.0]\n")
    # accept-new: first contact is trusted and recorded
    inv = lab.inventory_with(tmp_path / "a", extra_vars={"known_hosts": str(known), "host_key_checking": "accept-new"})
    proc = distrib("run", str(book), "-i", str(inv), "--limit", "node1")
    assert proc.returncode == 0, proc.stderr
    assert lab.state().host("node1").address in known.read_text()
    # a CHANGED key is refused even with accept-new
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    addr = lab.state().host("node1").address
    known.write_text(f"{addr} {(other.with_suffix('.pub')).read_text().split()[0]} {(other.with_suffix('.pub')).read_text().split()[1]}\n")
    proc = distrib("run", str(book), "-i", str(inv), "--limit", "node1", "--json")
    assert proc.returncode == 4
    message = json.loads(proc.stdout)["plays"][0]["hosts"]["node1"]["message"]
    assert "CHANGED" in message and "ssh-keygen" in json.loads(proc.stdout)["plays"][0]["hosts"]["node1"]["hint"]
    # off: explicit, and warned about
    inv = lab.inventory_with(tmp_path / "b", extra_vars={"known_hosts": str(known), "host_key_checking": "off"})
    proc = distrib("run", str(book), "-i", str(inv), "--limit", "node1")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr and "host key checking is OFF" in proc.stderr
