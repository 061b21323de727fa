"""Reaching into a running lab: its state, a command inside a host, its status, an ssh command
line, and each host's CPU seconds so far."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from distrib import local
from distrib.errors import LabError, LocalError
from distrib.lab import procs, remotes
from distrib.lab.state import LabHost, LabState, lab_dir, load_state


def require_state(
    directory: str | os.PathLike[str] | None = None, instance: int | None = None
) -> LabState:
    """The running lab's state, or LabError telling how to start one."""
    state = load_state(directory, instance)
    if state is None or not state.hosts:
        raise LabError(f"no lab in {lab_dir(directory, instance)}", hint="distrib lab up --hosts 3")
    return state


def exec_argv(host: LabHost, argv: Sequence[str]) -> list[str]:
    """Command that runs `argv` inside `host`: its network and mount namespaces, its docker."""
    if not argv:
        raise LabError("lab exec needs a command")
    return ["nsenter", "-t", str(host.sshd_pid), "-n", "-m", "-u", "--wd=/root", "--",
            "env", f"DOCKER_HOST={host.docker_host}", *argv]  # fmt: skip


def exec_in(
    host: str | LabHost,
    argv: Sequence[str],
    *,
    input: str | bytes | None = None,
    check: bool = False,
    timeout: float | None = None,
    directory: str | os.PathLike[str] | None = None,
    instance: int | None = None,
) -> local.Completed:
    """Run `argv` inside lab host `host` (name or LabHost) and return its captured output."""
    if isinstance(host, str):
        host = require_state(directory, instance).host(host)
    if not procs.pid_alive(host.sshd_pid):
        raise LabError(f"{host.name}: its sshd (pid {host.sshd_pid}) is not running")
    try:
        return local.run(exec_argv(host, argv), input=input, check=check, timeout=timeout,
                         what=f"{host.name}: {' '.join(argv)}")  # fmt: skip
    except LocalError as exc:
        raise LabError(str(exc)) from None


@dataclass(frozen=True)
class HostStatus:
    """What `status` saw of one host."""

    name: str
    address: str
    sshd_up: bool
    dockerd_up: bool
    images: int | None  # None when dockerd does not answer
    engine: str = "docker"  # engine name (lab/engines.py)
    version: str = ""  # its Debian package version

    @property
    def healthy(self) -> bool:
        return self.sshd_up and self.dockerd_up


def status(
    directory: str | os.PathLike[str] | None = None, instance: int | None = None
) -> list[HostStatus]:
    """Probe every host of the running lab (LabError if there is none)."""
    state = require_state(directory, instance)
    result = []
    for h in state.hosts:
        # behind the bastion the workstation cannot reach the banner (by design)
        sshd_up = procs.pid_alive(h.sshd_pid) and (h.behind_bastion or procs.ssh_banner(h.address))
        if h.kind != "docker":  # podman: no daemon; containerd: its pid, its socket
            socket = remotes.containerd_socket(h.host_dir)
            engine_up = h.kind == "podman" or (
                procs.pid_alive(h.dockerd_pid) and procs.containerd_ping(socket)
            )
            result.append(HostStatus(h.name, h.address, sshd_up, engine_up, None,
                                     h.engine or h.kind, h.engine_version))  # fmt: skip
            continue
        dockerd_up = procs.pid_alive(h.dockerd_pid) and procs.docker_ping(h.docker_socket)
        images = None
        if dockerd_up:
            out = local.run(["docker", "-H", h.docker_host, "images", "-q"],
                            check=False, timeout=30)  # fmt: skip
            images = len(out.stdout.split()) if out.ok else None
        result.append(HostStatus(h.name, h.address, sshd_up, dockerd_up, images,
                                 h.engine or h.kind, h.engine_version))  # fmt: skip
    return result


def ssh_argv(state: LabState, host: str | LabHost, command: Sequence[str] = ()) -> list[str]:
    """OpenSSH client command reaching `host` with the lab's key and strict host key checks."""
    h = state.host(host) if isinstance(host, str) else host
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={state.known_hosts}", "-o", "IdentitiesOnly=yes",
            "-i", state.client_key, f"root@{h.address}", *command]  # fmt: skip


def cpu_seconds(state: LabState) -> dict[str, float]:
    """Each host's CPU seconds so far: its sshd (with every session it served and reaped) and
    its engine daemon (dockerd with its containerd, or containerd), from /proc. Take it before
    and after a run: the difference is the work the hosts did for it."""
    table = procs.cpu_table()
    return {h.name: procs.tree_cpu_seconds((h.sshd_pid, h.dockerd_pid), table) for h in state.hosts}
