"""Command line. Errors are handled once, here: expected ones are one clear line and a
documented exit code; unexpected ones a traceback and exit 250 (STYLE: handle errors once)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

from distrib import __version__
from distrib.errors import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_UNEXPECTED,
    ConfigError,
    DistribError,
    printable,
)

CLEANUP_GRACE_SECONDS = 30.0


def _default_inventory() -> list[str]:
    env = os.environ.get("DISTRIB_INVENTORY") or os.environ.get("ANSIBLE_INVENTORY")
    return [p for p in env.split(",") if p] if env else []


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
    _inventory_args(run)
    _output_args(run)
    _selection_args(run)
    run.add_argument(
        "-C", "--check", action="store_true", help="read-only: show what would be shipped"
    )
    run.add_argument("--retry-file", metavar="PATH", help="write failed/unreachable hosts here")
    run.add_argument("--syntax-check", action="store_true", help="check the playbook, then stop")
    _report_args(run)
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
    _inventory_args(push)
    _output_args(push)
    _selection_args(push)
    _play_args(push)
    push.add_argument("-C", "--check", action="store_true", help="read-only: what would be shipped")
    push.add_argument("--retry-file", metavar="PATH", help="write failed/unreachable hosts here")
    _report_args(push)
    push.set_defaults(func=cmd_push)

    plan = sub.add_parser("plan", help="same as run --check: what would be shipped, per host")
    plan.add_argument("playbook", help="playbook YAML file")
    _inventory_args(plan)
    _output_args(plan)
    _selection_args(plan)
    plan.add_argument("--syntax-check", action="store_true", help="check the playbook, then stop")
    plan.set_defaults(func=cmd_run, check=True)

    verify = sub.add_parser(
        "verify", help="check that hosts hold images with the local content (no shipping)"
    )
    verify.add_argument("images", nargs="+", metavar="IMAGE", help="image references")
    _inventory_args(verify)
    _output_args(verify)
    verify.add_argument("--hosts", default="all", help="host pattern (default: all)")
    _selection_args(verify)
    verify.add_argument("--retry-file", metavar="PATH", help="write drifted/unreachable hosts here")
    _report_args(verify)
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
    _inventory_args(inv)
    inv.add_argument(
        "--playbook-dir",
        metavar="DIR",
        help="read group_vars/ and host_vars/ in DIR too, as a playbook there would",
    )
    _vault_args(inv.add_argument_group("vault"))
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

    register_workflows(sub, _inventory_args, _output_args)

    from distrib.tidy_tasks import register as register_tidy  # prune, rollback (issue 18)

    register_tidy(sub, _inventory_args, _output_args, _selection_args)

    try:
        from distrib import lab
    except ImportError:  # pragma: no cover - the lab package is part of the distribution
        lab = None  # type: ignore[assignment]
    if lab is not None and hasattr(lab, "register"):
        lab.register(sub)
    return parser


def _output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: per-host timings; -vv: also each remote command; -vvv: also SSH debug log. "
        "Colour only on a terminal and never with NO_COLOR set",
    )
    _secret_args(parser)  # every command with -v connects to hosts
    _connection_args(parser)


def _connection_args(parser: argparse.ArgumentParser) -> None:
    """Ansible's connection flags (issue 17). -u, --private-key, -T, -b and --become-user are
    defaults: inventory and play vars win over them, as in Ansible; -e wins over everything."""
    group = parser.add_argument_group("as ansible-playbook")
    group.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        metavar="VARS",
        help="vars over every other (key=value ..., YAML/JSON, or @FILE; repeatable), e.g. "
        "ansible_user, ansible_port; passwords only from @FILE",
    )
    group.add_argument("-u", "--user", help="connect as USER where no ansible_user is set")
    group.add_argument(
        "--private-key",
        "--key-file",
        metavar="FILE",
        help="private key where no ansible_ssh_private_key_file is set (default: ssh's keys "
        "and the agent)",
    )
    group.add_argument(
        "-T",
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="connection timeout where no ansible_timeout is set (default 10)",
    )
    group.add_argument(
        "-b",
        "--become",
        action="store_true",
        default=None,
        help="run the engine through sudo unless the play or the host's vars say otherwise",
    )
    group.add_argument("--become-user", metavar="USER", help="sudo to this user (default root)")


def _vault_args(group: Any) -> None:
    """ansible-playbook's vault flags, for the ansible-core reader and -e @FILE (issue 17)."""
    group.add_argument(
        "--vault-password-file",
        "--vault-pass-file",
        action="append",
        metavar="FILE",
        help="vault password file or script (repeatable; needs the ansible extra)",
    )
    group.add_argument(
        "--vault-id",
        action="append",
        metavar="[LABEL@]SOURCE",
        help="vault identity: a password file, a script or 'prompt' (repeatable)",
    )
    group.add_argument(
        "-J",
        "--ask-vault-pass",
        "--ask-vault-password",
        action="store_true",
        help="prompt for the vault password (inventory, group_vars, -e @FILE)",
    )


