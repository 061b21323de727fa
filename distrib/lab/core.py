"""Bringing the lab up.

Each host is a network namespace on the instance's bridge (`distrib0` for instance 0) with its
own sshd (in a private mount namespace: own /tmp, /var/tmp, /root/.ssh, /run/docker.sock) and its
own dockerd. Names are fixed per instance (`config.bridge_name` & co.): one lab per instance and
up to ten instances per machine. `up` first removes the leftovers of its own instance, and every
cleanup matches only its own instance's names, dir and processes (lab/teardown.py: `down`);
lab/hostprep.py prepares each host, lab/access.py reaches into a running lab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from distrib import local, yamlio
from distrib.errors import LabError
from distrib.lab import config, engines, fetch, hostprep, procs, remotes, teardown
from distrib.lab.access import (
    HostStatus,
    cpu_seconds,
    exec_argv,
    exec_in,
    require_state,
    ssh_argv,
    status,
)
from distrib.lab.state import LabHost, LabState, current_instance, lab_dir, save_state
from distrib.lab.teardown import (
    CLIENT_KEY,
    WORKSTATION_ENGINE_DIR,
    WORKSTATION_LOCK,
    WORKSTATION_PIDFILE,
    WORKSTATION_SOCKET,
    Echo,
    down,
    require_environment,
)

# `core` stays the lab's entry point for callers that predate the split.
__all__ = [
    "CLIENT_KEY",
    "WORKSTATION_ENGINE_DIR",
    "WORKSTATION_SOCKET",
    "HostStatus",
    "cpu_seconds",
    "down",
    "exec_argv",
    "exec_in",
    "require_environment",
    "require_state",
    "ssh_argv",
    "status",
    "up",
]

DOCKERD_TIMEOUT = 60.0
SSHD_TIMEOUT = 20.0
DAEMON_WAVE = 16  # daemons started at once (see _up)


def _ensure_workstation_docker(root: Path, echo: Echo) -> int | None:
    """Make sure the workstation's dockerd answers; return its pid if this lab started it."""
    with procs.flock(
        teardown.LOCK_DIR / WORKSTATION_LOCK
    ):  # one instance starts it, the others wait
        return _ensure_workstation_docker_locked(root, echo)


def _ensure_workstation_docker_locked(root: Path, echo: Echo) -> int | None:
    mine = teardown.workstation_dockerd(root)
    if procs.docker_ping(WORKSTATION_SOCKET):
        return mine
    if mine is not None:  # ours but hung: replace it
        procs.terminate([mine])
    # dockerd refuses to start while its pidfile names a live pid; after a SIGKILL that pid
    # may linger as an unreaped zombie (or be reused), so a pidfile here is always stale.
    with contextlib.suppress(FileNotFoundError):
        (root / WORKSTATION_PIDFILE).unlink()
    log = root / "logs" / "workstation-dockerd.log"
    echo("starting the workstation's dockerd (none was answering)")
    with open(log, "wb") as fh:
        proc = local.spawn(
            ["dockerd", f"--pidfile={root / WORKSTATION_PIDFILE}"],
            stdout=fh,
            stderr=fh,
            new_session=True,
        )
    procs.wait_until(
        lambda: procs.docker_ping(WORKSTATION_SOCKET),
        timeout=DOCKERD_TIMEOUT,
        what="workstation dockerd",
        log=log,
        proc=proc,
    )
    return proc.pid


