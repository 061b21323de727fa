"""`distrib commit | backup | restore`: argparse wiring around the workflow steps. They run
through distrib.api (`api.TaskRun`) and are reported by cli.run_and_report: forks, failure
limits, progress, the PLAY RECAP, --json and the exit codes behave as for `distrib run`.

The report function comes in with `register` (no import of distrib.cli: no cycle)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from distrib.errors import ConfigError

ArgsAdder = Callable[[argparse.ArgumentParser], None]
# (args, run, matrix) -> exit code: distrib.cli.run_and_report
Reporter = Callable[[argparse.Namespace, Any, bool], int]
COMMAND_LINE = "<command line>"


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    inventory_args: ArgsAdder,
    output_args: ArgsAdder,
    run_and_report: Reporter,
) -> None:
    """Add `commit`, `backup` and `restore` to distrib's subcommands."""

    def common(p: argparse.ArgumentParser, limit_help: str) -> None:
        inventory_args(p)
        output_args(p)
        p.add_argument("-l", "--limit", help=limit_help)
        p.add_argument("--json", action="store_true", help="write the result as JSON to stdout")

    commit = sub.add_parser(
        "commit",
        help="snapshot a container into an image (docker commit), on a host or locally",
        description="docker commit CONTAINER NAME:TAG on one inventory host (--limit HOST) or "
        "on this workstation (--local), with a message and an author recorded in the image.",
    )
    commit.add_argument("container", help="container name or ID")
    commit.add_argument("image", metavar="NAME:TAG", help="the image to create")
    commit.add_argument("-m", "--message", help="commit message (docker inspect: .Comment)")
    commit.add_argument("-a", "--author", help="author (docker inspect: .Author)")
    commit.add_argument("--local", action="store_true", help="commit on this workstation")
    common(commit, "the one host to commit on")
    commit.set_defaults(func=cmd_commit, forks=1, report=run_and_report)

    backup = sub.add_parser(
        "backup",
        help="commit containers on hosts and fetch them as compressed archives",
        description="On each host, in parallel: commit each CONTAINER to a backup image, save "
        "and compress it on the host, stream it to DEST/HOST/CONTAINER-TIMESTAMP.tar.gz with "
        "its sha256 checked against the host's, and write a metadata JSON next to it.",
    )
    backup.add_argument("containers", nargs="+", metavar="CONTAINER")
    backup.add_argument("--dest", default="backups", help="directory for archives (./backups)")
    backup.add_argument("--compression", choices=("gzip", "zstd"), default="gzip")
    backup.add_argument("--level", type=int, help="compression level (gzip 6, zstd 3)")
    backup.add_argument(
        "--keep-image",
        action="store_true",
        help="keep the committed backup image on the host (default: removed once fetched)",
    )
    backup.add_argument("-f", "--forks", type=int, help="hosts handled in parallel (10)")
    backup.add_argument("--retry-file", metavar="PATH", help="write failed hosts here")
    common(backup, "host pattern (default: all hosts)")
    backup.set_defaults(func=cmd_backup, report=run_and_report)

    restore = sub.add_parser(
        "restore",
        help="distribute a backup archive to hosts, checked and verified like any rollout",
    )
    restore.add_argument("archive", help="a backup archive (or any `docker save` archive)")
    restore.add_argument(
        "--metadata", help="its metadata JSON (default: next to the archive, when present)"
    )
    restore.add_argument("-f", "--forks", type=int, help="hosts handled in parallel (10)")
    restore.add_argument("-C", "--check", action="store_true", help="read-only: what would ship")
    restore.add_argument("--retry-file", metavar="PATH", help="write failed hosts here")
    common(restore, "host pattern (default: all hosts)")
    restore.set_defaults(func=cmd_restore, report=run_and_report)


def _play(name: str, images: tuple[Any, ...] = (), forks: int | None = None) -> Any:
    from distrib.playbook import DEFAULT_FORKS, Located, Play

    return Play(
        name=name,
        hosts="all",
        images=images,
        where=Located(COMMAND_LINE, 0),
        forks=forks or DEFAULT_FORKS,
    )


