"""Bringing the lab up and down, and reaching into its hosts.

Each host is a network namespace on the instance's bridge (`distrib0` for instance 0) with its
own sshd (in a private mount namespace: own /tmp, /var/tmp, /root/.ssh, /run/docker.sock) and its
own dockerd. Names are fixed per instance (`config.bridge_name` & co.): one lab per instance and
up to ten instances per machine. `up` first removes the leftovers of its own instance, and every
cleanup matches only its own instance's names, dir and processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from distrib import local, yamlio
from distrib.errors import LabError, LocalError
from distrib.lab import config, engines, fetch, procs, remotes
from distrib.lab.state import (
    STATE_FILE,
    LabHost,
    LabState,
    current_instance,
    lab_dir,
    load_state,
    save_state,
)

WORKSTATION_SOCKET = "/var/run/docker.sock"
WORKSTATION_PIDFILE = "workstation-dockerd.pid"
CLIENT_KEY = "id_ed25519"
DOCKERD_TIMEOUT = 60.0
SSHD_TIMEOUT = 20.0
DAEMON_WAVE = 16  # daemons started at once (see _up)
# Machine-wide locks (in /run: gone after a reboot, like the labs). One per instance, held
# through its whole up/down, whatever dir it uses; one for starting/stopping the workstation
# dockerd, which every instance shares.
LOCK_DIR = Path("/run/distrib-lab")
WORKSTATION_LOCK = "workstation.lock"

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def require_environment() -> None:
    """LabError unless running as root on Linux with every program the lab uses."""
    if sys.platform != "linux" or os.geteuid() != 0:
        raise LabError("distrib lab needs root on Linux (network namespaces)")
    missing = [prog for prog in config.REQUIRED_PROGRAMS if local.which(prog) is None]
    if missing:
        packages = sorted({config.REQUIRED_PROGRAMS[p] for p in missing})
        raise LabError(
            f"distrib lab needs {', '.join(missing)}",
            hint=f"apt-get install {' '.join(packages)}",
        )
    if not Path(config.SFTP_SERVER).exists():
        raise LabError(f"{config.SFTP_SERVER} is missing", hint="apt-get install openssh-server")


def _run(cmd: Sequence[str], what: str, timeout: float = 60.0) -> local.Completed:
    try:
        return local.run(cmd, timeout=timeout, what=what)
    except LocalError as exc:
        raise LabError(str(exc)) from None


def _try(cmd: Sequence[str], timeout: float = 30.0) -> bool:
    # Cleanup steps: the thing may legitimately be gone already.
    try:
        return local.run(cmd, check=False, timeout=timeout).ok
    except LocalError:
        return False


def _instance_lock(instance: int) -> Path:
    return LOCK_DIR / f"instance-{instance}.lock"


@contextlib.contextmanager
def _locked(root: Path, instance: int) -> Iterator[None]:
    # Two `up`/`down` of one instance at once (parallel test sessions) would tear each other's
    # hosts down. The instance lock covers its kernel names even with two different --dir;
    # the dir lock (taken second, always in this order) covers state.json, and is the one
    # older versions of the lab take.
    with procs.flock(_instance_lock(instance)), procs.flock(root / ".lock"):
        yield


def _lock_held(path: Path) -> bool:
    """True if another process holds the flock on `path` (an up/down in progress there)."""
    try:
        fh = open(path)  # noqa: SIM115 - closed below; a missing file means nobody holds it
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _read_state_lenient(root: Path) -> LabState | None:
    try:
        return load_state(root)
    except LabError:
        return None  # a corrupt or old state: the scans in _teardown still find everything


# ---------------------------------------------------------------------------------- teardown


def _lab_netns(instance: int) -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return []
    return config.lab_netns(names, instance)


def _bridge_exists(instance: int) -> bool:
    return Path(f"/sys/class/net/{config.bridge_name(instance)}").exists()


def _other_instances_in_use(instance: int) -> list[int]:
    """Other instances that may have a lab (so may use the workstation dockerd): a state.json
    in their default dir, their bridge, or their up/down lock held right now. Errs towards
    "in use": a leftover bridge keeps the workstation dockerd running, never the reverse."""
    return [
        other
        for other in config.other_instances(instance)
        if (Path(config.default_lab_dir(other)) / STATE_FILE).exists()
        or _bridge_exists(other)
        or _lock_held(_instance_lock(other))
    ]


def _workstation_dockerd(root: Path) -> int | None:
    """Pid of a workstation dockerd that a lab in `root` started (its pidfile is ours)."""
    marker = str(root / WORKSTATION_PIDFILE)
    for pid in procs.daemons_mentioning(marker):
        argv = procs.cmdline(pid)
        if argv and os.path.basename(argv[0]) == "dockerd":
            return pid
    return None


def _container_ids(root: Path) -> list[str]:
    return [p.name for p in root.glob("hosts/*/docker/containers/*") if p.is_dir()]


def _unmount_under(root: Path) -> None:
    # dockerd runs in the workstation's mount namespace, so its overlay mounts (and any left
    # by a killed dockerd) sit under the lab dir; lazy-unmount them deepest first.
    for _ in range(3):
        text = Path("/proc/self/mountinfo").read_text()
        points = config.mounts_under(config.parse_mountinfo(text), str(root))
        if not points:
            return
        for point in points:
            _try(["umount", "-l", point])
    raise LabError(f"cannot unmount {', '.join(points[:3])} under {root}")


def _teardown(
    root: Path,
    state: LabState | None,
    instance: int,
    *,
    keep_workstation: bool,
    keep_keys: bool,
    echo: Echo,
) -> None:
    """Remove every trace of the lab of `instance` in `root`, found from `state` and by
    scanning the system for this instance's names and for paths under `root` only.

    `up` keeps the workstation's dockerd and the key pairs: a re-created host keeps its
    identity like a rebooted one, so inventories, known_hosts and keys already handed to a
    running test session stay valid.
    """
    keep_pid = _workstation_dockerd(root) if keep_workstation else None
    namespaces = [
        n for n in (procs.netns_id(f"/run/netns/{ns}") for ns in _lab_netns(instance)) if n
    ]
    # Containers run in their own namespaces and outlive a SIGKILLed dockerd and shim: find
    # them by their container ids (the cgroup path) from the hosts' data roots. Kill them
    # first and at once: a container's pid 1 ignores SIGTERM, and a dockerd told to stop
    # would wait on each of them.
    containers = procs.pids_in_cgroups_named(_container_ids(root))
    if containers:
        echo(f"killing {len(containers)} container processes")
        procs.terminate(containers, grace=0)
    victims = procs.pids_in_netns(namespaces) | procs.daemons_mentioning(str(root))
    if state is not None:
        # Recorded pids are trusted only if they still look like ours: after a reboot or a
        # killed session the numbers may belong to unrelated processes.
        recorded = [p for h in state.hosts for p in (h.sshd_pid, h.dockerd_pid)]
        if state.workstation_dockerd_pid:
            recorded.append(state.workstation_dockerd_pid)
        if state.workstation_engine_pid:
            recorded.append(state.workstation_engine_pid)
        victims |= {
            p for p in recorded if any(config.mentions_path(a, str(root)) for a in procs.cmdline(p))
        }
    victims.discard(keep_pid or -1)
    if victims:
        echo(f"stopping {len(victims)} lab processes")
        procs.terminate(victims)
    _unmount_under(root)
    for ns in _lab_netns(instance):
        if not _try(["ip", "netns", "delete", ns]):
            raise LabError(f"cannot delete network namespace {ns}")
    links = local.run(["ip", "-o", "link", "show"], check=False).stdout
    for link in config.lab_links(config.parse_link_names(links), instance):
        _try(["ip", "link", "delete", link])
    remotes.unblock_direct(instance)  # `up --bastion` rules, found by their comment
    br = config.bridge_name(instance)
    rule = ["FORWARD", "-i", br, "-o", br, "-j", "ACCEPT"]
    for _ in range(20):  # a rule inserted twice by an interrupted up needs two deletes
        if not _try(["iptables", "-w", "-C", *rule]):
            break
        _try(["iptables", "-w", "-D", *rule])
    shutil.rmtree(root / "hosts", ignore_errors=True)
    shutil.rmtree(root / "build", ignore_errors=True)
    shutil.rmtree(root / WORKSTATION_ENGINE_DIR, ignore_errors=True)
    removed = ["known_hosts", "inventory.yaml", "state.json", "root-bashrc"]
    if not keep_keys:
        removed += [CLIENT_KEY, CLIENT_KEY + ".pub"]
        shutil.rmtree(root / "keys", ignore_errors=True)
    for name in removed:
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()


def _check_owner(state: LabState | None, root: Path, instance: int) -> None:
    """LabError if the lab in `root` belongs to another instance (a --dir or $DISTRIB_LAB_DIR
    shared between instances): cleaning it up as ours would hit that instance's daemons."""
    if state is not None and state.bridge != config.bridge_name(instance):
        raise LabError(
            f"lab dir {root} holds the lab on bridge {state.bridge}, not lab instance {instance}",
            hint="pass that lab's --instance, or give this instance a --dir of its own",
        )