def _secret_args(parser: argparse.ArgumentParser) -> None:
    """Secrets come from a prompt or a file, never from argv (issue 6)."""
    group = parser.add_argument_group("credentials (never taken from the command line)")
    become = group.add_mutually_exclusive_group()
    become.add_argument(
        "-K",
        "--ask-become-pass",
        action="store_true",
        help="prompt for the sudo password of become hosts (sent on stdin only)",
    )
    become.add_argument(
        "--become-password-file",
        metavar="FILE",
        help="read the sudo password from the first line of FILE",
    )
    login = group.add_mutually_exclusive_group()
    login.add_argument(
        "-k",
        "--ask-pass",
        action="store_true",
        help="prompt for the SSH login password (as Ansible's -k; ansible_password in the "
        "inventory wins). Also tried as the key passphrase when none is given",
    )
    login.add_argument(
        "--connection-password-file",
        metavar="FILE",
        help="read the SSH login password from the first line of FILE",
    )
    _vault_args(group)
    key = group.add_mutually_exclusive_group()
    key.add_argument(
        "--ask-key-passphrase",
        action="store_true",
        help="prompt for the passphrase of encrypted private keys",
    )
    key.add_argument(
        "--key-passphrase-file",
        metavar="FILE",
        help="read the private key passphrase from the first line of FILE",
    )


def _read_secret(prompt: str, ask: bool, path: str | None, what: str) -> Any:
    """A Secret from the terminal (getpass) or the first line of a file; None if neither."""
    import getpass

    from distrib.engines import Secret

    if ask:
        try:
            text = getpass.getpass(prompt)
        except EOFError:
            raise ConfigError(f"no {what} typed (end of input)") from None
    elif path:
        try:
            with open(os.path.expanduser(path), "rb") as fh:
                first = fh.readline()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None
        try:
            text = first.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:  # never echo the bytes: they are (part of) a secret
            raise ConfigError(
                f"the {what} file {path} is not UTF-8 text (binary?)",
                hint="write the password as one line of text",
            ) from None
    else:
        return None
    if not text:
        raise ConfigError(f"the {what} is empty")
    try:
        return Secret(text)
    except ValueError as exc:
        raise ConfigError(f"the {what}: {exc}") from None


def _credentials(args: argparse.Namespace) -> None:
    """Read the become password and the key passphrase once, before anything connects."""
    from distrib import transport

    args.become_secret = _read_secret(
        "BECOME password: ",
        bool(getattr(args, "ask_become_pass", False)),
        getattr(args, "become_password_file", None),
        "become password",
    )
    password = _read_secret(
        "SSH password: ",
        bool(getattr(args, "ask_pass", False)),
        getattr(args, "connection_password_file", None),
        "SSH password",
    )
    transport.set_password(password.reveal() if password else None)
    passphrase = _read_secret(
        "Key passphrase: ",
        bool(getattr(args, "ask_key_passphrase", False)),
        getattr(args, "key_passphrase_file", None),
        "key passphrase",
    )
    transport.set_key_passphrase(passphrase.reveal() if passphrase else None)