def _task_run(args: argparse.Namespace, play: Any, task: Any, extra: Any = None) -> Any:
    """An api.TaskRun of `task` on `play`'s hosts, with the flags' options."""
    from distrib import api
    from distrib.cli_args import options
    from distrib.playbook import Playbook

    return api.TaskRun(options(args), Playbook(COMMAND_LINE, (play,)), {0: task}, extra)


def cmd_commit(args: argparse.Namespace) -> int:
    from distrib import commands, local
    from distrib.archive import docker_command
    from distrib.workflows import spec, steps

    container = spec.check_container(args.container)
    ref = spec.check_commit_ref(args.image)
    if args.local:
        if args.limit:
            raise ConfigError("--local and --limit exclude each other")
        argv = commands.commit_argv(docker_command(), container, ref, args.message, args.author)
        done = local.run(argv, timeout=steps.COMMIT_TIMEOUT, what=f"docker commit {container}")
        image_id = commands.parse_commit(done.stdout)
        out = sys.stderr if args.json else sys.stdout
        print(f"committed {container} as {ref} ({image_id[:19]}) on this workstation", file=out)
        if args.json:
            print(json.dumps({"image": str(ref), "image_id": image_id}))
        return 0
    if not args.limit:
        raise ConfigError("commit needs --limit HOST (the host to commit on) or --local")
    task = steps.CommitTask(container, ref, args.message, args.author)
    run = _task_run(args, _play(f"commit {container}"), task)
    hosts = [h.name for h in run.plan().hosts]
    if len(hosts) != 1:
        raise ConfigError(
            f"--limit {args.limit!r} selects {len(hosts)} hosts"
            + (f" ({', '.join(hosts[:5])})" if hosts else "")
            + "; commit runs on exactly one"
        )
    return int(args.report(args, run, False))


def cmd_backup(args: argparse.Namespace) -> int:
    from distrib import archive as archive_mod
    from distrib.archive import DEFAULT_LEVELS
    from distrib.workflows import spec, steps

    containers = tuple(dict.fromkeys(spec.check_container(c) for c in args.containers))
    level = DEFAULT_LEVELS[args.compression] if args.level is None else args.level
    if not 1 <= level <= (19 if args.compression == "zstd" else 9):
        raise ConfigError(f"--level {level} is out of range for {args.compression}")
    if args.forks is not None and args.forks < 1:
        raise ConfigError("--forks must be at least 1")
    dest = os.path.abspath(args.dest)
    play = _play(f"backup {', '.join(containers)}", forks=args.forks)
    task = steps.BackupTask(containers, dest, args.compression, level)

    def extra() -> dict[str, Any]:
        return {"backups": [r.to_json() for r in sorted(task.records, key=_record_key)]}

    run = _task_run(args, play, task, extra)
    run.plan()
    archive_mod.ensure_writable_dir(dest, "backup --dest", "pass a writable --dest directory")
    return int(args.report(args, run, False))


def _record_key(record: Any) -> tuple[str, str]:
    return (record.host, record.container)


def cmd_restore(args: argparse.Namespace) -> int:
    from distrib.engine import CHECK, Job
    from distrib.playbook import ImageSpec, Located
    from distrib.units import human_bytes
    from distrib.workflows import archives

    backup = archives.open_backup(args.archive, args.metadata)
    archive = backup.archive
    out = sys.stderr if args.json else sys.stdout
    checked = (
        f"sha256 {archive.sha256[:12]} matches {backup.metadata_file}"
        if backup.metadata_file
        else f"sha256 {archive.sha256[:12]} (no metadata file: not checked against a record)"
    )
    names = ", ".join(str(i.ref) for i in archive.images)
    print(
        f"restore {args.archive}: {names}, {archive.codec}, {human_bytes(archive.size)}, {checked}",
        file=out,
    )
    where = Located(args.archive, 0)
    specs = tuple(ImageSpec(i.ref, where) for i in archive.images)
    play = _play(f"restore {os.path.basename(args.archive)}", specs, args.forks)
    if args.check:
        job = Job(archive.images, archive, True, CHECK, archive.codec)
    else:
        job = Job.deploy(archive, verify=True)
    return int(args.report(args, _task_run(args, play, job), False))
