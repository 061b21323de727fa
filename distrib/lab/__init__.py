"""The lab: several real hosts (network namespace + own sshd + own dockerd) on this machine.

Python API (importing has no side effects):

- `up(n_hosts, uplink=None, inventory=None, directory=None, instance=None) -> LabState`
- `down(directory=None, instance=None)`, `status(directory=None, instance=None)`
- `load_state(directory=None, instance=None) -> LabState | None`, `require_state(...)`
- `lab_dir(directory=None, instance=None)`: the lab dir ($DISTRIB_LAB_DIR, else per instance)
- `current_instance(option=None)`: the lab instance 0..9 (option, $DISTRIB_LAB_INSTANCE, 0)
- `exec_in(host, argv, input=None, check=False) -> Completed` (inside the host's namespaces)
- `ssh_argv(state, host, command)`: the OpenSSH client command with the lab key/known_hosts
- `cpu_seconds(state) -> {host: seconds}`: each host's sshd + engine CPU so far (bench deltas)
- `build_images(bench=False, huge=False, rebuild=False) -> list[BuiltImage]`
- `register(subparsers)`: adds `distrib lab up|down|status|exec|images`
"""

from __future__ import annotations

from distrib.lab.cli import register
from distrib.lab.core import (
    HostStatus,
    cpu_seconds,
    down,
    exec_argv,
    exec_in,
    require_environment,
    require_state,
    ssh_argv,
    status,
    up,
)
from distrib.lab.images import IMAGES, BuiltImage, build_images
from distrib.lab.state import LabHost, LabState, current_instance, lab_dir, load_state

__all__ = [
    "IMAGES",
    "BuiltImage",
    "HostStatus",
    "LabHost",
    "LabState",
    "build_images",
    "cpu_seconds",
    "current_instance",
    "down",
    "exec_argv",
    "exec_in",
    "lab_dir",
    "load_state",
    "register",
    "require_environment",
    "require_state",
    "ssh_argv",
    "status",
    "up",
]
