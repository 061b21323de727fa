"""`distrib lab ...` subcommands: argparse wiring around the lab API."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from distrib import local
from distrib.errors import LabError
from distrib.lab import config, core, engines, fetch, images, procs
from distrib.lab.state import LabState, load_state


def _echo(text: str) -> None:
    print(text, flush=True)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def cmd_up(args: argparse.Namespace) -> int:
    """`lab up`: create the hosts and print where the inventory is."""
    start = time.monotonic()
    state = core.up(
        args.hosts,
        uplink=args.uplink,
        inventory=args.inventory,
        directory=args.dir,
        instance=args.instance,
        echo=_echo,
        insecure_registries=args.insecure_registry or (),
        kinds=args.kinds,
        bastion=args.bastion,
        users=args.users,
        workstation=args.workstation,
        password_login=args.password_login,
    )
    for h in state.hosts:
        print(f"  {h.name:<8} {h.address:<12} sshd pid {h.sshd_pid}  dockerd pid {h.dockerd_pid}"
              f"  {h.engine or h.kind} {h.engine_version}")  # fmt: skip
    if state.workstation_engine:
        print(f"workstation engine: {state.workstation_engine} {state.workstation_engine_version}"
              f" on {state.workstation_docker_host} (`distrib lab env` to use it)")  # fmt: skip
    shaped = f", uplink shaped to {state.uplink}" if state.uplink else ""
    took = time.monotonic() - start
    print(f"lab up: {len(state.hosts)} hosts on {state.bridge} in {took:.1f}s{shaped}")
    print(f"inventory: {state.inventory}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """`lab down`: remove everything; fine when nothing exists."""
    core.down(args.dir, instance=args.instance, echo=_echo)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """`lab status`: one line per host; non-zero if there is no lab or a daemon is dead."""
    try:
        rows = core.status(args.dir, args.instance)
    except LabError as exc:
        if exc.message.startswith("no lab"):
            print("no lab")
            return 1
        raise
    print(f"{'HOST':<8} {'ADDRESS':<12} {'SSHD':<5} {'DOCKERD':<8} {'IMAGES':<6} ENGINE")
    for r in rows:
        images_text = "-" if r.images is None else str(r.images)
        sshd, dockerd = ("up" if r.sshd_up else "DEAD"), ("up" if r.dockerd_up else "DEAD")
        print(f"{r.name:<8} {r.address:<12} {sshd:<5} {dockerd:<8} {images_text:<6} "
              f"{r.engine} {r.version}")  # fmt: skip
    ws_ok = True
    state = core.require_state(args.dir, args.instance)
    if state.workstation_engine:
        host = state.workstation_docker_host or ""
        ws_ok = procs.docker_ping(host.removeprefix("unix://"))
        word = "up" if ws_ok else "DEAD"
        print(f"workstation engine: {state.workstation_engine} "
              f"{state.workstation_engine_version} on {host} {word}")  # fmt: skip
    return 0 if all(r.healthy for r in rows) and ws_ok else 1


def cmd_exec(args: argparse.Namespace) -> int:
    """`lab exec HOST -- CMD...`: run CMD in the host, streaming its output; its exit code."""
    argv: Sequence[str] = args.command
    if argv and argv[0] == "--":
        argv = argv[1:]
    host = core.require_state(args.dir, args.instance).host(args.host)
    proc = local.spawn(core.exec_argv(host, argv), stdin=sys.stdin, stdout=None, stderr=None)
    return proc.wait()


def _lab_state(args: argparse.Namespace) -> LabState | None:
    try:
        return load_state(args.dir, args.instance)
    except LabError:
        return None


def cmd_images(args: argparse.Namespace) -> int:
    """`lab images`: build the demo images in the workstation's docker (the lab's workstation
    engine when it has one)."""
    state = _lab_state(args)
    env = state.workstation_env() if state else {}
    built = images.build_images(bench=args.bench, huge=args.huge, rebuild=args.rebuild, env=env)
    for img in built:
        verb = "built" if img.built else "exists"
        print(f"{verb:<7} {img.tag:<24} {_human(img.size)}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """`lab env`: shell lines pointing docker (and distrib) at the lab's workstation engine."""
    state = core.require_state(args.dir, args.instance)
    env = state.workstation_env()
    if not env:
        print("# this lab uses the system's docker (no --workstation engine)")
        print("unset DOCKER_HOST")
        return 0
    print(f"export DOCKER_HOST={env['DOCKER_HOST']}")
    if state.workstation_docker_bin:
        print(f'export PATH={state.workstation_docker_bin}:"$PATH"')
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    """`lab engines`: the engine matrix and where each comes from on this machine."""
    print(f"{'ENGINE':<22} {'KIND':<11} {'VERSION':<28} STATUS")
    for entry in engines.CATALOGUE:
        res = fetch.resolve(entry.name)
        status = {"system": "available (system)", "cache": "cached"}.get(res.source, "missing")
        reason = f": {res.reason}" if res.reason else ""
        print(f"{entry.name:<22} {entry.kind:<11} {res.version or '-':<28} {status}{reason}")
    return 0


