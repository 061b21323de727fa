"""Ansible users on real hosts (issue 17, items 4-6): SSH password login and a per-host become
password, the distrib.images collection run by the real ansible-playbook (one distrib run for
the play's hosts, a result per host), and `--json-format ansible` against the json callback's
own output. Its own lab instance (1, or $DISTRIB_ANSIBLE_LAB_INSTANCE) with 2 hosts, login
users and distrib-sudopw's password login; what landed is checked over the lab's ssh."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from distrib import local
from distrib.lab import config, core, remotes, testing
from distrib.lab.state import LabState
from tests.conftest import ROOT, distrib, local_id

pytestmark = pytest.mark.lab

IMAGE = "ansibletest/app:1"
PASSWORD = remotes.USER_PASSWORD
ANSIBLE_BIN = Path(sys.executable).parent


def _instance() -> int:
    return config.check_instance(int(os.environ.get("DISTRIB_ANSIBLE_LAB_INSTANCE", "1")))


STATE: LabState | None = None


@pytest.fixture(scope="module")
def lab1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = testing.unavailable_reason()
    if reason:
        if os.environ.get("DISTRIB_REQUIRE_LAB") == "1":
            pytest.fail(f"lab required but unavailable: {reason}")
        pytest.skip(reason)
    if not (ANSIBLE_BIN / "ansible-playbook").exists():
        pytest.fail(
            "ansible-playbook is not in the venv (scripts/setup.sh installs distrib[ansible])"
        )
    work = tmp_path_factory.mktemp("ansible-lab")
    global STATE
    STATE = core.up(
        2, instance=_instance(), inventory=work / "lab.yaml", users=True, password_login=True
    )
    try:
        distrib("lab", "images", check=True)  # the busybox base the test image builds on
        context = work / "image"
        context.mkdir()
        (context / "marker").write_text("issue 17\n")
        (context / "Dockerfile").write_text("FROM distrib/busybox:latest\nCOPY marker /\n")
        subprocess.run(
            ["docker", "build", "-q", "-t", IMAGE, str(context)],
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            check=True,
            capture_output=True,
        )
        yield work
    finally:
        core.down(instance=_instance())


def _on(host: str, *argv: str, check: bool = True) -> local.Completed:
    assert STATE is not None
    return local.run(core.ssh_argv(STATE, host, [shlex.join(argv)]), timeout=120, check=check)


def _image_on(host: str) -> str | None:
    done = _on(host, "docker", "image", "inspect", "--format", "{{.Id}}", IMAGE, check=False)
    return done.stdout.strip() if done.ok else None


def _inventory(work: Path, hosts: dict[str, dict[str, Any]]) -> Path:
    assert STATE is not None
    path = work / f"inv-{len(list(work.iterdir()))}.yaml"
    shared = {"known_hosts": STATE.known_hosts}
    path.write_text(yaml.safe_dump({"all": {"vars": shared, "hosts": hosts}}))
    return path


def _address(name: str) -> str:
    assert STATE is not None
    return STATE.host(name).address


def _password_user(name: str, **extra: Any) -> dict[str, Any]:
    return {"ansible_host": _address(name), "ansible_user": remotes.PASSWORD_USER, **extra}


def _root(name: str) -> dict[str, Any]:
    assert STATE is not None
    return {
        "ansible_host": _address(name),
        "ansible_user": "root",
        "ansible_ssh_private_key_file": STATE.client_key,
    }


def test_password_login_and_become_password(lab1: Path) -> None:
    """distrib-sudopw has no key to offer distrib: it gets in by password only, and reaches the
    engine only through sudo with its password."""
    for host in ("node1", "node2"):
        _on(host, "docker", "rmi", "-f", IMAGE, check=False)
    inventory = _inventory(
        lab1, {"node1": _password_user("node1"), "node2": _password_user("node2")}
    )
    secrets = lab1 / "secrets.yml"
    secrets.write_text(f"ansible_password: {PASSWORD}\nansible_become_password: {PASSWORD}\n")
    os.chmod(secrets, 0o600)

    refused = distrib("verify", IMAGE, "-i", str(inventory), "--json")
    assert refused.returncode == 4, refused.stderr
    hosts = json.loads(refused.stdout)["plays"][0]["hosts"]
    assert all(h["status"] == "unreachable" for h in hosts.values())
    assert "authentication failed" in hosts["node1"]["message"]

    pushed = distrib(
        "push", IMAGE, "-i", str(inventory), "-e", f"@{secrets}", "-b", "-vvv", "--json"
    )
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    statuses = {h: r["status"] for h, r in json.loads(pushed.stdout)["plays"][0]["hosts"].items()}
    assert statuses == {"node1": "changed", "node2": "changed"}
    assert PASSWORD not in pushed.stdout + pushed.stderr  # not in the JSON nor the -vvv log
    assert _image_on("node1") == _image_on("node2") == local_id(IMAGE)

    # the same from files named on the command line (prompts -k/-K read the same way)
    password_file = lab1 / "password"
    password_file.write_text(PASSWORD + "\n")
    checked = distrib(
        "verify", IMAGE, "-i", str(inventory), "-b",
        "--connection-password-file", str(password_file),
        "--become-password-file", str(password_file),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _playbook(work: Path, tasks: list[dict[str, Any]], name: str) -> Path:
    path = work / name
    path.write_text(
        yaml.safe_dump([{"name": "ship", "hosts": "all", "gather_facts": False, "tasks": tasks}])
    )
    return path


def _ansible_playbook(inventory: Path, playbook: Path) -> tuple[int, dict[str, Any], str]:
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT),
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOCAL_TEMP": str(playbook.parent / "ansible-tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    proc = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=playbook.parent,
    )
    try:
        document = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(
            f"ansible-playbook wrote no JSON:\n{proc.stdout}\n{proc.stderr}"
        ) from None
    return proc.returncode, document, proc.stderr


def _task_hosts(document: dict[str, Any], index: int) -> dict[str, Any]:
    hosts: dict[str, Any] = document["plays"][0]["tasks"][index]["hosts"]
    return hosts


def test_collection_runs_distrib_once_for_the_play(lab1: Path) -> None:
    """node1 as root with the lab key, node2 as distrib-sudopw with a password and become: the
    action plugin hands Ansible's connection vars of both to ONE distrib run."""
    for host in ("node1", "node2"):
        _on(host, "docker", "rmi", "-f", IMAGE, check=False)
    inventory = _inventory(
        lab1,
        {
            "node1": _root("node1"),
            "node2": _password_user(
                "node2",
                ansible_password=PASSWORD,
                ansible_become=True,
                ansible_become_password=PASSWORD,
            ),
        },
    )
    runs = lab1 / "runs.log"
    wrapper = [
        "sh", "-c", f'echo run >> {shlex.quote(str(runs))}; exec "$0" -m distrib "$@"', sys.executable,
    ]  # fmt: skip
    playbook = _playbook(
        lab1,
        [
            {
                "name": "distribute",
                "distrib.images.distribute": {
                    "images": [IMAGE],
                    "compression": "zstd",
                    "distrib_command": wrapper,
                },  # fmt: skip
            },
            {"name": "verify", "distrib.images.verify": {"images": [IMAGE]}},
        ],
        "site.yml",
    )
    before = set(Path(tempfile.gettempdir()).glob("distrib-ansible-*/inventory.json"))

    code, document, stderr = _ansible_playbook(inventory, playbook)
    assert code == 0, json.dumps(document, indent=1) + stderr
    shipped = _task_hosts(document, 0)
    assert {h: (r["changed"], r.get("failed", False)) for h, r in shipped.items()} == {
        "node1": (True, False),
        "node2": (True, False),
    }
    assert "loaded and verified" in shipped["node2"]["msg"]
    assert runs.read_text().count("run") == 1  # one rollout for the play, not one per host
    assert document["stats"]["node1"]["changed"] == 1 and document["stats"]["node2"]["ok"] == 2
    assert _image_on("node1") == _image_on("node2") == local_id(IMAGE)
    assert PASSWORD not in json.dumps(document) + stderr
    # the temporary inventory (with node2's passwords) is gone
    assert set(Path(tempfile.gettempdir()).glob("distrib-ansible-*/inventory.json")) == before

    code, document, _ = _ansible_playbook(inventory, playbook)  # again: nothing to do
    assert code == 0
    assert {h: r["changed"] for h, r in _task_hosts(document, 0).items()} == {
        "node1": False,
        "node2": False,
    }
    assert runs.read_text().count("run") == 2

    _on("node2", "docker", "rmi", "-f", IMAGE)  # drift on one host: its verify fails alone
    only_verify = _playbook(
        lab1, [{"name": "verify", "distrib.images.verify": {"images": [IMAGE]}}], "verify.yml"
    )
    code, document, _ = _ansible_playbook(inventory, only_verify)
    assert code == 2
    verified = _task_hosts(document, 0)
    assert verified["node1"].get("failed", False) is False
    assert verified["node2"]["failed"] is True and "missing" in verified["node2"]["msg"]