def _enable_ssh_debug_log() -> None:
    """-vvv: paramiko's debug log to stderr (handshake, auth methods, channels; no secrets)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger = logging.getLogger("paramiko")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def _selection_args(parser: argparse.ArgumentParser) -> None:
    """--limit, --forks and --json: the same on every command that works on hosts."""
    parser.add_argument("-l", "--limit", help="further limit hosts with a pattern (or @retry-file)")
    parser.add_argument("-f", "--forks", type=int, help="hosts handled at once (overrides plays)")
    parser.add_argument("--json", action="store_true", help="write the result as JSON to stdout")
    parser.add_argument(
        "--json-format",
        choices=("distrib", "ansible"),
        help="--json's layout: distrib's own (default) or that of Ansible's json callback "
        "(plays, tasks, stats) for tools that read Ansible results; implies --json",
    )
    parser.add_argument(
        "--list-hosts", action="store_true", help="list the hosts each play would use, then stop"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="a host pattern term that matches nothing is an error (default: a warning, as "
        "in Ansible)",
    )


def _play_args(parser: argparse.ArgumentParser) -> None:
    """A play's options as flags (`distrib push`); unset ones keep the playbook defaults."""
    from distrib.playbook import CODECS

    group = parser.add_argument_group("play options (as in a playbook)")
    group.add_argument("--compression", choices=CODECS, help="default gzip")
    group.add_argument("--level", type=int, help="compression level")
    group.add_argument("--delta", choices=("auto", "off"), help="default auto")
    group.add_argument(
        "--fanout",
        choices=("direct", "relay", "auto"),
        help="default direct; auto: relay only when the tree pays (see --uplink)",
    )
    group.add_argument("--relay-width", type=int, help="relay: children per host (default 3)")
    group.add_argument(
        "--relay-roots", type=int, help="relay: hosts the workstation feeds itself (default 1)"
    )
    group.add_argument("--uplink", help="fanout auto: the workstation's uplink, e.g. 200mbit")
    group.add_argument("--transfer", choices=("auto", "staged", "stream"), help="default auto")
    group.add_argument(
        "--verify", action=argparse.BooleanOptionalAction, default=None, help="default on"
    )
    group.add_argument("--serial", help="batch sizes, comma-separated (e.g. 1,30%%)")
    group.add_argument("--max-fail-percentage", type=float, help="stop after this many fail")
    group.add_argument("--remote-tmp", metavar="DIR", help="staging directory on the hosts")
    group.add_argument(
        "--keep", type=int, metavar="N", help="after a verified rollout, keep N tags per repo"
    )
    group.add_argument(
        "--images-from",
        metavar="FILE",
        action="append",
        help="also ship the images a compose file, Kubernetes YAML or list file names, or an "
        "image archive holds (docker-archive tar[.gz|.zst], OCI archive or layout dir; repeatable)",
    )
    group.add_argument(
        "--archive-name",
        metavar="REPO:TAG",
        help="the name of the image of an --images-from archive that names none (one archive)",
    )
    group.add_argument(
        "--local-pull",
        choices=("missing", "always", "never"),
        help="docker pull on this workstation first (default never)",
    )
    group.add_argument("--platform", metavar="OS/ARCH", help="what --local-pull pulls")
    group.add_argument(
        "--local-load",
        action="store_true",
        default=None,
        help="also load --images-from archives into this workstation's docker (never by default)",
    )
    ssh = parser.add_argument_group("user@host targets")
    ssh.add_argument("--known-hosts", metavar="FILE", help="default ~/.ssh/known_hosts")


def _report_args(parser: argparse.ArgumentParser) -> None:
    """Report files (issue 18), from the same results as --json: one entry per host x image."""
    parser.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (for CI)")
    parser.add_argument(
        "--html", metavar="FILE", help="write a self-contained HTML report (host x image matrix)"
    )


def _inventory_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--inventory",
        action="append",
        default=None,
        help="inventory file, directory or host list (repeatable; default $DISTRIB_INVENTORY)",
    )


def _inventory(args: argparse.Namespace) -> Any:
    from distrib.inventory import Inventory

    adhoc = getattr(args, "adhoc_inventory", None)
    if adhoc is not None:  # `distrib push ... user@host`: the targets are the inventory
        return adhoc
    sources = args.inventory or _default_inventory() or _ansible_cfg().inventory
    if not sources:
        raise ConfigError("no inventory given", hint="pass -i INVENTORY (or set DISTRIB_INVENTORY)")
    # ansible-playbook reads group_vars/ and host_vars/ beside the playbook too (issue 17)
    playbook = getattr(args, "playbook", None)
    playbook_dir = getattr(args, "playbook_dir", None)
    if playbook and not playbook_dir:
        playbook_dir = os.path.dirname(os.path.abspath(playbook))
    return Inventory.load(
        sources, playbook_dir, vault=_vault_options(args), extra_vars=_extra_vars(args)
    )


def _vault_options(args: argparse.Namespace) -> Any:
    """--vault-password-file (repeatable), --vault-id (repeatable), --ask-vault-pass, for the
    ansible-core inventory reader; None when none is given."""
    from distrib.ansible_core import VaultOptions

    options = VaultOptions(
        password_files=tuple(getattr(args, "vault_password_file", None) or ()),
        vault_ids=tuple(getattr(args, "vault_id", None) or ()),
        ask_vault_pass=bool(getattr(args, "ask_vault_pass", False)),
    )
    return options if options.given else None


_cfg_cache: list[Any] = []


def _ansible_cfg() -> Any:
    """ansible.cfg (distrib.ansible_cfg), read once: its settings are defaults under flags."""
    from distrib import ansible_cfg

    if not _cfg_cache:
        _cfg_cache.append(ansible_cfg.load())
    return _cfg_cache[0]


