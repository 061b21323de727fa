"""Ansible-grade orchestration end to end, on the lab's real sshd + dockerd hosts: check mode,
idempotence, verify drift, exit codes 2/4/8, the --json schema, retry files, verbosity, several
inventories, and the terminal display (a real TTY in tmux).

What landed is checked independently of distrib, with `docker` inside each host (`lab.exec`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Lab, distrib, local_id
from tests.test_report import check_schema

IMAGES = ("demo/web:1.0", "demo/worker:1.0")
DEMO = "- name: demo\n  hosts: lab\n  images: [demo/web:1.0, demo/worker:1.0]\n"
ESC = "\x1b"

lab_test = pytest.mark.lab



def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def with_host_vars(lab: Lab, tmp_path: Path, **host_vars: str) -> Path:
    """The lab inventory with extra inline vars on some hosts (`node1="docker_command: /bin/false"`)."""
    text = lab.inventory.read_text()
    for host, extra in host_vars.items():
        text = text.replace(f"        {host}:\n", f"        {host}:\n          {extra}\n", 1)
    return write(tmp_path, "inv.yaml", text)


def ghost_address(lab: Lab) -> str:
    """An unused address in this lab instance's /24 (hosts are .11, .12, ...)."""
    first = re.search(r"ansible_host: (\d+\.\d+\.\d+)\.\d+", lab.inventory.read_text())
    assert first, lab.inventory.read_text()
    return f"{first.group(1)}.250"


