"""Controller-side core of the distrib.images action plugins: run distrib ONCE for a play's
batch of hosts, however many hosts (and worker processes) ask, and hand each host its result.

Every host's task runs the action plugin in its own worker process. The first one to take a
lock (a file in a private 0700 directory, keyed by the ansible-playbook process, the task and
the batch) runs distrib for the whole batch and records the per-host results there; the others
wait on the lock and read them. distrib gets the hosts through a temporary inventory (mode
0600, in a private 0700 directory, deleted as soon as distrib ends) holding each host's
connection vars as Ansible resolved them, passwords included: nothing secret is in argv.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

# Vars copied from hostvars into the temporary inventory: Ansible's connection vars and
# distrib's own host vars (engine, known_hosts, ...; see distrib's README).
CONNECTION_VARS = (
    "ansible_host",
    "ansible_ssh_host",
    "ansible_port",
    "ansible_ssh_port",
    "ansible_user",
    "ansible_ssh_user",
    "ansible_ssh_private_key_file",
    "ansible_private_key_file",
    "ansible_password",
    "ansible_ssh_pass",
    "ansible_ssh_password",
    "ansible_connection",
    "ansible_timeout",
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
    "ansible_become",
    "ansible_become_method",
    "ansible_become_user",
    "ansible_become_password",
    "ansible_become_pass",
    "ansible_host_key_checking",
)
DISTRIB_VARS = (
    "known_hosts",
    "host_key_checking",
    "connect_timeout",
    "io_timeout",
    "max_command_output",
    "ssh_config",
    "proxy_jump",
    "remote_tmp",
    "engine",
    "engine_command",
    "docker_command",
    "containerd_namespace",
    "transfer",
    "relay_group",
)
STALE_SECONDS = 24 * 3600


def private_dir() -> str:
    """This user's private directory for locks and results (0700, owned by us, not a link)."""
    path = os.path.join(tempfile.gettempdir(), f"distrib-ansible-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RuntimeError(f"{path} is not a private directory of this user: refusing to use it")
    now = time.time()
    for name in os.listdir(path):  # results of runs long gone
        entry = os.path.join(path, name)
        try:
            if now - os.lstat(entry).st_mtime > STALE_SECONDS:
                os.unlink(entry)
        except OSError:
            pass
    return path


def once(key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`compute()`'s result for `key`, computed by the first caller of all processes."""
    directory = private_dir()
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    result_path = os.path.join(directory, f"{digest}.json")
    fd = os.open(os.path.join(directory, f"{digest}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as fh:
                loaded: dict[str, Any] = json.load(fh)
                return loaded
        outcome = compute()
        partial = result_path + ".tmp"
        with open(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600), "w") as fh:
            json.dump(outcome, fh)
        os.replace(partial, result_path)
        return outcome
    finally:
        os.close(fd)


def host_entry(hostvars: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """One host's vars for the temporary inventory: its own, else the play's defaults."""
    entry: dict[str, Any] = {}
    for name in CONNECTION_VARS + DISTRIB_VARS:
        try:
            present = name in hostvars
            value = hostvars[name] if present else None
        except Exception:  # an undefined var in a template: left to distrib's defaults
            continue
        if value is None or value == "":
            continue
        entry[name] = plain(value)
    for name, value in defaults.items():
        if value not in (None, "") and name not in entry:
            entry[name] = plain(value)
    return entry


def plain(value: Any) -> Any:
    """A var as plain JSON data (Ansible 2.19 hands out tagged str/int subclasses)."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)


def run_distrib(
    command: list[str], hosts: dict[str, dict[str, Any]], distrib: list[str] | None = None
) -> dict[str, Any]:
    """Run `distrib COMMAND... -i INVENTORY --json` for `hosts` (name -> vars); returns
    {"rc", "hosts": {name: distrib's --json entry}, "stderr"}."""
    workdir = tempfile.mkdtemp(prefix="distrib-ansible-")  # 0700
    try:
        inventory = os.path.join(workdir, "inventory.json")
        fd = os.open(inventory, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with open(fd, "w", encoding="utf-8") as fh:
            json.dump({"all": {"hosts": hosts}}, fh)
        argv = [*(distrib or [sys.executable, "-m", "distrib"]), *command]
        argv += ["-i", inventory, "--json", "--strict"]
        proc = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the inventory (and its passwords) go now
    per_host: dict[str, Any] = {}
    try:
        document = json.loads(proc.stdout)
        for play in document.get("plays", []):
            per_host.update(play.get("hosts", {}))
    except ValueError:
        pass
    return {
        "rc": proc.returncode,
        "hosts": per_host,
        "stderr": proc.stderr[-4000:],
        "cmd": " ".join(command),
    }


def task_result(outcome: dict[str, Any], host: str, verify_only: bool) -> dict[str, Any]:
    """The Ansible task result of `host` from distrib's outcome for the batch."""
    entry = outcome["hosts"].get(host)
    if entry is None:
        lines = [line for line in outcome.get("stderr", "").splitlines() if line.strip()]
        return {
            "failed": True,
            "changed": False,
            "rc": outcome.get("rc"),
            "msg": "distrib gave no result for this host: "
            + (" / ".join(lines[-3:]) if lines else f"exit {outcome.get('rc')}"),
        }
    status = entry.get("status")
    result: dict[str, Any] = {
        "changed": status == "changed" and not verify_only,
        "msg": entry.get("message", ""),
        "status": status,
        "images": entry.get("images", {}),
        "states": entry.get("states", {}),
        "engine": entry.get("engine"),
        "bytes_sent": entry.get("bytes_sent", 0),
    }
    if entry.get("hint"):
        result["hint"] = entry["hint"]
    if status == "unreachable":
        result["unreachable"] = True
    elif status == "failed":
        result["failed"] = True
    elif status == "skipped":
        result["skipped"] = True
    return result


def summary(outcome: dict[str, Any], hosts: list[str], verify_only: bool) -> dict[str, Any]:
    """One result for all `hosts` (a `run_once: true` task): changed if any host changed,
    failed if any failed or was unreachable, each host's own result under `hosts`."""
    each = {h: task_result(outcome, h, verify_only) for h in hosts}
    bad = [h for h, r in each.items() if r.get("failed") or r.get("unreachable")]
    changed = [h for h, r in each.items() if r.get("changed")]
    result: dict[str, Any] = {"changed": bool(changed), "hosts": each}
    if bad:
        result["failed"] = True
        result["msg"] = "; ".join(f"{h}: {each[h]['msg']}" for h in bad)
    else:
        result["msg"] = f"{len(changed)} of {len(hosts)} host(s) changed"
    return result
