"""A real registry in the lab: Debian's `docker-registry` (the distribution registry, 2.8),
serving plain HTTP on a lab host's address from inside that host's network namespace.

    distrib lab registry up [--host node1] [--port 5000] [--htpasswd USER:PASSFILE]
    distrib lab registry status
    distrib lab registry down [--host node1] [--port 5000]

Everything lives in the host's dir (`hosts/<host>/registry-<port>/`: config, htpasswd, blobs,
`registry.json`), and the process runs in the host's netns, so `lab down` removes it with the
host (its netns scan stops the process, the host dir goes). Per lab instance, like the hosts.
Lab dockerds allow a plain-HTTP registry only when started with `lab up --insecure-registry`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from distrib import local, yamlio
from distrib.errors import LabError
from distrib.lab import core, procs
from distrib.lab.state import LabHost

PROGRAM = "docker-registry"
INFO_FILE = "registry.json"
READY_TIMEOUT = 20.0


@dataclass(frozen=True)
class LabRegistry:
    host: str
    address: str
    port: int
    pid: int
    dir: str
    config: str
    log: str
    user: str | None  # htpasswd user, when the registry asks for a login

    @property
    def endpoint(self) -> str:
        """HOST:PORT as it goes in front of image names."""
        return f"{self.address}:{self.port}"


def config_data(address: str, port: int, storage: str, htpasswd: str | None) -> dict[str, object]:
    """The registry's config.yml (pure)."""
    data: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "distrib-lab-registry"}},
        "storage": {"filesystem": {"rootdirectory": storage}, "delete": {"enabled": True}},
        "http": {"addr": f"{address}:{port}"},
    }
    if htpasswd:
        data["auth"] = {"htpasswd": {"realm": "distrib-lab", "path": htpasswd}}
    return data


def _registry_dir(host: LabHost, port: int) -> Path:
    return Path(host.host_dir) / f"registry-{port}"


def _answers(address: str, port: int) -> bool:
    """True once the registry answers GET /v2/ (200, or 401 when it asks for a login)."""
    try:
        with socket.create_connection((address, port), timeout=2.0) as s:
            s.sendall(f"GET /v2/ HTTP/1.0\r\nHost: {address}:{port}\r\n\r\n".encode())
            head = s.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.") and (b" 200 " in head or b" 401 " in head)