def _shape(value: Any, depth: int = 0) -> Any:
    """The key structure of a JSON document (host names and free-form maps left out)."""
    if isinstance(value, dict):
        return {k: _shape(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0], depth + 1)] if value else []
    return type(value).__name__


def test_json_format_ansible_has_the_json_callbacks_layout(lab1: Path) -> None:
    """Ansible's own json callback output (a play on localhost) against distrib's
    --json-format ansible for a push to the workstation itself (ansible_connection: local)."""
    playbook = lab1 / "cb.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "cb",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [{"name": "t", "ansible.builtin.command": "true"}],
                }
            ]
        )
    )
    inventory = lab1 / "local.ini"
    inventory.write_text("localhost ansible_connection=local\n")
    code, theirs, stderr = _ansible_playbook(inventory, playbook)
    assert code == 0, stderr

    ours_run = distrib("push", IMAGE, "-i", str(inventory), "--json-format", "ansible")
    assert ours_run.returncode == 0, ours_run.stderr
    ours = json.loads(ours_run.stdout)

    assert list(ours) == list(theirs)  # custom_stats, global_custom_stats, plays, stats
    their_play, our_play = theirs["plays"][0], ours["plays"][0]
    assert set(our_play) == set(their_play) == {"play", "tasks"}
    assert _shape(our_play["play"]) == _shape(their_play["play"])  # duration, id, name, path
    assert set(our_play["tasks"][0]) == set(their_play["tasks"][0]) == {"hosts", "task"}
    assert _shape(our_play["tasks"][0]["task"]) == _shape(their_play["tasks"][0]["task"])
    their_host = their_play["tasks"][0]["hosts"]["localhost"]
    our_host = our_play["tasks"][0]["hosts"]["localhost"]
    common = {"_ansible_no_log", "action", "changed", "msg"}
    assert common <= set(their_host) and common <= set(our_host)
    for key in common:
        assert type(our_host[key]) is type(their_host[key]), key
    assert _shape(ours["stats"]) == _shape(theirs["stats"])  # the recap's counters, per host
    assert ours["stats"]["localhost"]["ok"] == 1 and ours["stats"]["localhost"]["changed"] == 0