def cmd_engines_fetch(args: argparse.Namespace) -> int:
    """`lab engines fetch [NAME...]`: download the named engines (default: every fetchable
    one); exit 1 if one cannot be had, after trying the others."""
    names = args.names or [e.name for e in engines.CATALOGUE if e.suite in engines.FETCHABLE_SUITES]
    failed = 0
    for name in names:
        try:
            res = fetch.fetch(name, _echo)
        except LabError as exc:
            print(f"{name:<22} cannot be had: {exc}")
            failed += 1
            continue
        if res.available:
            print(f"{name:<22} {res.source:<7} {res.version}")
        else:
            print(f"{name:<22} cannot be had: {res.reason}")
            failed += 1
    return 1 if failed else 0


def _instance(text: str) -> int:
    """argparse type of --instance: an integer 0..9."""
    if not text.isdigit() or int(text) not in config.INSTANCES:
        raise argparse.ArgumentTypeError(f"must be an integer 0..{config.MAX_INSTANCE}")
    return int(text)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `lab` command (up, down, status, exec, images) to a parent CLI's subparsers."""
    lab = subparsers.add_parser(
        "lab",
        help="a sandbox of real hosts (netns + sshd + dockerd) on this machine",
        description="Run several real SSH+docker hosts in network namespaces (needs root).",
    )
    lab.set_defaults(func=lambda _args: (lab.print_help(), 2)[1])
    sub = lab.add_subparsers(dest="lab_command", metavar="COMMAND")

    def instance_option(p: argparse.ArgumentParser, extra: str = "") -> None:
        p.add_argument(
            "--instance",
            type=_instance,
            metavar="N",
            help=f"lab instance 0..{config.MAX_INSTANCE}: one lab per instance, several at once "
            f"(default ${config.ENV_INSTANCE} or 0){extra}",
        )

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir",
            help="lab directory (default $DISTRIB_LAB_DIR, else /var/lib/distrib-lab for "
            "instance 0, /var/lib/distrib-lab-N for instance N)",
        )
        instance_option(p)

    p = sub.add_parser("up", help="create N hosts (removes any previous lab first)")
    p.add_argument("--hosts", type=int, default=3, help="number of hosts (default 3)")
    p.add_argument("--uplink", metavar="RATE", help="shape workstation->hosts, e.g. 200mbit")
    p.add_argument("--inventory", metavar="PATH", help="where to write the inventory")
    p.add_argument(
        "--kinds",
        metavar="K1,K2,...",
        help="engine of each host in order, the last one repeats (default: all docker): "
        "docker, podman, containerd (the system's) or a versioned one: "
        + ", ".join(n for n in engines.NAMES if "-" in n)
        + " (see `distrib lab engines`)",
    )
    p.add_argument(
        "--workstation",
        metavar="ENGINE",
        choices=engines.WORKSTATION_ENGINES,
        help="run a lab-managed local dockerd of this engine ("
        + "|".join(engines.WORKSTATION_ENGINES)
        + ") on its own socket; `distrib lab env` points docker at it "
        "(default: the system's docker)",
    )
    p.add_argument(
        "--bastion",
        action="store_true",
        help="node1 is a bastion: the workstation reaches the other hosts only through it",
    )
    p.add_argument(
        "--users",
        action="store_true",
        help="create login users distrib-docker (docker group), distrib-sudo (NOPASSWD) and "
        "distrib-sudopw (sudo with a password) with the lab key",
    )
    p.add_argument(
        "--password-login",
        action="store_true",
        help="with --users: sshd also lets distrib-sudopw log in with its password "
        "(PasswordAuthentication for that user only), to test ansible_password / --ask-pass",
    )
    p.add_argument(
        "--insecure-registry",
        action="append",
        metavar="ADDR",
        help="let every host's dockerd use this plain-HTTP registry (host:port or CIDR, "
        "repeatable), e.g. for `lab registry up`",
    )
    common(p)
    p.set_defaults(func=cmd_up)

    from distrib.lab import registry as lab_registry

    lab_registry.register(sub, common)

    p = sub.add_parser("down", help="remove the lab (safe to repeat)")
    common(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="show hosts and whether their daemons answer")
    common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("env", help="print `export DOCKER_HOST=... PATH=...` for the lab's "
                       "workstation engine (eval \"$(distrib lab env)\")")  # fmt: skip
    common(p)
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("engines", help="list the engine matrix; `engines fetch` downloads")
    p.set_defaults(func=cmd_engines)
    esub = p.add_subparsers(dest="engines_command", metavar="COMMAND")
    f = esub.add_parser("fetch", help="download engines from newer Debian suites into "
                        f"{engines.CACHE_DIR} (idempotent)")  # fmt: skip
    f.add_argument("names", nargs="*", metavar="NAME", help="engines (default: all fetchable)")
    f.set_defaults(func=cmd_engines_fetch)

    p = sub.add_parser("exec", help="run a command inside a host: exec HOST -- CMD...")
    p.add_argument("host")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and its arguments")
    common(p)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("images", help="build demo images in the workstation's docker")
    p.add_argument("--bench", action="store_true", help="also build demo/big:1.0 (~500 MB)")
    p.add_argument("--huge", action="store_true", help="also build demo/huge:1.0 (~2 GB)")
    p.add_argument("--rebuild", action="store_true", help="rebuild tags that already exist")
    # The images go to the instance's workstation engine (`up --workstation`) if it has one,
    # else to the workstation's docker, which every instance shares.
    common(p)
    p.set_defaults(func=cmd_images)