def _start_workstation_engine(
    root: Path, res: engines.Resolution, storage: str, echo: Echo
) -> dict[str, object]:
    """Start the lab's own local dockerd of engine `res` (own socket, data and exec roots in
    the lab dir, root network namespace, no networking of its own); its LabState fields."""
    wd = root / WORKSTATION_ENGINE_DIR
    shutil.rmtree(wd, ignore_errors=True)  # after teardown.clear_instance: nothing is mounted there
    for sub, mode in (("docker", 0o711), ("exec", 0o700), ("bin", 0o755)):
        (wd / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(wd / sub, mode)
    os.symlink(fetch.client_binary(res), wd / "bin" / "docker")
    socket = wd / "docker.sock"
    argv = config.dockerd_argv(
        data_root=str(wd / "docker"),
        exec_root=str(wd / "exec"),
        socket=str(socket),
        pid_file=str(wd / "dockerd.pid"),
        storage_driver="" if res.spec.containerd_store else storage,
        binary=fetch.daemon_binary(res),
        config_file=hostprep.daemon_json(wd, res),
    )
    log = root / "logs" / "workstation-engine-dockerd.log"
    echo(f"starting the workstation engine {res.spec.name} ({res.version})")
    proc = hostprep.spawn_logged(argv, log, fetch.daemon_env(res))
    procs.wait_until(
        functools.partial(procs.docker_ping, str(socket)),
        timeout=DOCKERD_TIMEOUT,
        what=f"workstation engine {res.spec.name}",
        log=log,
        proc=proc,
    )
    return {
        "workstation_engine": res.spec.name,
        "workstation_engine_version": res.version,
        "workstation_engine_pid": proc.pid,
        "workstation_docker_host": f"unix://{socket}",
        "workstation_docker_bin": str(wd / "bin"),
    }


def up(
    n_hosts: int,
    *,
    uplink: str | None = None,
    inventory: str | os.PathLike[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
    instance: int | None = None,
    echo: Echo = teardown.quiet,
    insecure_registries: Sequence[str] = (),
    kinds: str | None = None,
    bastion: bool = False,
    users: bool = False,
    workstation: str | None = None,
    password_login: bool = False,
) -> LabState:
    """Create `n_hosts` lab hosts node1..nodeN in lab `instance` (default
    $DISTRIB_LAB_INSTANCE or 0), after removing that instance's previous lab, and return the
    saved state. Writes the client key, known_hosts and an Ansible-style inventory.

    `kinds`: engine names of the hosts (lab/engines.py; the last repeats). `workstation`: an
    engine (docker-20.10|docker-26|docker-28|docker-28-containerd) run as a lab-managed local
    dockerd with its own socket (LabState.workstation_env points docker at it); default: the
    system's docker on /run/docker.sock. Engines are never fetched here (`lab engines fetch`).
    `password_login` (needs `users`): distrib-sudopw may also log in with its password.
    """
    if password_login and not users:
        raise LabError("--password-login needs --users (it is distrib-sudopw's password login)")
    require_environment()
    config.check_host_count(n_hosts)
    names = engines.parse_engines(kinds, n_hosts)
    resolved = {name: fetch.require(name) for name in dict.fromkeys(names)}
    ws_engine = None
    if workstation:
        if workstation not in engines.WORKSTATION_ENGINES:
            raise LabError(f"--workstation must be one of {', '.join(engines.WORKSTATION_ENGINES)}")
        ws_engine = fetch.require(workstation)
    if uplink:
        config.parse_rate(uplink)
    number = current_instance(instance)
    root = lab_dir(directory, number)
    config.check_lab_dir(str(root), number)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    with teardown.locked(root, number):
        previous = teardown.read_state_lenient(root)
        teardown.check_owner(previous, root, number)
        teardown.clear_instance(
            root, previous, number, keep_workstation=True, keep_keys=True, echo=echo
        )
        (root / "logs").mkdir(exist_ok=True)
        try:
            return _up(
                root, number, n_hosts, uplink, inventory, echo, insecure_registries,
                [resolved[n] for n in names], bastion, users, ws_engine, password_login,
            )  # fmt: skip
        except BaseException:
            # Never leave half a lab: the next `up` or `down` would have to guess.
            teardown.clear_instance(
                root, None, number, keep_workstation=True, keep_keys=True, echo=echo
            )
            raise


def _up(
    root: Path,
    instance: int,
    n_hosts: int,
    uplink: str | None,
    inventory: str | os.PathLike[str] | None,
    echo: Echo,
    insecure_registries: Sequence[str] = (),
    kinds: Sequence[engines.Resolution] = (),
    bastion: bool = False,
    users: bool = False,
    ws_engine: engines.Resolution | None = None,
    password_login: bool = False,
) -> LabState:
    kinds = list(kinds) or [fetch.require("docker")] * n_hosts
    by_name = {config.host_name(i): r for i, r in enumerate(kinds, 1)}
    if bastion and n_hosts < 2:
        raise LabError("--bastion needs at least 2 hosts (node1 is the bastion)")
    if users:
        remotes.ensure_users()
    if not Path("/root/.ssh").is_dir():
        # Mount target for each host's private /root/.ssh; an empty dir changes nothing else.
        Path("/root/.ssh").mkdir(mode=0o700)
    ws_pid = _ensure_workstation_docker(root, echo)
    if not Path("/run/docker.sock").exists():
        raise LabError("/run/docker.sock is missing although the workstation dockerd answers")
    storage = hostprep.probe_storage_driver(root)
    ws_fields = _start_workstation_engine(root, ws_engine, storage, echo) if ws_engine else {}
    key = hostprep.keypair(root / CLIENT_KEY, "distrib-lab")
    client_pub = Path(f"{key}.pub").read_text()
    bridge = config.bridge_name(instance)
    hostprep.setup_bridge(instance, uplink)

    hosts = [
        dataclasses.replace(
            hostprep.host_paths(root, k, instance),
            kind=res.spec.kind,
            engine=res.spec.name,
            engine_version=res.version,
        )
        for k, res in zip(range(1, n_hosts + 1), kinds)
    ]
    # `%h`: each user's own (per-host private) ~/.ssh; for root that is /root/.ssh as always
    authorized = "%h/.ssh/authorized_keys" if users else "/root/.ssh/authorized_keys"
    password_user = remotes.PASSWORD_USER if password_login else None
    known = [hostprep.prepare_host(h, bridge, client_pub, authorized, password_user) for h in hosts]
    echo(f"created {n_hosts} network namespaces on {bridge} ({storage} storage)")
    extra_binds: dict[str, list[config.Bind]] = {h.name: [] for h in hosts}
    for h in hosts:
        if users:
            pairs = remotes.prepare_user_keys(h.host_dir, client_pub)
            extra_binds[h.name] += [config.Bind(src, dst) for src, dst in pairs]
            # sudo resolves the host's own name: without it, every sudo warns (and asks DNS)
            hosts_file = remotes.etc_hosts(h.host_dir, h.name)
            extra_binds[h.name].append(config.Bind(hosts_file, "/etc/hosts"))
        res = by_name[h.name]
        # the engine's own client over the system's (docker 28 client with a 28 server)
        extra_binds[h.name] += [config.Bind(s, t) for s, t in fetch.client_binds(res)]
        if h.kind == "podman":
            helpers = fetch.helpers_dir(res.spec) if res.source == "cache" else None
            etc = remotes.prepare_podman(h.host_dir, storage, helpers)
            extra_binds[h.name].append(config.Bind(etc, "/etc/containers"))
        elif h.kind == "containerd":
            major = int(engines.upstream_version(res.version).split(".")[0] or 1)
            remotes.prepare_containerd(h.host_dir, major)
            sockets = str(Path(remotes.containerd_socket(h.host_dir)).parent)
            extra_binds[h.name].append(config.Bind(sockets, remotes.CONTAINERD_SOCKET_DIR))

    # Start the daemons in waves, each wave's before waiting on any (they take seconds each to
    # come up), and never more than DAEMON_WAVE at once: 64 dockerds and their containerds
    # started together on 2 cores starve the containerds, which dockerd then kills (issue 16).
    def start_daemon(h: LabHost) -> local.Process[bytes] | None:
        if h.kind == "podman":  # no daemon
            return None
        res = by_name[h.name]
        if h.kind == "containerd":
            cmd = ["nsenter", f"--net=/run/netns/{h.netns}", fetch.daemon_binary(res),
                   "--config", str(Path(h.host_dir) / "containerd.toml")]  # fmt: skip
            return hostprep.spawn_logged(cmd, root / "logs" / f"{h.name}-containerd.log",
                                 fetch.daemon_env(res))  # fmt: skip
        daemon_json = hostprep.daemon_json(Path(h.host_dir), res)
        argv = config.dockerd_argv(
            data_root=h.data_root,
            exec_root=h.exec_root,
            socket=h.docker_socket,
            pid_file=str(Path(h.host_dir) / "dockerd.pid"),
            storage_driver="" if res.spec.containerd_store else storage,
            insecure_registries=insecure_registries,
            binary=fetch.daemon_binary(res),
            config_file=daemon_json,
        )
        # nsenter --net only: `ip netns exec` would remount /sys and dockerd then dies
        # with "Devices cgroup isn't mounted".
        cmd = ["nsenter", f"--net=/run/netns/{h.netns}", *argv]
        return hostprep.spawn_logged(cmd, root / "logs" / f"{h.name}-dockerd.log",
                             fetch.daemon_env(res))  # fmt: skip

    def wait_daemon(h: LabHost, proc: local.Process[bytes]) -> None:
        if h.kind == "containerd":
            procs.wait_until(
                functools.partial(procs.containerd_ping, remotes.containerd_socket(h.host_dir)),
                timeout=DOCKERD_TIMEOUT,
                what=f"{h.name}: containerd",
                log=root / "logs" / f"{h.name}-containerd.log",
                proc=proc,
            )
            return
        procs.wait_until(
            functools.partial(procs.docker_ping, h.docker_socket),
            timeout=DOCKERD_TIMEOUT,
            what=f"{h.name}: dockerd",
            log=root / "logs" / f"{h.name}-dockerd.log",
            proc=proc,
        )

    started: list[local.Process[bytes] | None] = []
    for first in range(0, len(hosts), DAEMON_WAVE):
        wave = hosts[first : first + DAEMON_WAVE]
        procs_of_wave = [start_daemon(h) for h in wave]
        started += procs_of_wave
        for h, proc in zip(wave, procs_of_wave):
            if proc is not None:
                wait_daemon(h, proc)
    # sshd comes second: its namespace bind-mounts the dockerd socket, which must exist.
    sshds = [
        hostprep.spawn_logged(
            hostprep.sshd_command(h, root, extra_binds[h.name], h.kind == "docker"),
            root / "logs" / f"{h.name}-sshd.log",
        )
        for h in hosts
    ]
    for h, proc in zip(hosts, sshds):
        procs.wait_until(
            functools.partial(procs.ssh_banner, h.address),
            timeout=SSHD_TIMEOUT,
            what=f"{h.name}: sshd",
            log=root / "logs" / f"{h.name}-sshd.log",
            proc=proc,
        )
    inner = [h for h in hosts[1:]] if bastion else []
    if inner:  # only now: the banner waits above come from the workstation
        remotes.block_direct(bridge, [h.address for h in inner], instance)
    final = tuple(
        dataclasses.replace(
            h,
            sshd_pid=s.pid,
            dockerd_pid=d.pid if d is not None else 0,
            storage_driver=storage,
            behind_bastion=h in inner,
        )
        for h, s, d in zip(hosts, sshds, started)
    )

    known_hosts = root / "known_hosts"
    known_hosts.write_text("".join(line + "\n" for line in known))
    inv = Path(inventory).absolute() if inventory else root / "inventory.yaml"
    inv.parent.mkdir(parents=True, exist_ok=True)
    data = config.inventory_data(
        [(h.name, h.address) for h in final],
        private_key=str(key),
        known_hosts=str(known_hosts),
    )
    remotes.annotate_inventory(data, final, final[0].address if bastion else None)
    inv.write_text(yamlio.dump(data))
    state = LabState(
        lab_dir=str(root),
        bridge=bridge,
        workstation_address=str(config.workstation_address(instance)),
        uplink=uplink,
        client_key=str(key),
        known_hosts=str(known_hosts),
        inventory=str(inv),
        forward_rule=True,
        workstation_dockerd_pid=ws_pid,
        hosts=final,
        bastion=final[0].name if bastion else None,
        users=users,
        **ws_fields,  # type: ignore[arg-type]
    )
    save_state(state)
    return state
