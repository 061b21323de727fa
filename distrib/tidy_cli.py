"""`distrib prune | rollback` (issue 18, item 4): argparse wiring around the tidy tasks
(tidy_tasks.PruneTask, RollbackTask), run through distrib.api and reported by the CLI's
reporter, which comes in with `register` (no import of distrib.cli: no cycle)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from distrib.errors import ConfigError
from distrib.refs import ImageRef, InvalidReference
from distrib.tidy_tasks import PruneTask, RollbackTask


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    inventory_args: Callable[[argparse.ArgumentParser], None],
    output_args: Callable[[argparse.ArgumentParser], None],
    selection_args: Callable[[argparse.ArgumentParser], None],
    run_and_report: Callable[[argparse.Namespace, Any, bool], int],
) -> None:
    """Add `prune` and `rollback` to distrib's subcommands."""
    prune = sub.add_parser(
        "prune",
        help="remove older tags of repositories on hosts, keeping the N most recent",
        description="On each host: keep the N most recent tags (by image creation time) of "
        "each REPO, remove the older ones, never an image a container uses (running or "
        "stopped). --check lists what would be removed and removes nothing.",
    )
    prune.add_argument("repos", nargs="+", metavar="IMAGE-REPO", help="e.g. myorg/app")
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="tags kept per repo")
    prune.add_argument("-C", "--check", action="store_true", help="list only, remove nothing")
    inventory_args(prune)
    output_args(prune)
    selection_args(prune)
    prune.set_defaults(func=cmd_prune, report=run_and_report)

    rollback = sub.add_parser(
        "rollback",
        help="re-point a tag on hosts to its previous version, verified",
        description="On each host: point IMAGE:TAG at its previous version - the tag given "
        "with --to, else REPO:distrib-prev-TAG (recorded by rollouts with keep and by each "
        "rollback), else the most recent older tag of REPO - then check the tag names it.",
    )
    rollback.add_argument("image", metavar="IMAGE:TAG")
    rollback.add_argument("--to", metavar="TAG", help="the tag of REPO to roll back to")
    rollback.add_argument("-C", "--check", action="store_true", help="show only, change nothing")
    inventory_args(rollback)
    output_args(rollback)
    selection_args(rollback)
    rollback.set_defaults(func=cmd_rollback, report=run_and_report)


def _run(args: argparse.Namespace, name: str, task: Any, extra: Any = None) -> int:
    """`task` on the hosts of a play named `name` through distrib.api, reported by the CLI
    (`args.report`: cli.run_and_report, given to `register`)."""
    from distrib import api
    from distrib.cli_args import options
    from distrib.playbook import DEFAULT_FORKS, Located, Play, Playbook

    play = Play(name=name, hosts="all", images=(), where=Located("<command line>", 0))
    play = replace(play, forks=DEFAULT_FORKS)
    book = Playbook("<command line>", (play,))
    run = api.TaskRun(options(args), book, {0: task}, extra)
    return int(args.report(args, run, False))


def _repo(text: str) -> str:
    try:
        ref = ImageRef.parse(text)
    except InvalidReference as exc:
        raise ConfigError(str(exc)) from None
    if ref.digest or ":" in text.rpartition("/")[2]:
        raise ConfigError(f"{text!r}: name a repository, without a tag or digest")
    return ref.name


def cmd_prune(args: argparse.Namespace) -> int:
    if args.keep < 1:
        raise ConfigError("--keep must be at least 1", hint="prune never removes every tag")
    repos = tuple(dict.fromkeys(_repo(r) for r in args.repos))
    task = PruneTask(repos, args.keep, args.check)

    def extra() -> dict[str, Any]:
        key = "would_remove" if args.check else "removed"
        return {key: {h: task.removed[h] for h in sorted(task.removed)}}

    return _run(args, f"prune {', '.join(repos)} (keep {args.keep})", task, extra)


def cmd_rollback(args: argparse.Namespace) -> int:
    try:
        ref = ImageRef.parse(args.image)
    except InvalidReference as exc:
        raise ConfigError(str(exc)) from None
    if ref.digest or ":" not in args.image.rpartition("/")[2]:
        raise ConfigError(f"{args.image!r}: name the tag to roll back (IMAGE:TAG)")
    if args.to is not None:
        try:
            ImageRef.parse(f"{ref.name}:{args.to}")
        except InvalidReference as exc:
            raise ConfigError(f"--to {args.to!r}: {exc}") from None
    return _run(args, f"rollback {ref}", RollbackTask(ref, args.to, args.check))