def down(
    directory: str | os.PathLike[str] | None = None,
    *,
    instance: int | None = None,
    echo: Echo = _quiet,
) -> None:
    """Remove the lab of `instance` (default $DISTRIB_LAB_INSTANCE or 0): processes, mounts,
    namespaces, links, the iptables rule, host dirs. Nothing of another instance is touched.

    Safe when nothing exists and safe to repeat. Logs under `<labdir>/logs` are kept.
    """
    require_environment()
    number = current_instance(instance)
    root = lab_dir(directory, number)
    if not root.exists() and not _lab_netns(number) and not _bridge_exists(number):
        echo("no lab")
        return
    with _locked(root, number):
        state = _read_state_lenient(root)
        _check_owner(state, root, number)
        # The workstation dockerd is shared by every instance. Rule: `down` stops it only if
        # this instance started it (its pidfile is in our dir) AND no other instance may be
        # using it (no state.json in their default dirs, no bridge of theirs, no up/down of
        # theirs in progress). The check and the stop happen under the workstation lock, which
        # `up` also holds while it makes sure that dockerd answers, so the two cannot race.
        with procs.flock(LOCK_DIR / WORKSTATION_LOCK):
            others = _other_instances_in_use(number)
            if others and _workstation_dockerd(root) is not None:
                echo(f"keeping the workstation dockerd: lab instances {others} may use it")
            keep = bool(others)
            _teardown(root, state, number, keep_workstation=keep, keep_keys=False, echo=echo)
            if remotes.users_exist():
                # workstation-wide accounts (made by any `up --users` of this instance, even
                # if a later `up` did not ask for them): kept while another instance uses them
                users_elsewhere = [
                    o for o in config.other_instances(number)
                    if (st := _read_state_lenient(Path(config.default_lab_dir(o)))) and st.users
                ]  # fmt: skip
                if users_elsewhere:
                    echo(f"keeping the lab users: lab instances {users_elsewhere} use them")
                else:
                    remotes.remove_users()
        if state is not None and state.inventory and not _inside(state.inventory, root):
            echo(f"note: {state.inventory} describes hosts that no longer exist")
    echo("lab is down")


