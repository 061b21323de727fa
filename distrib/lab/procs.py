"""Processes and sockets of the lab, read from /proc and probed directly (no subprocess needed)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from distrib import local
from distrib.errors import LabError, LocalError, last_lines
from distrib.lab import config

# Programs a lab may leave running; a process is only killed by cmdline match if it is one of
# these, so a shell or a test runner whose arguments mention the lab dir is never hit.
DAEMON_NAMES = frozenset(
    {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "sshd",
     "nsenter", "unshare", "sh", "docker-proxy"}
)  # fmt: skip


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created with its parent dirs) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as dead; our own zombies are reaped here)."""
    with contextlib.suppress(ChildProcessError):  # not our child: someone else reaps it
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 follows the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    """The argv of `pid` ([] if it is gone or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def all_pids() -> list[int]:
    """Every pid currently in /proc."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def ancestors() -> set[int]:
    """This process and its ancestors: never to be killed by a cleanup scan."""
    found = set()
    pid = os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def cpu_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds) of every process, read from /proc/<pid>/stat once: the
    seconds are utime + stime + cutime + cstime, so a child this process already reaped is in
    it and a live child is not (summing a process tree counts each CPU second once)."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, float]] = {}
    for pid in all_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
            # after the name: state ppid ... utime(14) stime cutime cstime (1-based in proc(5))
            table[pid] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / tick)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return table


def tree_cpu_seconds(roots: Iterable[int], table: dict[int, tuple[int, float]]) -> float:
    """CPU seconds used so far by `roots` and every live descendant, plus the descendants they
    reaped (a before/after difference is the work the tree did in between)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, seen = 0.0, set()
    todo = [p for p in roots if p in table]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def netns_id(path: str) -> tuple[int, int] | None:
    """(device, inode) identity of a network namespace file (/run/netns/X or /proc/P/ns/net)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(namespaces: Iterable[tuple[int, int]]) -> set[int]:
    """Pids of every process living in one of the given network namespaces."""
    wanted = set(namespaces)
    if not wanted:
        return set()
    found = set()
    for pid in all_pids():
        ident = netns_id(f"/proc/{pid}/ns/net")
        if ident is not None and ident in wanted:
            found.add(pid)
    return found


def daemons_mentioning(directory: str) -> set[int]:
    """Pids of lab-type daemons whose command line names `directory` or a path below it.

    By whole path components: the lab dir /var/lib/distrib-lab must not claim the daemons of
    instance 1 in /var/lib/distrib-lab-1.
    """
    found = set()
    for pid in all_pids():
        argv = cmdline(pid)
        if not argv:
            continue
        name = os.path.basename(argv[0]).split(":", 1)[0]
        if name in DAEMON_NAMES and any(config.mentions_path(a, directory) for a in argv):
            found.add(pid)
    return found


def pids_in_cgroups_named(ids: Iterable[str]) -> set[int]:
    """Pids whose cgroup path mentions one of `ids` (container ids: /docker/<id>)."""
    wanted = {i for i in ids if len(i) >= 12}
    if not wanted:
        return set()
    found = set()
    for pid in all_pids():
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if any(i in text for i in wanted):
            found.add(pid)
    return found


def terminate(pids: Iterable[int], *, grace: float = 10.0) -> None:
    """SIGTERM `pids`, wait up to `grace` seconds, SIGKILL the survivors and wait for them."""
    targets = {p for p in pids if p > 1} - ancestors()
    for sig in (15, 9) if grace > 0 else (9,):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == 15 else 5.0)
        while time.monotonic() < deadline:
            targets = {p for p in targets if pid_alive(p)}
            if not targets:
                return
            time.sleep(0.05)
    if targets:
        raise LabError(f"processes survived SIGKILL: {sorted(targets)}")


def docker_ping(sock_path: str, timeout: float = 2.0) -> bool:
    """True if a dockerd answers `GET /_ping` on the unix socket `sock_path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = s.recv(256)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def containerd_ping(socket: str) -> bool:
    """True if the containerd on `socket` answers `ctr version`."""
    try:
        return local.run(["ctr", "-a", socket, "version"], check=False, timeout=10).ok
    except LocalError:
        return False


def ssh_banner(address: str, port: int = 22, timeout: float = 2.0) -> bool:
    """True if an SSH server greets on address:port (the `SSH-2.0-...` banner)."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def log_tail(path: str | Path, n: int = 5) -> str:
    """Last lines of a daemon log for an error message ('' when unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return last_lines(text, n)


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log: str | Path,
    proc: local.Process[bytes] | None = None,
) -> None:
    """Poll `ready` until true; LabError with the log tail on timeout or if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            raise LabError(
                f"{what} exited with status {proc.returncode}: {log_tail(log)} (log: {log})"
            )
        if time.monotonic() > deadline:
            raise LabError(
                f"{what} did not answer within {timeout:g}s: {log_tail(log)} (log: {log})"
            )
        time.sleep(0.1)
