"""Fifty hosts (issue 16) on the lab: 64 hosts come up and go away without a trace, the forks
bound holds, and the display in a real terminal too short for a bar per host shows TOTAL and
counts per phase, live. Lab instance $DISTRIB_SCALE_LAB_INSTANCE (default 1).

Timings are printed (`-s`), never asserted: bench/scale.py measures them."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distrib.lab import config, core, teardown, testing
from distrib.lab.state import LabState
from tests.conftest import ROOT, distrib, local_id

pytestmark = pytest.mark.lab

HOSTS = 6
ROWS = 8  # fits(6, 8) is False: TOTAL and a phase summary instead of 6 bars
COLUMNS = 120


def _instance() -> int:
    return config.check_instance(int(os.environ.get("DISTRIB_SCALE_LAB_INSTANCE", "1")))


def _require_lab() -> None:
    reason = testing.unavailable_reason()
    if reason:
        if os.environ.get("DISTRIB_REQUIRE_LAB") == "1":
            pytest.fail(f"lab required but unavailable: {reason}")
        pytest.skip(reason)


def _traces(root: Path, instance: int) -> list[str]:
    """What a lab of `instance` in `root` could leave behind: netns, mounts, processes, links."""
    found = [f"netns {ns}" for ns in teardown.lab_netns(instance)]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount {m.split()[4]}" for m in mounts if m.split()[4].startswith(str(root) + "/")]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(root) + "/" in cmdline:
                found.append(f"process {proc.name}: {cmdline[:120]}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"link {n}" for n in config.lab_links(config.parse_link_names(links), instance)]
    if teardown.bridge_exists(instance):
        found.append(f"bridge {config.bridge_name(instance)}")
    return found


def test_sixty_four_hosts_up_and_down_leave_nothing() -> None:
    _require_lab()
    instance = _instance()
    started = time.monotonic()
    state = core.up(64, kinds="docker-20.10", instance=instance)
    up_seconds = time.monotonic() - started
    root = Path(state.lab_dir)
    try:
        assert len(state.hosts) == 64
        # a dockerd may be restarting a containerd the machine starved: give it a moment
        deadline = time.monotonic() + 30
        while True:
            answers = [h.name for h in core.status(instance=instance) if h.healthy]
            if len(answers) == 64 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(answers) == 64, f"only {len(answers)} hosts answer"
    finally:
        started = time.monotonic()
        core.down(instance=instance)
        down_seconds = time.monotonic() - started
    print(f"\nlab of 64 hosts: up {up_seconds:.1f}s, down {down_seconds:.1f}s")
    assert _traces(root, instance) == []


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    """Six docker 20.10 hosts behind a 20 mbit/s uplink: a push of a 2 MB image lasts a few
    seconds, long enough to watch it."""
    _require_lab()
    inventory = tmp_path_factory.mktemp("scale") / "inventory.yaml"
    state = core.up(
        HOSTS, kinds="docker-20.10", uplink="20mbit", instance=_instance(), inventory=inventory
    )
    try:
        distrib("lab", "images", check=True)
        yield state
    finally:
        core.down(instance=_instance())


def in_flight(output: str) -> int:
    """The most hosts in flight at once, from the plain-line display (stdout and stderr in
    one pipe, in the order they were written): a host is in flight from its first `[host]
    phase` line to its outcome line."""
    busy: set[str] = set()
    peak = 0
    for line in output.splitlines():
        outcome = re.match(r"(ok|changed|failed|fatal|unreachable|skipping): \[(\S+)\]", line)
        phase = re.match(r"\[(\S+)\] \S", line)
        if outcome:
            busy.discard(outcome.group(2))
        elif phase:
            busy.add(phase.group(1))
            peak = max(peak, len(busy))
    return peak


def test_in_flight_from_a_table() -> None:
    text = "[a] connect\n[b] connect\nchanged: [a] => x\n[c] connect\n[b] load\nok: [b] => y\n"
    assert in_flight(text) == 2


@pytest.mark.parametrize("forks", [2, 4])
def test_forks_bound_holds(small_lab: LabState, forks: int) -> None:
    """Never more than `forks` hosts in flight, and the bound is reached (the run is parallel)."""
    image = "demo/web:1.0" if forks == 2 else "demo/worker:1.0"
    for host in small_lab.hosts:
        core.exec_in(host.name, ["docker", "rmi", "-f", image], instance=_instance(), check=False)
    proc = subprocess.run(
        [sys.executable, "-m", "distrib", "push", "-i", small_lab.inventory,
         "--forks", str(forks), image],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.count("changed: [") == HOSTS, proc.stdout
    assert in_flight(proc.stdout) == forks, proc.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_display_in_a_short_terminal_is_total_and_phase_counts(
    small_lab: LabState, tmp_path: Path
) -> None:
    """A real pty (tmux) of 8 rows for 6 hosts: during the run the screen shows the TOTAL bar
    and one line of counts per phase, no bar per host, and it changes; after it, the recap."""
    image = "demo/big:1.0" if os.environ.get("DISTRIB_SCALE_BIG") else "demo/web:1.0"
    for host in small_lab.hosts:
        core.exec_in(host.name, ["docker", "rmi", "-f", image], instance=_instance(), check=False)
    socket = f"distrib-scale-{os.getpid()}"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    done = tmp_path / "exit-code"
    command = (
        f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m distrib push "
        f"-i {shlex.quote(small_lab.inventory)} --forks 2 {image}"
        f"; echo $? > {shlex.quote(str(done))}; sleep 120"
    )
    env = {"TERM": "xterm-256color", "NO_COLOR": "1"}
    env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", str(COLUMNS), "-y", str(ROWS), *env_args, command],
        check=True,
    )

    def screen() -> list[str]:
        out = subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "0"], capture_output=True, text=True, check=True
        ).stdout
        return out.split("\n")[:-1] if out.endswith("\n") else out.split("\n")

    screens: list[list[str]] = []
    try:
        deadline = time.monotonic() + 300
        while not done.exists() and time.monotonic() < deadline:
            screens.append(screen())
            time.sleep(0.25)
        time.sleep(0.3)
        assert done.exists(), "distrib did not finish in the tmux pane"
        after = screen()
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    assert done.read_text().strip() == "0", "\n".join(after)
    live = [s for s in screens if any(ln.startswith("TOTAL") for ln in s)]
    assert len(live) >= 3, screens
    phase_count = re.compile(
        r"^((waiting|connect|probe|layers|upload|load|verify|checksum|ok|changed) \d+( · )?)+$"
    )
    for s in live:
        assert len(s) <= ROWS and all(len(ln) <= COLUMNS for ln in s), s
        totals = [ln for ln in s if ln.startswith("TOTAL")]
        assert len(totals) == 1, s  # one TOTAL bar, never redrawn below itself
        below = s[s.index(totals[0]) + 1].rstrip()
        assert phase_count.match(below), s
        assert not any(re.match(r"node\d+\s+(waiting|connect|upload|load)", ln) for ln in s), s
    seen = {tuple(ln.rstrip() for ln in s if ln.strip()) for s in live}
    assert len(seen) >= 3, "the display did not update"  # live: counts and bytes move
    assert any(re.search(r"TOTAL [0-5]/6", ln) for s in live for ln in s)
    assert any("PLAY RECAP" in ln for ln in after), after
    for host in small_lab.hosts[:1]:
        out = core.exec_in(host.name, ["docker", "image", "inspect", "-f", "{{.Id}}", image],
                           instance=_instance(), check=True)  # fmt: skip
        assert out.stdout.strip() == local_id(image)


def test_fanout_auto_says_which_and_why_and_relay_has_one_root(small_lab: LabState) -> None:
    """`--check` of `fanout: auto`: a slow uplink makes the tree pay (relay, one root: the
    workstation sends once), a fast one does not (direct); the output says which and why."""
    image = "demo/worker:1.0"
    for host in small_lab.hosts:
        core.exec_in(host.name, ["docker", "rmi", "-f", image], instance=_instance(), check=False)
    base = ["push", "--check", "-i", small_lab.inventory, "--fanout", "auto", image]
    slow = distrib(*base, "--uplink", "1mbit", check=True).stdout
    assert re.search(r"FANOUT \[push\]: auto → relay: .* > 5s relay setup", slow), slow
    tree = slow[slow.index("RELAY TREE") :].splitlines()
    assert tree[1] == "workstation" and tree[2].startswith("└── node1"), slow  # one root
    assert sum(1 for ln in tree if re.match(r"[└├]── ", ln)) == 1, slow
    fast = distrib(*base, "--uplink", "10gbit", check=True).stdout
    assert re.search(r"auto → direct: .* ≤ 5s relay setup: the tree cannot pay", fast), fast
    assert "RELAY TREE" not in fast
    # for real: the tree the rule chose, entered once (the workstation feeds node1 only)
    real = ["push", "-i", small_lab.inventory, "--fanout", "auto", "--uplink", "1mbit", "--json"]
    doc = json.loads(distrib(*real, image, check=True).stdout)
    hosts = doc["plays"][0]["hosts"]
    assert {h["status"] for h in hosts.values()} == {"changed"}, hosts
    fed_by_workstation = [n for n, h in hosts.items() if h["fed_by"] == "workstation"]
    assert fed_by_workstation == ["node1"], hosts
    assert all(h["bytes_sent"] == 0 for n, h in hosts.items() if n != "node1"), hosts
    for host in small_lab.hosts:
        out = core.exec_in(host.name, ["docker", "image", "inspect", "-f", "{{.Id}}", image],
                           instance=_instance(), check=True)  # fmt: skip
        assert out.stdout.strip() == local_id(image)