def _keep_cache_in_bounds() -> None:
    """The cache's size limit ($DISTRIB_CACHE_MAX, default 20G), enforced after every run."""
    from distrib import cache

    try:
        cache.prune(cache.max_bytes())
    except (OSError, ConfigError) as exc:
        print(f"WARNING: cache not pruned: {exc}", file=sys.stderr)


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
    inventory = _inventory(args)
    if args.list:
        print(json.dumps(inventory.to_list_json(), indent=2, sort_keys=True, default=str))
    else:
        print(inventory.graph())
    return 0


def _local_images(playbook: Any, check: bool = False, out: Any = None) -> dict[Any, Any]:
    """Identity of every image of the playbook in the local docker, after the plays'
    `local_pull`s; a missing one is a config error naming the playbook line, raised before
    any connection."""
    from distrib import archive as archive_mod
    from distrib import archived
    from distrib.playbook import local_pulls

    archived.load_local(playbook.plays, out or sys.stdout)  # local_load: true (asked for)
    refs = list(
        dict.fromkeys(
            s.ref for p in playbook.plays for s in p.images if s.archived is None or p.local_load
        )
    )
    found, missing = archive_mod.inspect_local(refs)
    pulls = local_pulls(playbook.plays, missing, check)
    for spec, platform in pulls:
        print(
            f"pulling {spec.ref}" + (f" ({platform})" if platform else "") + " on this workstation",
            file=out or sys.stdout,
            flush=True,
        )
        where = f"{spec.where.file}:{spec.where.line}" if spec.where.line else spec.where.file
        archive_mod.pull_local(spec.ref, platform, where)
    if pulls:
        found, missing = archive_mod.inspect_local(refs)
    if missing:
        spec = next(s for p in playbook.plays for s in p.images if s.ref == missing[0])
        raise ConfigError(
            f"image {missing[0]} is not in the local docker"
            + (f" (nor {', '.join(map(str, missing[1:]))})" if len(missing) > 1 else ""),
            file=spec.where.file,
            line=spec.where.line or None,  # 0: given on the command line
            hint=archived.missing_hint(missing[0])
            or "build or pull it on this workstation first (docker images lists what "
            "exists), or let distrib pull it: local_pull: missing (push --local-pull missing)",
        )
    return {**found, **archived.local_images(playbook.plays, out or sys.stdout)}


def _plan(args: argparse.Namespace, playbook: Any) -> Any:
    from distrib.patterns import read_limit
    from distrib.plan import make_plan

    if args.forks is not None and args.forks < 1:
        raise ConfigError("--forks must be at least 1")
    inventory = _inventory(args)
    limit = read_limit(args.limit) if args.limit else None
    plan = make_plan(
        inventory,
        playbook,
        limit=limit,
        forks=_forks(args, playbook),
        strict=bool(getattr(args, "strict", True)),
        warn=_warn,
        extra_vars=_extra_vars(args),
        defaults=_flag_defaults(args),
    )
    if getattr(args, "list_hosts", False):
        print(_list_hosts(playbook, plan))
        raise _Finished
    _credentials(args)
    return plan


class _Finished(Exception):
    """The command did all it was asked before connecting (--list-hosts): exit 0."""


def _warn(message: str) -> None:
    print(f"[WARNING]: {message}", file=sys.stderr)


def _extra_vars(args: argparse.Namespace) -> dict[str, Any]:
    """-e, read once per run (a vault prompt is asked once); vault-encrypted @FILEs are opened
    with the vault flags through ansible-core, as ansible-playbook does."""
    from distrib.extravars import parse_all

    cached: dict[str, Any] | None = getattr(args, "_extra_vars_read", None)
    if cached is None:
        vault = _vault_options(args)
        decrypt = None
        if vault is not None:
            from distrib import ansible_core

            if not ansible_core.available():
                from distrib.inventory import EXTRA_HINT

                raise ConfigError(f"vault options need ansible-core: {EXTRA_HINT}")
            decrypt = functools.partial(_decrypt, vault=vault)
        cached = parse_all(getattr(args, "extra_vars", None) or [], decrypt)
        args._extra_vars_read = cached
    return cached


def _decrypt(text: str, path: str, vault: Any) -> str:
    from distrib import ansible_core

    return ansible_core.decrypt(text, path, vault)


def _forks(args: argparse.Namespace, playbook: Any) -> int | None:
    """-f, else ansible.cfg's forks for plays that keep the default (a play's forks: wins)."""
    from distrib.playbook import DEFAULT_FORKS

    if args.forks is not None:
        return int(args.forks)
    forks: int | None = _ansible_cfg().forks
    if forks is not None and all(p.forks == DEFAULT_FORKS for p in playbook.plays):
        if forks < 1:
            raise ConfigError(f"forks in {_ansible_cfg().settings['forks'].origin} must be >= 1")
        return forks
    return None


