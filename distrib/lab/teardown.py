"""Taking a lab instance down, and what `up` shares with it: the instance and workstation locks,
the scans that find an instance's leftovers (its names, its dir, its processes), the checks.

Every cleanup matches only its own instance's names, dir and processes; the workstation's
dockerd, shared by every instance, is stopped only by the instance that started it and only
when no other instance may use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from distrib import local
from distrib.errors import LabError, LocalError
from distrib.lab import config, procs, remotes
from distrib.lab.state import (
    STATE_FILE,
    LabState,
    current_instance,
    lab_dir,
    load_state,
)

WORKSTATION_SOCKET = "/var/run/docker.sock"
WORKSTATION_PIDFILE = "workstation-dockerd.pid"
WORKSTATION_ENGINE_DIR = "workstation"  # in the lab dir: the `up --workstation` dockerd
CLIENT_KEY = "id_ed25519"
# Machine-wide locks (in /run: gone after a reboot, like the labs). One per instance, held
# through its whole up/down, whatever dir it uses; one for starting/stopping the workstation
# dockerd, which every instance shares.
LOCK_DIR = Path("/run/distrib-lab")
WORKSTATION_LOCK = "workstation.lock"

Echo = Callable[[str], None]


def quiet(_: str) -> None:
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


def run_checked(cmd: Sequence[str], what: str, timeout: float = 60.0) -> local.Completed:
    try:
        return local.run(cmd, timeout=timeout, what=what)
    except LocalError as exc:
        raise LabError(str(exc)) from None


def try_run(cmd: Sequence[str], timeout: float = 30.0) -> bool:
    # Cleanup steps: the thing may legitimately be gone already.
    try:
        return local.run(cmd, check=False, timeout=timeout).ok
    except LocalError:
        return False


def instance_lock(instance: int) -> Path:
    return LOCK_DIR / f"instance-{instance}.lock"


@contextlib.contextmanager
def locked(root: Path, instance: int) -> Iterator[None]:
    # Two `up`/`down` of one instance at once (parallel test sessions) would tear each other's
    # hosts down. The instance lock covers its kernel names even with two different --dir;
    # the dir lock (taken second, always in this order) covers state.json, and is the one
    # older versions of the lab take.
    with procs.flock(instance_lock(instance)), procs.flock(root / ".lock"):
        yield


def lock_held(path: Path) -> bool:
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


def read_state_lenient(root: Path) -> LabState | None:
    try:
        return load_state(root)
    except LabError:
        return None  # a corrupt or old state: the scans in clear_instance still find everything


# ---------------------------------------------------------------------------------- teardown


def lab_netns(instance: int) -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return []
    return config.lab_netns(names, instance)


def bridge_exists(instance: int) -> bool:
    return Path(f"/sys/class/net/{config.bridge_name(instance)}").exists()


def other_instances_in_use(instance: int) -> list[int]:
    """Other instances that may have a lab (so may use the workstation dockerd): a state.json
    in their default dir, their bridge, or their up/down lock held right now. Errs towards
    "in use": a leftover bridge keeps the workstation dockerd running, never the reverse."""
    return [
        other
        for other in config.other_instances(instance)
        if (Path(config.default_lab_dir(other)) / STATE_FILE).exists()
        or bridge_exists(other)
        or lock_held(instance_lock(other))
    ]


def workstation_dockerd(root: Path) -> int | None:
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
            try_run(["umount", "-l", point])
    raise LabError(f"cannot unmount {', '.join(points[:3])} under {root}")


def clear_instance(
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
    keep_pid = workstation_dockerd(root) if keep_workstation else None
    namespaces = [
        n for n in (procs.netns_id(f"/run/netns/{ns}") for ns in lab_netns(instance)) if n
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
    for ns in lab_netns(instance):
        if not try_run(["ip", "netns", "delete", ns]):
            raise LabError(f"cannot delete network namespace {ns}")
    links = local.run(["ip", "-o", "link", "show"], check=False).stdout
    for link in config.lab_links(config.parse_link_names(links), instance):
        try_run(["ip", "link", "delete", link])
    remotes.unblock_direct(instance)  # `up --bastion` rules, found by their comment
    br = config.bridge_name(instance)
    rule = ["FORWARD", "-i", br, "-o", br, "-j", "ACCEPT"]
    for _ in range(20):  # a rule inserted twice by an interrupted up needs two deletes
        if not try_run(["iptables", "-w", "-C", *rule]):
            break
        try_run(["iptables", "-w", "-D", *rule])
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


def check_owner(state: LabState | None, root: Path, instance: int) -> None:
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
    echo: Echo = quiet,
) -> None:
    """Remove the lab of `instance` (default $DISTRIB_LAB_INSTANCE or 0): processes, mounts,
    namespaces, links, the iptables rule, host dirs. Nothing of another instance is touched.

    Safe when nothing exists and safe to repeat. Logs under `<labdir>/logs` are kept.
    """
    require_environment()
    number = current_instance(instance)
    root = lab_dir(directory, number)
    if not root.exists() and not lab_netns(number) and not bridge_exists(number):
        echo("no lab")
        return
    with locked(root, number):
        state = read_state_lenient(root)
        check_owner(state, root, number)
        # The workstation dockerd is shared by every instance. Rule: `down` stops it only if
        # this instance started it (its pidfile is in our dir) AND no other instance may be
        # using it (no state.json in their default dirs, no bridge of theirs, no up/down of
        # theirs in progress). The check and the stop happen under the workstation lock, which
        # `up` also holds while it makes sure that dockerd answers, so the two cannot race.
        with procs.flock(LOCK_DIR / WORKSTATION_LOCK):
            others = other_instances_in_use(number)
            if others and workstation_dockerd(root) is not None:
                echo(f"keeping the workstation dockerd: lab instances {others} may use it")
            keep = bool(others)
            clear_instance(root, state, number, keep_workstation=keep, keep_keys=False, echo=echo)
            if remotes.users_exist():
                # workstation-wide accounts (made by any `up --users` of this instance, even
                # if a later `up` did not ask for them): kept while another instance uses them
                users_elsewhere = [
                    o for o in config.other_instances(number)
                    if (st := read_state_lenient(Path(config.default_lab_dir(o)))) and st.users
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