def _inside(path: str, root: Path) -> bool:
    return Path(path).absolute().is_relative_to(root)


# ---------------------------------------------------------------------------------- up


def _ensure_workstation_docker(root: Path, echo: Echo) -> int | None:
    """Make sure the workstation's dockerd answers; return its pid if this lab started it."""
    with procs.flock(LOCK_DIR / WORKSTATION_LOCK):  # one instance starts it, the others wait
        return _ensure_workstation_docker_locked(root, echo)


def _ensure_workstation_docker_locked(root: Path, echo: Echo) -> int | None:
    mine = _workstation_dockerd(root)
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


def _probe_storage_driver(root: Path) -> str:
    """overlay2 when an overlay mount works under the lab dir (the data roots live there)."""
    probe = root / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    for sub in ("lower", "upper", "work", "merged"):
        (probe / sub).mkdir(parents=True)
    opts = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
    ok = _try(["mount", "-t", "overlay", "overlay", "-o", opts, str(probe / "merged")])
    if ok:
        _try(["umount", str(probe / "merged")])
    shutil.rmtree(probe, ignore_errors=True)
    return "overlay2" if ok else "vfs"


def _setup_bridge(instance: int, uplink: str | None) -> None:
    br = config.bridge_name(instance)
    address = f"{config.workstation_address(instance)}/24"
    _run(["ip", "link", "add", br, "type", "bridge"], "creating bridge")
    _run(["ip", "addr", "add", address, "dev", br], "bridge address")
    _run(["ip", "link", "set", br, "up"], "bridge up")
    # A local dockerd sets FORWARD policy DROP, and with bridge-nf-call-iptables=1 frames
    # bridged between two lab hosts traverse FORWARD: accept them explicitly.
    _run(["iptables", "-w", "-I", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT"], "iptables")
    if uplink:
        # The root qdisc of the bridge device only sees what the workstation itself sends
        # into the bridge; frames forwarded between ports (host to host) leave through the
        # veth ends and are not shaped. Measured on this machine (python TCP sender, 4 s of
        # 64 KiB writes, receiver in node1): workstation -> node1 195 Mbit/s with 200mbit,
        # 964 Mbit/s with 1gbit, 18 Gbit/s unshaped; node2 -> node1 19-20 Gbit/s in all three.
        _run(["tc", *config.tbf_args(br, uplink)], "tc qdisc (uplink shaping)")


def _host_paths(root: Path, index: int, instance: int) -> LabHost:
    name = config.host_name(index)
    hd = root / "hosts" / name
    veth_root, veth_host = config.veth_names(index, instance)
    return LabHost(
        name=name,
        address=config.host_address(index, instance),
        netns=config.netns_name(index, instance),
        veth_root=veth_root,
        veth_host=veth_host,
        host_dir=str(hd),
        sshd_pid=0,
        sshd_config=str(hd / "ssh" / "sshd_config"),
        dockerd_pid=0,
        docker_socket=str(hd / "docker.sock"),
        data_root=str(hd / "docker"),
        exec_root=str(hd / "exec"),
        storage_driver="",
        tmp_dir=str(hd / "tmp"),
        var_tmp_dir=str(hd / "var-tmp"),
        ssh_dir=str(hd / "root-ssh"),
    )


def _prepare_host(
    host: LabHost,
    bridge: str,
    client_pub: str,
    authorized_keys: str = "/root/.ssh/authorized_keys",
    password_user: str | None = None,
) -> str:
    """Directories, host key, sshd_config and network of one host; returns its known_hosts line."""
    hd = Path(host.host_dir)
    for d, mode in (
        (hd / "ssh", 0o700),
        (Path(host.tmp_dir), 0o1777),
        (Path(host.var_tmp_dir), 0o1777),
        (Path(host.ssh_dir), 0o700),
        (Path(host.data_root), 0o711),
        (Path(host.exec_root), 0o700),
    ):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)  # mkdir's mode is filtered by the umask; /tmp needs its sticky bit
    key = _keypair(Path(host.host_dir).parent.parent / "keys" / f"{host.name}_ed25519", host.name)
    auth = Path(host.ssh_dir) / "authorized_keys"
    auth.write_text(client_pub)
    os.chmod(auth, 0o600)
    Path(host.sshd_config).write_text(
        config.sshd_config(
            address=host.address,
            host_key=str(key),
            # Resolved inside the host's mount namespace, where /root/.ssh is host.ssh_dir:
            # sshd's StrictModes then checks /root/.ssh, not the lab dir's parents (which may
            # be a world-writable /tmp for a custom --dir).
            authorized_keys=authorized_keys,
            pid_file=str(hd / "sshd.pid"),
            docker_socket=host.docker_socket,
            password_user=password_user,
        )
    )
    ns = host.netns
    _run(["ip", "netns", "add", ns], f"{host.name}: ip netns add")
    _run(["ip", "link", "add", host.veth_root, "type", "veth",
          "peer", "name", host.veth_host, "netns", ns], f"{host.name}: veth")  # fmt: skip
    _run(["ip", "link", "set", host.veth_root, "master", bridge, "up"], "veth on bridge")
    _run(["ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", host.veth_host], "address")
    _run(["ip", "-n", ns, "link", "set", host.veth_host, "up"], f"{host.name}: link up")
    _run(["ip", "-n", ns, "link", "set", "lo", "up"], f"{host.name}: lo up")
    return config.known_hosts_line(host.address, Path(f"{key}.pub").read_text())


def _keypair(path: Path, comment: str) -> Path:
    """An ed25519 key pair without passphrase at `path`, generated unless both halves exist."""
    if path.is_file() and Path(f"{path}.pub").is_file():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in (path, Path(f"{path}.pub")):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
         f"ssh-keygen {comment}")  # fmt: skip
    return path


