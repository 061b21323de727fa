"""The distrib.images collection without hosts (issue 17, item 5): ansible-doc reads both
modules' documentation, the per-host result mapping, the once-per-batch coordination between
processes, and the temporary inventory's vars. Its run against real hosts is in
tests/test_ansible_lab.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))  # ansible_collections.distrib.images is importable from the repo
from ansible_collections.distrib.images.plugins.plugin_utils import rollout  # noqa: E402

ANSIBLE_DOC = Path(sys.executable).parent / "ansible-doc"


@pytest.mark.parametrize("module", ["distribute", "verify"])
def test_ansible_doc_reads_the_modules(module: str) -> None:
    if not ANSIBLE_DOC.exists():
        pytest.fail("ansible-doc is not in the venv (scripts/setup.sh installs distrib[ansible])")
    proc = subprocess.run(
        [str(ANSIBLE_DOC), f"distrib.images.{module}"],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr
    assert f"distrib.images.{module}" in proc.stdout and "images" in proc.stdout


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("changed", {"changed": True}),
        ("ok", {"changed": False}),
        ("failed", {"changed": False, "failed": True}),
        ("unreachable", {"changed": False, "unreachable": True}),
        ("skipped", {"changed": False, "skipped": True}),
    ],
)
def test_task_result_per_status(status: str, expected: dict[str, Any]) -> None:
    outcome = {"hosts": {"h": {"status": status, "message": "m", "hint": "do x"}}}
    result = rollout.task_result(outcome, "h", verify_only=False)
    assert {k: result[k] for k in expected} == expected
    assert result["msg"] == "m" and result["hint"] == "do x" and result["status"] == status
    for flag in {"failed", "unreachable", "skipped"} - set(expected):
        assert flag not in result


def test_a_host_missing_from_distribs_result_fails_with_its_error() -> None:
    outcome = {"hosts": {}, "rc": 5, "stderr": "ERROR: inventory.json:1: something\n"}
    result = rollout.task_result(outcome, "h", verify_only=False)
    assert result["failed"] is True and "inventory.json:1: something" in result["msg"]


def test_verify_never_reports_changed() -> None:
    outcome = {"hosts": {"h": {"status": "changed", "message": "m"}}}
    assert rollout.task_result(outcome, "h", verify_only=True)["changed"] is False


def test_host_entry_takes_connection_vars_then_play_defaults() -> None:
    hostvars = {
        "ansible_host": "10.0.0.1",
        "ansible_port": 2222,
        "ansible_password": "pw",
        "known_hosts": "/k",
        "unrelated": "x",
        "ansible_user": "",
    }
    entry = rollout.host_entry(hostvars, {"ansible_user": "cli", "ansible_port": 22})
    assert entry == {
        "ansible_host": "10.0.0.1",
        "ansible_port": 2222,
        "ansible_password": "pw",
        "known_hosts": "/k",
        "ansible_user": "cli",
    }


def _compute_once(key: str, log: str, queue: Any) -> None:
    def compute() -> dict[str, Any]:
        with open(log, "a") as fh:
            fh.write("ran\n")
        return {"hosts": {"a": {"status": "ok"}}}

    queue.put(rollout.once(key, compute))


def test_once_computes_a_single_time_across_processes(tmp_path: Path) -> None:
    log = tmp_path / "log"
    key = f"test-{os.getpid()}-{tmp_path.name}"
    queue: Any = multiprocessing.get_context("fork").Queue()
    procs = [
        multiprocessing.get_context("fork").Process(
            target=_compute_once, args=(key, str(log), queue)
        )
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert log.read_text() == "ran\n"
    assert all(r == {"hosts": {"a": {"status": "ok"}}} for r in results)
    directory = Path(rollout.private_dir())
    assert directory.stat().st_mode & 0o777 == 0o700


def test_run_once_summary() -> None:
    outcome = {
        "hosts": {
            "a": {"status": "changed", "message": "loaded"},
            "b": {"status": "unreachable", "message": "timed out"},
        }
    }
    summary = rollout.summary(outcome, ["a", "b"], verify_only=False)
    assert summary["changed"] is True and summary["failed"] is True
    assert summary["msg"] == "b: timed out" and set(summary["hosts"]) == {"a", "b"}
    good = rollout.summary({"hosts": {"a": {"status": "ok", "message": ""}}}, ["a"], False)
    assert good == {"changed": False, "hosts": good["hosts"], "msg": "0 of 1 host(s) changed"}


def test_the_temporary_inventory_holds_each_hosts_own_connection_vars(tmp_path: Path) -> None:
    """Through the real ansible-playbook, with a stand-in for distrib that keeps the inventory
    it is given: Jinja in vars is resolved by Ansible, -u and -k apply only to hosts without
    their own ansible_user / ansible_password, nothing secret is in argv, the file is 0600 and
    gone afterwards."""
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        pytest.fail(
            "ansible-playbook is not in the venv (scripts/setup.sh installs distrib[ansible])"
        )
    (tmp_path / "inv.yml").write_text(
        "all:\n  vars: {deploy_user: deployer}\n  hosts:\n"
        "    h1: {ansible_host: '{{ inventory_hostname }}.example', ansible_user: '{{ deploy_user }}',"
        " ansible_password: own-pw}\n"
        "    h2: {ansible_port: 2222}\n"
    )
    keep = (
        'prev=; for a; do if [ "$prev" = -i ]; then cp "$a" "$KEEP/inventory.json"; '
        'stat -c %a "$a" > "$KEEP/mode"; fi; prev=$a; done; echo "$@" > "$KEEP/argv"; '
        'echo "{\\"plays\\": [{\\"hosts\\": {\\"h1\\": {\\"status\\": \\"ok\\"}, '
        '\\"h2\\": {\\"status\\": \\"changed\\"}}}]}"'
    )
    task = {
        "distrib.images.distribute": {
            "images": ["x/y:1"],
            "distrib_command": ["sh", "-c", keep, "sh"],
        }
    }
    (tmp_path / "pb.yml").write_text(
        json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [task]}])
    )
    proc = subprocess.run(
        [str(playbook_bin), "-i", "inv.yml", "pb.yml", "-u", "cliuser", "-k", "-b"],
        input="asked-pw\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT), "KEEP": str(tmp_path)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changed: [h2]" in proc.stdout and "ok: [h1]" in proc.stdout
    hosts = json.loads((tmp_path / "inventory.json").read_text())["all"]["hosts"]
    assert hosts["h1"]["ansible_host"] == "h1.example"
    assert (hosts["h1"]["ansible_user"], hosts["h1"]["ansible_password"]) == ("deployer", "own-pw")
    assert (hosts["h2"]["ansible_user"], hosts["h2"]["ansible_password"]) == ("cliuser", "asked-pw")
    assert hosts["h2"]["ansible_port"] == 2222 and hosts["h2"]["ansible_become"] is True
    assert (tmp_path / "mode").read_text().strip() == "600"
    argv = (tmp_path / "argv").read_text()
    assert argv.startswith("push x/y:1 -i ") and "own-pw" not in argv and "asked-pw" not in argv
    assert not Path(argv.split()[3]).exists()
