"""Command line: parses the flags, runs distrib.api, prints what it returns as ansible-playbook
does. Errors are handled once, here: expected ones are one clear line and a documented exit code;
unexpected ones a traceback and exit 250 (STYLE: handle errors once)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Sequence
from typing import IO, Any

from distrib import __version__, api
from distrib.cli_args import (
    inventory_args,
    options,
    output_args,
    play_args,
    report_args,
    selection_args,
    vault_args,
)
from distrib.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_UNEXPECTED,
    ConfigError,
    DistribError,
    printable,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distrib",
        description="Distribute Docker images to many hosts over SSH: save and compress once, "
        "ship in parallel, load, verify.",
    )
    parser.add_argument("--version", action="version", version=f"distrib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run a playbook (like ansible-playbook)")
    run.add_argument("playbook", help="playbook YAML file")
    inventory_args(run)
    output_args(run)
    selection_args(run)
    run.add_argument(
        "-C", "--check", action="store_true", help="read-only: show what would be shipped"
    )
    run.add_argument("--retry-file", metavar="PATH", help="write failed/unreachable hosts here")
    run.add_argument("--syntax-check", action="store_true", help="check the playbook, then stop")
    report_args(run)
    run.set_defaults(func=cmd_run)

    push = sub.add_parser(
        "push",
        help="ship images to hosts without a playbook (ad-hoc, one play)",
        description="Ship IMAGEs as one play: to user@host[:port] targets (no inventory needed; "
        "~/.ssh/known_hosts and the default keys, as ssh) or to inventory hosts (-i, chosen "
        "with -l, default all). Same checks, recap, reports and exit codes as run.",
    )
    push.add_argument(
        "words",
        nargs="*",
        metavar="IMAGE|HOST",
        help="images, then optional user@host[:port] targets (the @ tells them apart)",
    )
    inventory_args(push)
    output_args(push)
    selection_args(push)
    play_args(push)
    push.add_argument("-C", "--check", action="store_true", help="read-only: what would be shipped")
    push.add_argument("--retry-file", metavar="PATH", help="write failed/unreachable hosts here")
    report_args(push)
    push.set_defaults(func=cmd_push)

    plan = sub.add_parser("plan", help="same as run --check: what would be shipped, per host")
    plan.add_argument("playbook", help="playbook YAML file")
    inventory_args(plan)
    output_args(plan)
    selection_args(plan)
    plan.add_argument("--syntax-check", action="store_true", help="check the playbook, then stop")
    plan.set_defaults(func=cmd_run, check=True)

    verify = sub.add_parser(
        "verify", help="check that hosts hold images with the local content (no shipping)"
    )
    verify.add_argument("images", nargs="+", metavar="IMAGE", help="image references")
    inventory_args(verify)
    output_args(verify)
    verify.add_argument("--hosts", default="all", help="host pattern (default: all)")
    selection_args(verify)
    verify.add_argument("--retry-file", metavar="PATH", help="write drifted/unreachable hosts here")
    report_args(verify)
    verify.set_defaults(func=cmd_verify)

    cache = sub.add_parser("cache", help="list or prune the archive and layer cache")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    cache_sub.required = True
    cache_list = cache_sub.add_parser("list", help="what the cache holds, oldest use first")
    cache_list.set_defaults(func=cmd_cache)
    cache_prune = cache_sub.add_parser("prune", help="remove least recently used entries")
    cache_prune.add_argument(
        "--max-size", default=None, help="keep at most this (default $DISTRIB_CACHE_MAX or 20G)"
    )
    cache_prune.add_argument("--all", action="store_true", help="empty the cache")
    cache_prune.set_defaults(func=cmd_cache)

    inv = sub.add_parser("inventory", help="show the parsed inventory (like ansible-inventory)")
    inventory_args(inv)
    inv.add_argument(
        "--playbook-dir",
        metavar="DIR",
        help="read group_vars/ and host_vars/ in DIR too, as a playbook there would",
    )
    vault_args(inv.add_argument_group("vault"))
    mode = inv.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="all hosts and groups as JSON")
    mode.add_argument("--graph", action="store_true", help="the group tree")
    inv.set_defaults(func=cmd_inventory)

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description='Print a completion script. bash: eval "$(distrib completion bash)" in '
        '~/.bashrc; zsh: distrib completion zsh > "${fpath[1]}/_distrib"; fish: distrib '
        "completion fish > ~/.config/fish/completions/distrib.fish",
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
    completion.set_defaults(func=cmd_completion)

    from distrib.workflows.cli import register as register_workflows  # commit, backup, restore

    register_workflows(sub, inventory_args, output_args, run_and_report)

    from distrib.tidy_cli import register as register_tidy  # prune, rollback (issue 18)

    register_tidy(sub, inventory_args, output_args, selection_args, run_and_report)

    try:
        from distrib import lab
    except ImportError:  # pragma: no cover - the lab package is part of the distribution
        lab = None  # type: ignore[assignment]
    if lab is not None and hasattr(lab, "register"):
        lab.register(sub)
    return parser


def cmd_cache(args: argparse.Namespace) -> int:
    from distrib import cache, units
    from distrib.archive import cache_dir
    from distrib.units import human_bytes

    if args.cache_command == "list":
        listed = cache.entries()
        for entry in listed:
            print(f"{entry.kind:8} {human_bytes(entry.size):>10}  {entry.label}")
        total = sum(e.size for e in listed)
        print(f"{len(listed)} entries, {human_bytes(total)} in {cache_dir()}")
        return 0
    limit = 0 if args.all else units.parse_size(args.max_size or cache.DEFAULT_MAX)
    if args.max_size is None and not args.all:
        limit = cache.max_bytes()
    removed, freed = cache.prune(limit)
    print(f"removed {removed} entries, {human_bytes(freed)} freed")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    from distrib.completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    inventory = api.Inputs(options(args)).inventory()
    if args.list:
        print(json.dumps(inventory.to_list_json(), indent=2, sort_keys=True, default=str))
    else:
        print(inventory.graph())
    return 0



def _list_hosts(playbook: Any, plan: Any) -> str:
    """`--list-hosts` in ansible-playbook's layout."""
    lines = ["", f"playbook: {playbook.path}"]
    for number, play_plan in enumerate(plan.plays, 1):
        play = play_plan.play
        pattern = play.hosts if isinstance(play.hosts, str) else ",".join(play.hosts)
        lines += [
            "",
            f"  play #{number} ({pattern}): {play.name}\tTAGS: []",
            f"    pattern: [{pattern!r}]",
            f"    hosts ({len(play_plan.hosts)}):",
        ]
        lines += [f"      {h.name}" for h in play_plan.hosts]
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from distrib.playbook import Playbook

    playbook = Playbook.load(args.playbook)
    if getattr(args, "syntax_check", False):  # as ansible-playbook: parsed, nothing else
        print(f"\nplaybook: {args.playbook}")
        return 0
    return run_and_report(args, api.Rollout(options(args), playbook))