WORKSTATION_ENGINE_DIR = "workstation"  # in the lab dir: the `up --workstation` dockerd


def _daemon_json(directory: Path, res: engines.Resolution) -> str | None:
    """A daemon.json for an engine with the containerd image store (None otherwise)."""
    if not res.spec.containerd_store:
        return None
    path = directory / "daemon.json"
    path.write_text(engines.daemon_json(res.spec))
    return str(path)


def _start_workstation_engine(
    root: Path, res: engines.Resolution, storage: str, echo: Echo
) -> dict[str, object]:
    """Start the lab's own local dockerd of engine `res` (own socket, data and exec roots in
    the lab dir, root network namespace, no networking of its own); its LabState fields."""
    wd = root / WORKSTATION_ENGINE_DIR
    shutil.rmtree(wd, ignore_errors=True)  # after _teardown: nothing is mounted there
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
        config_file=_daemon_json(wd, res),
    )
    log = root / "logs" / "workstation-engine-dockerd.log"
    echo(f"starting the workstation engine {res.spec.name} ({res.version})")
    proc = _spawn_logged(argv, log, fetch.daemon_env(res))
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


def _containerd_ping(socket: str) -> bool:
    return _try(["ctr", "-a", socket, "version"], timeout=10)


def _spawn_logged(
    cmd: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> local.Process[bytes]:
    with open(log, "wb") as fh:
        # A new session: the daemons must outlive the CLI process that started them.
        return local.spawn(cmd, stdout=fh, stderr=fh, new_session=True, env=env)


def _shell_rc_binds(root: Path) -> list[config.Bind]:
    """A stock root ~/.bashrc inside every host: the hosts share the workstation's /root, and
    bash sources ~/.bashrc for every command sshd runs. A workstation rc that starts version
    managers (pyenv init: ~120 ms here) would otherwise be paid by each remote command, a
    cost no real host of the inventory has."""
    rc = Path("/root/.bashrc")
    if not rc.is_file():
        return []
    stock = root / "root-bashrc"
    if not stock.exists():
        default = Path("/usr/share/base-files/dot.bashrc")
        stock.write_text(default.read_text() if default.is_file() else "")
        os.chmod(stock, 0o644)
    return [config.Bind(str(stock), str(rc))]


def _sshd_command(
    host: LabHost, root: Path, extra: Sequence[config.Bind] = (), docker: bool = True
) -> list[str]:
    binds = [
        config.Bind(host.tmp_dir, "/tmp"),
        config.Bind(host.var_tmp_dir, "/var/tmp"),
        config.Bind(host.ssh_dir, "/root/.ssh"),
        # sudo drops DOCKER_HOST, so the default socket path must be this host's dockerd too.
        *([config.Bind(host.docker_socket, "/run/docker.sock")] if docker else []),
        *extra,
        # The workstation's client key must not be readable from a host, or host-to-host
        # tests would pass on a key a real host never has.
        config.Bind("/dev/null", str(root / CLIENT_KEY)),
        *_shell_rc_binds(root),
    ]
    script = config.sshd_wrapper_script(binds, host.sshd_config, host.name)
    # --uts too: `hostname` inside a host says node1, not the workstation's name.
    return ["nsenter", f"--net=/run/netns/{host.netns}", "unshare", "--mount", "--uts",
            "--propagation", "private", "sh", "-c", script]  # fmt: skip


def up(
    n_hosts: int,
    *,
    uplink: str | None = None,
    inventory: str | os.PathLike[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
    instance: int | None = None,
    echo: Echo = _quiet,
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
    with _locked(root, number):
        previous = _read_state_lenient(root)
        _check_owner(previous, root, number)
        _teardown(root, previous, number, keep_workstation=True, keep_keys=True, echo=echo)
        (root / "logs").mkdir(exist_ok=True)
        try:
            return _up(
                root, number, n_hosts, uplink, inventory, echo, insecure_registries,
                [resolved[n] for n in names], bastion, users, ws_engine, password_login,
            )  # fmt: skip
        except BaseException:
            # Never leave half a lab: the next `up` or `down` would have to guess.
            _teardown(root, None, number, keep_workstation=True, keep_keys=True, echo=echo)
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
    storage = _probe_storage_driver(root)
    ws_fields = _start_workstation_engine(root, ws_engine, storage, echo) if ws_engine else {}
    key = _keypair(root / CLIENT_KEY, "distrib-lab")
    client_pub = Path(f"{key}.pub").read_text()
    bridge = config.bridge_name(instance)
    _setup_bridge(instance, uplink)

    hosts = [
        dataclasses.replace(
            _host_paths(root, k, instance),
            kind=res.spec.kind,
            engine=res.spec.name,
            engine_version=res.version,
        )
        for k, res in zip(range(1, n_hosts + 1), kinds)
    ]
    # `%h`: each user's own (per-host private) ~/.ssh; for root that is /root/.ssh as always
    authorized = "%h/.ssh/authorized_keys" if users else "/root/.ssh/authorized_keys"
    password_user = remotes.PASSWORD_USER if password_login else None
    known = [_prepare_host(h, bridge, client_pub, authorized, password_user) for h in hosts]
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
            return _spawn_logged(cmd, root / "logs" / f"{h.name}-containerd.log",
                                 fetch.daemon_env(res))  # fmt: skip
        daemon_json = _daemon_json(Path(h.host_dir), res)
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
        return _spawn_logged(cmd, root / "logs" / f"{h.name}-dockerd.log",
                             fetch.daemon_env(res))  # fmt: skip

    def wait_daemon(h: LabHost, proc: local.Process[bytes]) -> None:
        if h.kind == "containerd":
            procs.wait_until(
                functools.partial(_containerd_ping, remotes.containerd_socket(h.host_dir)),
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
    sshds = [_spawn_logged(_sshd_command(h, root, extra_binds[h.name], h.kind == "docker"),
                           root / "logs" / f"{h.name}-sshd.log")
             for h in hosts]  # fmt: skip
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


# ---------------------------------------------------------------------------------- use


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
                procs.pid_alive(h.dockerd_pid) and _containerd_ping(socket)
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
    return {
        h.name: procs.tree_cpu_seconds((h.sshd_pid, h.dockerd_pid), table) for h in state.hosts
    }
