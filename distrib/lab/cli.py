"""`distrib lab ...` subcommands: argparse wiring around the lab API."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from distrib import local
from distrib.errors import LabError
from distrib.lab import config, core, images


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
    )
    for h in state.hosts:
        print(f"  {h.name:<8} {h.address:<12} sshd pid {h.sshd_pid}  dockerd pid {h.dockerd_pid}")
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
    print(f"{'HOST':<8} {'ADDRESS':<12} {'SSHD':<5} {'DOCKERD':<8} IMAGES")
    for r in rows:
        images_text = "-" if r.images is None else str(r.images)
        sshd, dockerd = ("up" if r.sshd_up else "DEAD"), ("up" if r.dockerd_up else "DEAD")
        print(f"{r.name:<8} {r.address:<12} {sshd:<5} {dockerd:<8} {images_text}")
    return 0 if all(r.healthy for r in rows) else 1


def cmd_exec(args: argparse.Namespace) -> int:
    """`lab exec HOST -- CMD...`: run CMD in the host, streaming its output; its exit code."""
    argv: Sequence[str] = args.command
    if argv and argv[0] == "--":
        argv = argv[1:]
    host = core.require_state(args.dir, args.instance).host(args.host)
    proc = local.spawn(core.exec_argv(host, argv), stdin=sys.stdin, stdout=None, stderr=None)
    return proc.wait()


def cmd_images(args: argparse.Namespace) -> int:
    """`lab images`: build the demo images in the workstation's docker."""
    for img in images.build_images(bench=args.bench, huge=args.huge, rebuild=args.rebuild):
        verb = "built" if img.built else "exists"
        print(f"{verb:<7} {img.tag:<24} {_human(img.size)}")
    return 0


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
        help="engine of each host in order: docker, podman or containerd; the last one "
        "repeats (default: all docker)",
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

    p = sub.add_parser("exec", help="run a command inside a host: exec HOST -- CMD...")
    p.add_argument("host")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command and its arguments")
    common(p)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("images", help="build demo images in the workstation's docker")
    p.add_argument("--bench", action="store_true", help="also build demo/big:1.0 (~500 MB)")
    p.add_argument("--huge", action="store_true", help="also build demo/huge:1.0 (~2 GB)")
    p.add_argument("--rebuild", action="store_true", help="rebuild tags that already exist")
    # Accepted so scripts can pass --instance to every subcommand; the workstation's docker,
    # where the images are built, is shared by all instances.
    instance_option(p, "; no effect here: every instance shares the workstation's docker")
    p.set_defaults(func=cmd_images)