def cmd_push(args: argparse.Namespace) -> int:
    """`distrib push IMAGE... [HOST...]`: one play from flags, then exactly what `run` does."""
    from distrib import adhoc
    from distrib.playbook import Playbook, adhoc_play

    images, hosts = adhoc.split_words(args.words, need_images=not args.images_from)
    if hosts:
        if args.inventory:
            raise ConfigError(
                "user@host targets push without an inventory",
                hint="with -i, choose inventory hosts with -l PATTERN",
            )
        args.adhoc_inventory = adhoc.inventory_for(hosts, args.known_hosts, args.private_key)
    elif not api.has_inventory(options(args)):
        raise ConfigError(
            "no hosts to push to",
            hint="name targets as user@host[:port], or pass -i INVENTORY (and -l PATTERN)",
        )
    flags = {
        "compression": args.compression,
        "level": args.level,
        "delta": args.delta,
        "fanout": args.fanout,
        "relay_width": args.relay_width,
        "relay_roots": args.relay_roots,
        "uplink": args.uplink,
        "transfer": args.transfer,
        "verify": args.verify,
        "serial": _serial_flag(args.serial),
        "max_fail_percentage": args.max_fail_percentage,
        "remote_tmp": args.remote_tmp,
        "keep": args.keep,
        "images_from": _archive_named(args.images_from, args.archive_name),
        "local_pull": args.local_pull,
        "platform": args.platform,
        "local_load": args.local_load,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    play = adhoc_play("all", images, name="push", **given)
    return run_and_report(args, api.Rollout(options(args), Playbook(adhoc.WHERE, (play,))))


def _archive_named(paths: list[str] | None, name: str | None) -> list[Any] | None:
    """`--images-from ARCHIVE --archive-name REF` as a playbook's `{file:, name:}`."""
    if name is None:
        return paths
    from distrib import imagearchive

    archives = [p for p in paths or [] if imagearchive.is_archive(p)]
    if len(archives) != 1:
        raise ConfigError(
            f"--archive-name names the image of one --images-from archive, not {len(archives)}"
        )
    return [{"file": p, "name": name} if p in archives else p for p in paths or []]


def _serial_flag(text: str | None) -> list[int | str] | None:
    """`--serial 1,30%` as a playbook's `serial: [1, "30%"]`."""
    if text is None:
        return None
    return [int(part) if part.strip().isdigit() else part.strip() for part in text.split(",")]



def cmd_verify(args: argparse.Namespace) -> int:
    run = api.Verify(options(args), args.images, args.hosts)
    return run_and_report(args, run, matrix=True)


def run_and_report(args: argparse.Namespace, run: api.Run, matrix: bool = False) -> int:
    """Plan `run` (--list-hosts: print the hosts and stop), run it, print its report."""
    plan = run.plan()
    if run.options.list_hosts:
        print(_list_hosts(run.playbook, plan))
        return 0
    return _report(args, run.options, run.run(), matrix)


def _report(
    args: argparse.Namespace, opts: api.Options, result: api.RunResult, matrix: bool
) -> int:
    """The end of a run as ansible-playbook prints it: each host's line not printed live, what
    each play shipped, the matrix (verify), the PLAY RECAP; then --json and the report files."""
    from distrib import report

    out: IO[str] = opts.out or sys.stdout
    executed = result.executed
    if executed is None:
        print("interrupted before any host finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    colour = report.use_colour(out)
    for unshown, notes in zip(result.unshown, result.notes):
        for host_result in unshown:  # off a terminal: printed live, not twice
            print(report.host_line(host_result, opts.verbose, colour), file=out)
        for line in notes:
            print(line, file=out)
    if matrix:
        print(report.matrix(executed), file=out)
    print(report.recap(executed, colour), file=out)
    api.keep_cache_in_bounds()
    if args.json:
        added = result.extra()
        if getattr(args, "json_format", None) == "ansible":
            document = _ansible_document(args, result.plan, executed, result.play_times, added)
            print(json.dumps(document, indent=4))
        else:
            document = {**report.to_json(executed), **added}
            print(json.dumps(document, indent=2) if added else report.dumps(executed))
    written = api.write_reports(opts, result)  # after the JSON: it must not lose the result
    return result.exit_code or written


def _ansible_document(
    args: argparse.Namespace, plan: Any, run: Any, times: list[float], added: dict[str, Any]
) -> dict[str, Any]:
    """The run in the layout of Ansible's json callback (issue 17)."""
    from distrib import ansible_json

    command = str(getattr(args, "command", "run"))
    action = {"verify": "distrib.images.verify"}.get(command, "distrib.images.distribute")
    if command not in ("run", "plan", "push", "verify"):
        action = f"distrib {command}"
    plays = []
    for play_plan in plan.plays:
        where = play_plan.play.where
        path = f"{where.file}:{where.line}" if where.line else where.file
        plays.append((play_plan.play.name, path))
    name = {"verify": "verify images"}.get(command, "distribute images")
    if action.startswith("distrib "):
        name = action
    return ansible_json.document(run, plays, action, name, times, time.time(), added)



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, usage errors exit 2
        code = exc.code if isinstance(exc.code, int) else 1
        return EXIT_CONFIG if code == 2 else code
    if getattr(args, "json_format", None):
        args.json = True
    try:
        return int(args.func(args))
    except DistribError as exc:  # it may quote what a host sent: no terminal controls
        print(f"ERROR: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
    except Exception:
        traceback.print_exc()
        print(
            "ERROR: unexpected internal error (a bug in distrib); the traceback above says where",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED
