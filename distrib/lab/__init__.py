"""The lab: several real hosts (network namespace + own sshd + own dockerd) on this machine.

Python API (importing has no side effects):

- `up(n_hosts, uplink=None, inventory=None, directory=None) -> LabState`
- `down(directory=None)`, `status(directory=None) -> list[HostStatus]`
- `load_state(directory=None) -> LabState | None`, `require_state(directory=None)`
- `exec_in(host, argv, input=None, check=False) -> Completed` (inside the host's namespaces)
- `ssh_argv(state, host, command)`: the OpenSSH client command with the lab key/known_hosts
- `build_images(bench=False, rebuild=False) -> list[BuiltImage]`
- `register(subparsers)`: adds `distrib lab up|down|status|exec|images`
"""

from __future__ import annotations

from distrib.lab.cli import register
from distrib.lab.core import (
    HostStatus,
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
from distrib.lab.state import LabHost, LabState, lab_dir, load_state

__all__ = [
    "IMAGES",
    "BuiltImage",
    "HostStatus",
    "LabHost",
    "LabState",
    "build_images",
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