def _flag_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """-u, --private-key, -T, -b, --become-user as the vars they stand for (lowest precedence)."""
    flags = {
        "ansible_user": getattr(args, "user", None),
        "ansible_private_key_file": getattr(args, "private_key", None),
        "ansible_timeout": getattr(args, "timeout", None),
        "ansible_become": getattr(args, "become", None),
        "ansible_become_user": getattr(args, "become_user", None),
    }
    if flags["ansible_timeout"] is not None and not flags["ansible_timeout"] > 0:
        raise ConfigError("-T/--timeout must be a number of seconds above 0")
    # as in Ansible, --become-user alone does not turn become on: it names the user once it is
    # ansible.cfg's remote_user, private_key_file, timeout, become... lie under the flags
    return {**_ansible_cfg().host_defaults(), **{k: v for k, v in flags.items() if v is not None}}


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
    return _run_playbook(args, playbook)


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
    elif not (args.inventory or _default_inventory() or _ansible_cfg().inventory):
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
    options = {k: v for k, v in flags.items() if v is not None}
    play = adhoc_play("all", images, name="push", **options)
    return _run_playbook(args, Playbook(adhoc.WHERE, (play,)))


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


def _run_playbook(args: argparse.Namespace, playbook: Any) -> int:
    from distrib.engine import KeptSessions

    kept = KeptSessions()  # the probing pass's sessions, reused by the deploy (issue 16)
    try:
        return _run_plays(args, playbook, kept)
    finally:
        kept.close()  # those no step asked for (a host left out, a run cut short)


def _run_plays(args: argparse.Namespace, playbook: Any, kept: Any) -> int:
    check = bool(getattr(args, "check", False))
    out = sys.stderr if args.json else sys.stdout
    # 1. everything that can be wrong in the input is found before any connection
    from distrib import archive as archive_mod
    from distrib import archived

    plan = _plan(args, playbook)
    archive_mod.ensure_cache_dir()  # archives and layers are written there (even by plan)
    found = _local_images(playbook, check, out)
    # plays with a commit step or a registry target (issue 7): resolved before connecting,
    # then each commit runs and its image joins the local images
    from distrib.workflows import flow as workflow_flow

    flow = workflow_flow.prepare(plan, lambda: _inventory(args), check)
    plan = flow.run_commits(plan, found, out)
    # 2. one archive per play: saved + compressed once, on first use, while hosts already
    #    receive its first bytes (cached across runs by image identity and codec)
    jobs = {}
    for index, play_plan in enumerate(plan.plays):
        play = play_plan.play
        images = tuple(found[s.ref] for s in play.images)
        # a multi-platform source (issue 18): every host's platform is probed first; with
        # local_pull (and no platform:) the workstation pulls each platform the hosts need
        pulls = play.local_pull != "never" and not play.platform
        multi = archived.is_multi_platform(images)
        probe = play.compression == "auto" or multi or pulls
        facts = _probe_for_codec(play_plan, kept) if probe else {}
        if pulls:
            from distrib import platformpull

            hosts_on = [archived.host_platform(f) for f in facts.values()]
            refresh = play.local_pull == "always" and not check
            images = platformpull.with_platforms(images, hosts_on, refresh, out)
        per_host = _auto_codecs(play, facts) if play.compression == "auto" else {}
        codec = _main_codec(per_host) if per_host else play.compression
        if play.compression == "auto":
            print(f"compression auto for play {play.name!r}: {_codecs_line(per_host)}", file=out)
        main, others = archived.host_jobs(
            [h.name for h in play_plan.hosts],
            images,
            facts,
            per_host,
            codec,
            lambda c, i: _play_job(play, c, i, facts, out, check),  # noqa: B023
        )
        jobs[index] = dataclasses.replace(main, others=others) if others else main
    # 3. ship in parallel, collect every outcome
    plan, jobs, step = flow.expand(plan, jobs)
    if not check and any(p.play.keep for p in plan.plays):  # issue 18: keep N tags per repo
        from distrib.tidy_tasks import with_keep
        from distrib.workflows.steps import dispatch

        jobs, step = with_keep(plan.plays, jobs), step or dispatch
    return _execute(args, plan, jobs, out, step=step, extra=lambda: flow.json, kept=kept)