def run_json(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = distrib(*args, "--json")
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:  # pragma: no cover - the assertion message helps
        raise AssertionError(f"stdout is not JSON ({exc}):\n{proc.stdout}\n{proc.stderr}") from None
    check_schema(doc)
    return proc, doc


def statuses(doc: dict[str, Any], play: int = 0) -> dict[str, str]:
    return {h: v["status"] for h, v in doc["plays"][play]["hosts"].items()}


def deploy_all(lab: Lab, tmp_path: Path) -> None:
    book = write(tmp_path, "deploy.yaml", DEMO)
    distrib("run", str(book), "-i", str(lab.inventory), check=True)


# -- check mode and idempotence ------------------------------------------------------------


@lab_test
def test_check_mode_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    book = write(tmp_path, "play.yaml", DEMO)
    for command in (["run", str(book), "--check"], ["plan", str(book)]):
        proc, doc = run_json(*command, "-i", str(lab.inventory))
        assert proc.returncode == 0, proc.stderr
        assert statuses(doc) == dict.fromkeys(lab.hosts, "changed")
        for host, result in doc["plays"][0]["hosts"].items():
            assert result["bytes_sent"] == 0, host
            assert "would send" in result["message"] and "check mode" in result["message"]
            assert result["states"] == dict.fromkeys(IMAGES, "missing")
        for host in lab.hosts:
            for ref in IMAGES:
                assert lab.image_id(host, ref) is None, f"check mode loaded {ref} on {host}"
            assert lab.temp_files(host) == [], f"check mode left files on {host}"


@lab_test
def test_second_run_is_all_ok_and_sends_nothing(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    book = write(tmp_path, "play.yaml", DEMO)
    first, doc1 = run_json("run", str(book), "-i", str(lab.inventory))
    assert first.returncode == 0, first.stderr
    assert statuses(doc1) == dict.fromkeys(lab.hosts, "changed")
    second, doc2 = run_json("run", str(book), "-i", str(lab.inventory))
    assert second.returncode == 0, second.stderr
    assert statuses(doc2) == dict.fromkeys(lab.hosts, "ok")
    assert [h["bytes_sent"] for h in doc2["plays"][0]["hosts"].values()] == [0, 0, 0]
    assert "upload" not in doc2["plays"][0]["hosts"]["node1"]["timings"]
    for host in lab.hosts:
        assert re.search(rf"^{host}\s+: ok=1\s+changed=0\s", second.stderr, re.M), second.stderr
        assert lab.temp_files(host) == []


# -- verify --------------------------------------------------------------------------------


@lab_test
def test_verify_reports_drift_per_host_and_image(lab: Lab, tmp_path: Path) -> None:
    deploy_all(lab, tmp_path)
    inv = str(lab.inventory)
    clean, doc = run_json("verify", *IMAGES, "-i", inv)
    assert clean.returncode == 0, clean.stderr
    assert statuses(doc) == dict.fromkeys(lab.hosts, "ok")
    # node2: another image under the same tag; node3: one image gone
    lab.exec("node2", "docker", "tag", "demo/worker:1.0", "demo/web:1.0")
    lab.exec("node3", "docker", "rmi", "demo/worker:1.0")
    try:
        drift, doc = run_json("verify", *IMAGES, "-i", inv)
        assert drift.returncode == 2, drift.stderr
        hosts = doc["plays"][0]["hosts"]
        assert hosts["node1"]["states"] == dict.fromkeys(IMAGES, "present")
        assert hosts["node2"]["states"] == {
            "demo/web:1.0": "different",
            "demo/worker:1.0": "present",
        }
        assert hosts["node3"]["states"] == {"demo/web:1.0": "present", "demo/worker:1.0": "missing"}
        assert statuses(doc) == {"node1": "ok", "node2": "failed", "node3": "failed"}
        # the matrix, as people read it (stderr because of --json)
        out = drift.stderr.splitlines()
        table = out[next(i for i, ln in enumerate(out) if ln.startswith("HOST ")) :]
        table = table[: next(i for i, ln in enumerate(table) if ln.startswith("PLAY RECAP"))]
        rows = {ln.split()[0]: ln.split()[1:] for ln in table}
        assert rows["HOST"] == list(IMAGES)
        assert rows["node1"] == ["present", "present"]
        assert rows["node2"] == ["different", "present"]
        assert rows["node3"] == ["present", "missing"]
        # verify only reads: the drifted tag is still there, nothing was shipped
        assert lab.image_id("node2", "demo/web:1.0") == local_id("demo/worker:1.0")
        assert all(h["bytes_sent"] == 0 for h in hosts.values())
    finally:
        deploy_all(lab, tmp_path)


# -- exit codes ----------------------------------------------------------------------------


@lab_test
def test_exit_2_when_a_hosts_engine_fails_and_retry_file_round_trip(
    lab: Lab, tmp_path: Path
) -> None:
    lab.remove_images(*IMAGES)
    broken = with_host_vars(lab, tmp_path, node3="docker_command: /bin/false")
    book = write(tmp_path, "play.yaml", DEMO)
    retry = tmp_path / "play.retry"
    proc, doc = run_json("run", str(book), "-i", str(broken), "--retry-file", str(retry))
    assert proc.returncode == 2, proc.stderr
    assert statuses(doc) == {"node1": "changed", "node2": "changed", "node3": "failed"}
    assert doc["exit_code"] == 2
    node3 = doc["plays"][0]["hosts"]["node3"]
    assert "engine" in node3["message"] and node3["hint"]
    assert re.search(r"^node3\s+: ok=0\s+changed=0\s+unreachable=0\s+failed=1", proc.stderr, re.M)
    assert retry.read_text() == "node3\n"
    assert lab.image_id("node3", "demo/web:1.0") is None
    assert lab.temp_files("node3") == []
    # the retry file limits the next run (with the repaired inventory) to the failed host
    again, doc = run_json("run", str(book), "-i", str(lab.inventory), "--limit", f"@{retry}")
    assert again.returncode == 0, again.stderr
    assert statuses(doc) == {"node3": "changed"}
    assert lab.image_id("node3", "demo/web:1.0") == local_id("demo/web:1.0")


@lab_test
def test_exit_4_when_a_host_is_unreachable(lab: Lab, tmp_path: Path) -> None:
    text = lab.inventory.read_text().replace(
        "hosts:\n",
        f"hosts:\n        ghost: {{ansible_host: {ghost_address(lab)}, connect_timeout: 2}}\n",
        1,
    )
    inv = write(tmp_path, "inv.yaml", text)
    book = write(tmp_path, "play.yaml", DEMO)
    retry = tmp_path / "retry"
    started = time.monotonic()
    proc, doc = run_json("run", str(book), "-i", str(inv), "--retry-file", str(retry))
    assert proc.returncode == 4, proc.stderr
    assert time.monotonic() - started < 60
    hosts = doc["plays"][0]["hosts"]
    assert hosts["ghost"]["status"] == "unreachable" and hosts["ghost"]["bytes_sent"] == 0
    assert all(hosts[h]["status"] in ("ok", "changed") for h in lab.hosts)
    assert re.search(r"^ghost\s+: ok=0\s+changed=0\s+unreachable=1", proc.stderr, re.M)
    assert retry.read_text() == "ghost\n"


@lab_test
def test_exit_8_when_the_failure_limit_aborts_the_play(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    broken = with_host_vars(lab, tmp_path, node1="docker_command: /bin/false")
    book = write(tmp_path, "play.yaml", DEMO + "  serial: 1\n  max_fail_percentage: 0\n")
    proc, doc = run_json("run", str(book), "-i", str(broken))
    assert proc.returncode == 8, proc.stderr
    play = doc["plays"][0]
    assert play["aborted"] and play["stopped"]
    assert "batch 1" in play["abort_reason"] and "max_fail_percentage 0" in play["abort_reason"]
    assert statuses(doc) == {"node1": "failed", "node2": "skipped", "node3": "skipped"}
    assert "play 'demo' aborted" in proc.stderr
    assert re.search(r"^node2\s+: .*skipped=1", proc.stderr, re.M)
    for host in ("node2", "node3"):  # never started: nothing sent, nothing loaded
        assert play["hosts"][host]["bytes_sent"] == 0
        assert lab.image_id(host, "demo/web:1.0") is None


# -- output: verbosity, JSON on stdout only, no escapes off a terminal ---------------------


@lab_test
def test_verbosity_levels_and_plain_output_off_a_terminal(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    book = write(tmp_path, "play.yaml", DEMO)
    inv = str(lab.inventory)
    plain = distrib("run", str(book), "-i", inv, "--limit", "node1")
    assert plain.returncode == 0, plain.stderr
    assert " total " not in plain.stdout and "$ " not in plain.stderr
    lab.remove_images(*IMAGES)
    v2 = distrib("run", str(book), "-i", inv, "--limit", "node1", "-vv")
    assert v2.returncode == 0, v2.stderr
    # -v: timings on the host line; -vv: each remote command as it went over the wire
    assert re.search(r"changed: \[node1\] .*\[connect [\d.]+s, .*total [\d.]+s\]", v2.stdout)
    logged = [ln for ln in v2.stderr.splitlines() if ln.startswith("[node1] $ ")]
    assert any("docker" in ln and "load" in ln for ln in logged), v2.stderr
    assert any("sha256sum" in ln for ln in logged) and any("rm -rf" in ln for ln in logged)
    # not a terminal: one line per host per phase, no escape codes, no redrawn bars
    for phase in ("connect", "probe", "upload", "load", "verify"):
        assert v2.stderr.count(f"[node1] {phase}\n") == 1, phase
    assert ESC not in v2.stdout + v2.stderr and "\r" not in v2.stderr
    v3 = distrib("run", str(book), "-i", inv, "--limit", "node1", "-vvv", "--json")
    assert v3.returncode == 0, v3.stderr
    assert "paramiko.transport" in v3.stderr
    assert json.loads(v3.stdout)["plays"][0]["hosts"]["node1"]["status"] == "ok"
    assert ESC not in v3.stdout + v3.stderr


# -- inventories ---------------------------------------------------------------------------


def test_inventory_list_and_graph_of_the_example() -> None:
    listing = distrib("inventory", "-i", "inventory.example.yaml", "--list", check=True)
    doc = json.loads(listing.stdout)
    assert doc["web"]["hosts"] == [f"web0{i}.example.com" for i in (1, 2, 3)]
    assert sorted(doc["all"]["children"]) == ["ungrouped", "web", "workers"]
    worker2 = doc["_meta"]["hostvars"]["worker2.example.com"]
    assert worker2["ansible_user"] == "ops"  # host var over the all-group var
    assert worker2["docker_command"] == "sudo -n docker"
    assert doc["_meta"]["hostvars"]["web01.example.com"]["ansible_port"] == 22
    graph = distrib("inventory", "-i", "inventory.example.yaml", "--graph", check=True).stdout
    assert graph.splitlines()[0] == "@all:"
    assert "  |--@web:\n  |  |--web01.example.com\n" in graph
    assert "  |--@workers:\n  |  |--worker1.example.com\n  |  |--worker2.example.com" in graph


@lab_test
def test_two_inventories_merge(lab: Lab, tmp_path: Path) -> None:
    """node1, node2 and the connection vars in one file; node3 alone in an INI file."""
    text = lab.inventory.read_text()
    node3 = re.search(r"        node3:\n          ansible_host: (\S+)\n(?:          \S.*\n)*", text)
    assert node3, text
    first = write(tmp_path, "a.yaml", text.replace(node3.group(0), ""))
    second = write(tmp_path, "b.ini", f"[lab]\nnode3 ansible_host={node3.group(1)}\n")
    listing = distrib("inventory", "-i", str(first), "-i", str(second), "--list", check=True)
    doc = json.loads(listing.stdout)
    assert doc["lab"]["hosts"] == ["node1", "node2", "node3"]
    assert doc["_meta"]["hostvars"]["node3"]["ansible_ssh_private_key_file"]  # from a.yaml's all
    book = write(tmp_path, "play.yaml", DEMO)
    proc, result = run_json("run", str(book), "--check", "-i", str(first), "-i", str(second))
    assert proc.returncode == 0, proc.stderr
    assert sorted(statuses(result)) == ["node1", "node2", "node3"]


# -- the terminal display, on a real TTY ---------------------------------------------------


def tmux_run(tmp_path: Path, args: list[str], rows: int, env: dict[str, str]) -> tuple[str, str]:
    """Run the CLI in a detached tmux pane (a real pty); return (plain text, text with SGR
    colour codes) of everything the pane showed, scrollback included."""
    socket = f"distrib-test-{os.getpid()}"
    conf = tmp_path / "tmux.conf"
    conf.write_text("set -g history-limit 10000\n")
    tmux = ["tmux", "-L", socket, "-f", str(conf)]
    done = tmp_path / "exit-code"
    done.unlink(missing_ok=True)
    command = (
        f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m distrib "
        + " ".join(shlex.quote(a) for a in args)
        + f"; echo $? > {shlex.quote(str(done))}; echo EXITED; sleep 120"
    )
    env_args = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "150", "-y", str(rows), *env_args, command],
        check=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(0.3)
        assert done.exists(), "distrib did not finish in the tmux pane"

        def capture(*flags: str) -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-J", "-S", "-", "-t", "0", *flags],
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        return capture(), capture("-e")
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
        tmux_dir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (tmux_dir / socket).unlink(missing_ok=True)  # kill-server leaves the socket file


TTY_ENV = {"TERM": "xterm-256color", "COLUMNS": "150"}


@lab_test
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_terminal_bars_per_host_then_readable_recap(lab: Lab, tmp_path: Path) -> None:
    lab.remove_images(*IMAGES)
    book = write(tmp_path, "play.yaml", DEMO)
    env = {**TTY_ENV, **{k: v for k, v in os.environ.items() if k.startswith("DISTRIB_")}}
    text, coloured = tmux_run(tmp_path, ["run", str(book), "-i", str(lab.inventory)], 30, env)
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    assert "EXITED" in lines, text
    # exactly one final bar line per host and one TOTAL line: nothing duplicated or torn
    for host in lab.hosts:
        bars = [ln for ln in lines if ln.startswith(f"{host} ") and ": ok=" not in ln]
        assert len(bars) == 1, text
        assert re.match(
            rf"{host}\s+changed\s+[\d.]+ MB sent in [\d.]+s \([\d.]+ [kM]?B/s\)$", bars[0]
        )
    totals = [ln for ln in lines if ln.startswith("TOTAL")]
    assert len(totals) == 1 and totals[0].startswith("TOTAL 3/3 100%|"), text
    # then the host lines and the recap, each on its own line, in order
    after = [  # (the archive summary line may come between host lines and recap)
        ln
        for ln in lines[lines.index(totals[0]) + 1 :]
        if not ln.startswith(("archive for play", "layer store for play"))
    ]
    assert [ln.split(" =>")[0] for ln in after[:3]] == [f"changed: [{h}]" for h in lab.hosts]
    assert after[3].startswith("PLAY RECAP ****")
    for host, line in zip(lab.hosts, after[4:7]):
        assert re.fullmatch(
            rf"{host}\s+: ok=1\s+changed=1\s+unreachable=0\s+failed=0\s+skipped=0", line
        ), line
    assert "\x1b[33m" in coloured  # changed in yellow on a terminal ...
    # ... and no colour at all when NO_COLOR is set
    lab.remove_images(*IMAGES)
    _, plain = tmux_run(
        tmp_path, ["run", str(book), "-i", str(lab.inventory)], 30, {**env, "NO_COLOR": "1"}
    )
    assert not re.search(r"\x1b\[[0-9;]*3[1-6]m", plain), plain


@lab_test
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_terminal_too_small_for_per_host_bars_shows_a_phase_summary(
    lab: Lab, tmp_path: Path
) -> None:
    lab.remove_images(*IMAGES)
    book = write(tmp_path, "play.yaml", DEMO)
    env = {**TTY_ENV, **{k: v for k, v in os.environ.items() if k.startswith("DISTRIB_")}}
    text, _ = tmux_run(tmp_path, ["run", str(book), "-i", str(lab.inventory)], 7, env)
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    assert not any(re.match(r"node\d\s+(waiting|connect|upload|changed)", ln) for ln in lines)
    totals = [ln for ln in lines if ln.startswith("TOTAL")]
    assert len(totals) == 1 and totals[0].startswith("TOTAL 3/3"), text
    assert lines[lines.index(totals[0]) + 1] == "changed 3"
    assert "PLAY RECAP" in text and "EXITED" in text