def _read(directory: Path) -> LabRegistry | None:
    try:
        return LabRegistry(**json.loads((directory / INFO_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _ours(registry: LabRegistry) -> bool:
    """The recorded pid is still our docker-registry (pids are reused)."""
    argv = procs.cmdline(registry.pid)
    return bool(argv) and os.path.basename(argv[0]) == PROGRAM and registry.config in argv


def registries(directory: str | None = None, instance: int | None = None) -> list[LabRegistry]:
    """The registries of the running lab (alive or not)."""
    state = core.require_state(directory, instance)
    found = []
    for host in state.hosts:
        for sub in sorted(Path(host.host_dir).glob("registry-*")):
            registry = _read(sub)
            if registry is not None:
                found.append(registry)
    return found


def up(
    host: str = "node1",
    port: int = 5000,
    *,
    htpasswd: tuple[str, str] | None = None,
    directory: str | None = None,
    instance: int | None = None,
) -> LabRegistry:
    """Start a registry on `host`'s lab address (replacing one on the same port).

    `htpasswd`: (user, password file): the registry then asks for that login. The password
    goes to `htpasswd -i` on stdin, never on a command line."""
    core.require_environment()
    if local.which(PROGRAM) is None:
        raise LabError(f"{PROGRAM} is not installed", hint="apt-get install docker-registry")
    if not 0 < port < 65536:
        raise LabError(f"not a port: {port}")
    state = core.require_state(directory, instance)
    lab_host = state.host(host)
    down(host, port, directory=directory, instance=instance)
    rdir = _registry_dir(lab_host, port)
    (rdir / "data").mkdir(parents=True, exist_ok=True)
    os.chmod(rdir, 0o700)
    auth_file = None
    user = None
    if htpasswd:
        user, password_file = htpasswd
        if local.which("htpasswd") is None:
            raise LabError("htpasswd is not installed", hint="apt-get install apache2-utils")
        try:
            password = Path(password_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise LabError(f"cannot read password file {password_file}: {exc.strerror}") from None
        auth_file = str(rdir / "htpasswd")
        local.run(
            ["htpasswd", "-c", "-i", "-B", auth_file, user],
            input=password,
            what="htpasswd",
        )
    config = rdir / "config.yml"
    config.write_text(
        yamlio.dump(config_data(lab_host.address, port, str(rdir / "data"), auth_file))
    )
    log = Path(state.lab_dir) / "logs" / f"registry-{host}-{port}.log"
    with open(log, "wb") as fh:
        # nsenter --net: the registry listens on the host's address, inside its namespace
        proc = local.spawn(
            ["nsenter", f"--net=/run/netns/{lab_host.netns}", PROGRAM, "serve", str(config)],
            stdout=fh,
            stderr=fh,
            new_session=True,
        )
    procs.wait_until(
        lambda: _answers(lab_host.address, port),
        timeout=READY_TIMEOUT,
        what=f"{host}: docker-registry",
        log=log,
        proc=proc,
    )
    registry = LabRegistry(
        host, lab_host.address, port, proc.pid, str(rdir), str(config), str(log), user
    )
    (rdir / INFO_FILE).write_text(json.dumps(asdict(registry), indent=2) + "\n")
    return registry


def down(
    host: str | None = None,
    port: int | None = None,
    *,
    directory: str | None = None,
    instance: int | None = None,
) -> list[LabRegistry]:
    """Stop the lab's registries (all, or those on `host` / `port`) and remove their data."""
    stopped = []
    for registry in registries(directory, instance):
        if (host and registry.host != host) or (port and registry.port != port):
            continue
        if _ours(registry):
            procs.terminate([registry.pid])
        shutil.rmtree(registry.dir, ignore_errors=True)
        stopped.append(registry)
    return stopped


# --- `distrib lab registry ...` -------------------------------------------------------------


def _htpasswd(text: str) -> tuple[str, str]:
    user, sep, path = text.partition(":")
    if not sep or not user or not path:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD_FILE")
    return user, path


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `lab registry up|down|status`."""
    parser = sub.add_parser("registry", help="a docker-registry on a lab host (plain HTTP)")
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
    actions = parser.add_subparsers(dest="registry_command", metavar="COMMAND")

    p = actions.add_parser("up", help="start a registry on a lab host's address")
    p.add_argument("--host", default="node1", help="the lab host (default node1)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument(
        "--htpasswd",
        type=_htpasswd,
        metavar="USER:PASSFILE",
        help="require this login (password read from PASSFILE)",
    )
    common(p)
    p.set_defaults(func=_cmd_up)

    p = actions.add_parser("down", help="stop registries (all, or --host/--port)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    common(p)
    p.set_defaults(func=_cmd_down)

    p = actions.add_parser("status", help="list the lab's registries")
    common(p)
    p.set_defaults(func=_cmd_status)


def _cmd_up(args: argparse.Namespace) -> int:
    registry = up(
        args.host, args.port, htpasswd=args.htpasswd, directory=args.dir, instance=args.instance
    )
    login = f", login {registry.user}" if registry.user else ""
    print(f"registry {registry.endpoint} on {registry.host} (pid {registry.pid}{login})")
    print(f"log: {registry.log}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    with contextlib.suppress(LabError):  # no lab: nothing to stop
        for registry in down(args.host, args.port, directory=args.dir, instance=args.instance):
            print(f"stopped registry {registry.endpoint} on {registry.host}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    rows = registries(args.dir, args.instance)
    if not rows:
        print("no registry")
        return 0
    for r in rows:
        alive = "up" if _ours(r) and _answers(r.address, r.port) else "DEAD"
        print(f"{r.host:<8} {r.endpoint:<20} {alive:<5} {r.user or '-'}")
    return 0