def _play_job(
    play: Any, codec: str, images: tuple[Any, ...], facts: dict[str, Any], out: Any, check: bool
) -> Any:
    """A play's job in one codec: its archive (prepared, built on first use) and layer store."""
    from distrib import archive as archive_mod
    from distrib import archived
    from distrib.engine import CHECK, Job
    from distrib.layerstore import LayerStore

    if not check and any(i.origin for i in images):  # issue 18: read from image archives
        level = play.level if codec in ("gzip", "zstd") else None
        source = LayerStore(codec=archived.store_codec(codec), level=level)
        archived.fill(source, images, out)
        images = archived.with_sizes(source, images)
    store = _layer_store(play, codec, images, out, check)
    if check:  # read-only everywhere: use the cached archive's size if there is one
        cached = archive_mod.find_cached(images, codec, play.level)
        return Job(images, cached, play.verify, CHECK, codec, facts, store)
    level = play.level if codec in ("gzip", "zstd") else None
    produce = archived.producer(
        images, lambda: LayerStore(codec=archived.store_codec(codec), level=level)
    )
    archive = archive_mod.prepare(images, codec, play.level, producer=produce)
    return Job.deploy(archive, verify=play.verify, facts=facts, store=store)


def _layer_store(play: Any, codec: str, images: tuple[Any, ...], out: Any, check: bool) -> Any:
    """`delta: auto` with gzip or zstd: every layer compressed once, ever, into the layer store;
    each docker host is then sent only the layers it lacks, in loading steps (xz/none plays
    ship whole archives)."""
    from distrib.layerblobs import BLOB_SUFFIXES
    from distrib.layerstore import LayerStore

    if play.delta != "auto" or codec not in BLOB_SUFFIXES:
        return None
    store = LayerStore(codec=codec, level=play.level)
    if all(store.has(i) for i in images):
        if not check:
            store.ensure(images)  # marks them used (LRU)
        return store
    if check:  # read-only: a store that lacks the images cannot size a delta yet
        return None
    # hosts get their first loading steps while later layers are still being compressed
    store.fill_in_background(images)
    return store


def _probe_for_codec(play_plan: Any, kept: Any = None) -> dict[str, Any]:
    """Probe every host of the play once (in parallel, bounded by forks) for what it can
    decode; the facts are reused by the deploy step (probed once per run), and so are the
    sessions (`kept`: engine.KeptSessions; issue 16 item 3: one connection per host)."""
    from concurrent.futures import ThreadPoolExecutor

    from distrib import transport
    from distrib.engine import probe_facts

    hosts = play_plan.hosts
    with ThreadPoolExecutor(max_workers=max(1, min(play_plan.forks, len(hosts)))) as pool:
        facts = list(pool.map(lambda h: probe_facts(h, transport.connect, kept), hosts))
    return {h.name: f for h, f in zip(hosts, facts) if f is not None}


def _variants(job: Any) -> list[Any]:
    """A deploy job and its other codecs' (`compression: auto`); any other job alone."""
    return job.variants() if hasattr(job, "variants") else [job]


def _auto_codecs(play: Any, facts: dict[str, Any]) -> dict[str, str]:
    """`compression: auto`: each host's codec (a relay tree gets one stream: the play's)."""
    from distrib.engine import choose_codec, host_codecs

    if getattr(play, "fanout", "direct") in ("relay", "auto"):  # auto may relay: one stream
        return dict.fromkeys(facts, choose_codec(facts.values()))
    return host_codecs(facts) or {"": choose_codec(())}


def _fanout_line(play_plan: Any, job: Any) -> str:
    """`fanout: auto`: which one the rule chose for the play's hosts, and why (issue 16)."""
    from distrib.relay import fanout

    payload = fanout.payload_bytes(job)
    sizes = sorted({len(b) for b in play_plan.batches} or {0}, reverse=True)
    choices = [fanout.for_play(play_plan.play, n, payload) for n in sizes]
    head = f"FANOUT [{play_plan.play.name}]: auto → "
    if len(sizes) == 1:
        return f"{head}{choices[0].fanout}: {choices[0].reason}"
    return head + "; ".join(  # serial: the rule is applied per batch
        f"batches of {n}: {c.fanout}: {c.reason}" for n, c in zip(sizes, choices)
    )


def _main_codec(per_host: dict[str, str]) -> str:
    """The codec most hosts use (zstd on a tie): the play's job; the others get theirs."""
    counts = [list(per_host.values()).count(c) for c in ("zstd", "gzip")]
    return "zstd" if counts[0] >= counts[1] and counts[0] else "gzip"


def _codecs_line(per_host: dict[str, str]) -> str:
    """`zstd` when every host shares it, else `zstd (node1, node2), gzip (node3)`."""
    codecs = sorted(set(per_host.values()), reverse=True)
    if len(codecs) == 1:
        return codecs[0]
    return ", ".join(
        f"{c} ({', '.join(h for h, hc in per_host.items() if hc == c)})" for c in codecs
    )


def _archive_line(name: str, archive: Any) -> str:
    from distrib.units import human_bytes

    if archive is None:
        return ""
    how = (
        "cached"
        if archive.cached
        else (f"built in {archive.build_seconds:g}s" if archive.build_seconds else "not needed")
    )
    if not archive.complete:
        return f"archive for play {name!r}: {archive.codec}, {how}"
    return (
        f"archive for play {name!r}: {len(archive.images)} image(s), {archive.codec}, "
        f"{human_bytes(archive.size)}, sha256 {archive.sha256[:12]} ({how})"
    )


def cmd_verify(args: argparse.Namespace) -> int:
    from distrib.engine import VERIFY, Job
    from distrib.playbook import Playbook, adhoc_play

    play = adhoc_play(args.hosts, list(args.images), name="verify")
    playbook = Playbook("<command line>", (play,))
    plan = _plan(args, playbook)
    found = _local_images(playbook)
    images = tuple(found[s.ref] for s in play.images)
    out = sys.stderr if args.json else sys.stdout
    return _execute(args, plan, {0: Job(images, None, True, VERIFY)}, out, matrix=True)


def _execute(
    args: argparse.Namespace,
    plan: Any,
    jobs: dict[int, Any],
    out: Any,
    matrix: bool = False,
    step: Any = None,
    extra: Any = None,
    kept: Any = None,
) -> int:
    """Run `plan` (per host: `step`, default the engine's deploy) and report it; `extra()`
    adds keys to the --json document (backups, commits); `kept` (engine.KeptSessions): the
    sessions a probing pass left open, used before connecting again."""
    from dataclasses import replace

    from distrib import report, transport, units
    from distrib.executor import RunResult, run_plan
    from distrib.progress import logged, make_progress
    from distrib.relay import run as relay_run

    retry_file = getattr(args, "retry_file", None)
    if retry_file:  # found unwritable now, not after hosts were changed (issue 19)
        report.check_retry_file(retry_file)
    files = {o: getattr(args, o, None) for o in ("junit", "html")}
    for option, path in files.items():
        if path:
            report.check_retry_file(path, f"--{option}")
    secret = getattr(args, "become_secret", None)
    if secret is not None:  # the password rides with each job, in memory only
        jobs = {k: replace(j, become_password=secret) for k, j in jobs.items()}

    unchecked = [h.name for h in plan.hosts if h.target.host_key_checking == "off"]
    if unchecked:
        print(
            f"WARNING: host key checking is OFF for {', '.join(unchecked)}: a man in the middle "
            "would not be detected (host_key_checking: off)",
            file=sys.stderr,
        )
    verbose = int(getattr(args, "verbose", 0) or 0)
    colour = report.use_colour(out)
    progress = make_progress(
        [h.name for h in plan.hosts],
        runs=sum(len(p.hosts) for p in plan.plays),
        verbose=verbose,
        outcomes=out,
    )
    base = transport.connect if kept is None else kept.connector(transport.connect)
    connect = logged(base, progress.log) if verbose >= 2 else base
    if verbose >= 3:
        _enable_ssh_debug_log()
    cancel = threading.Event()
    variants = [v for job in jobs.values() for v in _variants(job)]
    for job in variants:  # a layer store filling in the background stops with the run
        if getattr(job, "store", None) is not None:
            job.store.cancel_with(cancel)
    holder: dict[str, RunResult] = {}

    finished = threading.Event()
    play_times: list[float] = []  # --json-format ansible: when each play started

    def on_play(play_plan: Any) -> None:
        play_times.append(time.time())
        banner = report.play_banner(play_plan.play.name, play_plan.hosts)
        if not play_plan.hosts:  # as ansible-playbook (the pattern matched nothing)
            banner += "\nskipping: no hosts matched"
        progress.write(banner, out)

    def work() -> None:
        try:
            _work()
        finally:
            finished.set()

    def _work() -> None:
        holder["run"] = run_plan(
            plan,
            jobs,
            connect,
            progress,
            cancel,
            on_play=on_play,
            **({"step": step} if step is not None else {}),
            batch_step=relay_run.batch_step,  # `fanout: relay` plays (issue 9)
        )

    worker = threading.Thread(target=work, name="executor", daemon=True)
    interrupted = _run_interruptibly(worker, cancel, finished)
    if interrupted:  # stop archive builds too: no partial file left on the workstation
        for job in variants:
            if getattr(job, "archive", None) is not None:
                job.archive.abort()
            if getattr(job, "store", None) is not None:
                job.store.abort_fill()
    progress.close()
    run = holder.get("run")
    if run is None:
        print("interrupted before any host finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    if interrupted:
        run.interrupted = True
    for index, play_result in enumerate(run.plays):
        for host_result in play_result.hosts:
            if not progress.shown(host_result):  # off a terminal: printed live, not twice
                print(report.host_line(host_result, verbose, colour), file=out)
        job = jobs.get(index)
        deltas = [h for h in play_result.hosts if getattr(h, "layers_total", 0)]
        if deltas and getattr(job, "store", None) is not None:
            sent = sum(h.layers_sent for h in deltas)
            line = (
                f"layer store for play {play_result.name!r}: {sent} layer(s) sent to "
                f"{len(deltas)} host(s), only what each lacked"
            )
            store = job.store  # type: ignore[union-attr]
            if store.fill_added:
                line += (
                    f"; {units.human_bytes(store.fill_added)} of new layers compressed in "
                    f"{store.fill_seconds:.1f}s while sending (once, reused from now on)"
                )
        else:
            line = _archive_line(play_result.name, getattr(job, "archive", None))
        if line:
            print(line, file=out)
        if job is not None and getattr(plan.plays[index].play, "fanout", None) == "auto":
            print(_fanout_line(plan.plays[index], job), file=out)
        if any(getattr(h, "fed_by", None) for h in play_result.hosts):
            print(f"RELAY TREE [{play_result.name}] (who fed whom)", file=out)
            print(relay_run.tree_text(play_result.hosts), file=out)
    if matrix:
        print(report.matrix(run), file=out)
    print(report.recap(run, colour), file=out)
    _keep_cache_in_bounds()
    if args.json:
        added = extra() if extra is not None else {}
        if getattr(args, "json_format", None) == "ansible":
            print(json.dumps(_ansible_document(args, plan, run, play_times, added), indent=4))
        else:
            document = {**report.to_json(run), **added}
            print(json.dumps(document, indent=2) if added else report.dumps(run))
    code = EXIT_INTERRUPTED if run.interrupted else run.exit_code
    if any(files.values()):
        written = _write_report_files(args, plan, run, files)
        code = code or written
    if retry_file:  # after the JSON: a failure here must not lose the run's result
        try:
            report.write_retry_file(run, retry_file)
        except OSError as exc:
            print(f"ERROR: cannot write --retry-file {retry_file}: {exc}", file=sys.stderr)
            code = code or EXIT_ERROR
    return code


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


def _write_report_files(
    args: argparse.Namespace, plan: Any, run: Any, files: dict[str, str | None]
) -> int:
    """--junit and --html after the run (and after --json); a file that cannot be written is
    an error line and exit 1 (EXIT_ERROR) when the run itself was clean, never a lost run."""
    from distrib import report_files

    planned = [[str(s.ref) for s in p.play.images] for p in plan.plays]
    if getattr(args, "playbook", None):
        what = f"distrib run {args.playbook}"
    elif getattr(args, "words", None):
        what = "distrib push " + " ".join(args.words)
    else:
        what = "distrib verify " + " ".join(getattr(args, "images", []))
    code = 0
    for option, path in files.items():
        if not path:
            continue
        if option == "junit":
            text = report_files.junit(run, planned)
        else:
            text = report_files.html_page(run, planned, title=what)
        try:
            report_files.write(path, text)
        except OSError as exc:
            print(f"ERROR: cannot write --{option} {path}: {exc}", file=sys.stderr)
            code = EXIT_ERROR
    return code


def _run_interruptibly(
    worker: threading.Thread, cancel: threading.Event, finished: threading.Event | None = None
) -> bool:
    """Run `worker`; on SIGINT/SIGTERM ask it to stop and give hosts time to clean up.

    `finished` (set by the worker at its end) is what is waited on when given: a
    Thread.join() cut by KeyboardInterrupt can leave is_alive() False while the thread still
    runs (CPython gh-90882), and the process would exit before hosts are cleaned up."""
    done = finished or threading.Event()

    def alive() -> bool:
        return not done.is_set() if finished is not None else worker.is_alive()

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        worker.start()
        while alive():
            try:
                done.wait(0.2) if finished is not None else worker.join(0.2)
            except KeyboardInterrupt:
                if interrupted:
                    break
                interrupted = True
                cancel.set()
                print("\ninterrupted: stopping and cleaning up hosts...", file=sys.stderr)
                if finished is not None:
                    done.wait(CLEANUP_GRACE_SECONDS)
                else:
                    worker.join(CLEANUP_GRACE_SECONDS)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    return interrupted


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
    except _Finished:
        return 0
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
