"""The command line's flags: their argument groups, and what they mean for a run
(`options(args)`: api.Options; `read_secrets(args)`: api.Secrets from prompts and files,
never from argv)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from distrib.api import Options, Secrets
from distrib.errors import ConfigError


def output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: per-host timings; -vv: also each remote command; -vvv: also SSH debug log. "
        "Colour only on a terminal and never with NO_COLOR set",
    )
    secret_args(parser)  # every command with -v connects to hosts
    connection_args(parser)


def connection_args(parser: argparse.ArgumentParser) -> None:
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


def vault_args(group: Any) -> None:
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


def secret_args(parser: argparse.ArgumentParser) -> None:
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
    vault_args(group)
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


def selection_args(parser: argparse.ArgumentParser) -> None:
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


def play_args(parser: argparse.ArgumentParser) -> None:
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


def report_args(parser: argparse.ArgumentParser) -> None:
    """Report files (issue 18), from the same results as --json: one entry per host x image."""
    parser.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (for CI)")
    parser.add_argument(
        "--html", metavar="FILE", help="write a self-contained HTML report (host x image matrix)"
    )


def inventory_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        "--inventory",
        action="append",
        default=None,
        help="inventory file, directory or host list (repeatable; default $DISTRIB_INVENTORY)",
    )


def read_secret(prompt: str, ask: bool, path: str | None, what: str) -> Any:
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



def read_secrets(args: argparse.Namespace) -> Secrets:
    """The become password, the SSH password and the key passphrase, each from its prompt or
    file: read once, after planning, before anything connects."""
    return Secrets(
        become=read_secret(
            "BECOME password: ",
            bool(getattr(args, "ask_become_pass", False)),
            getattr(args, "become_password_file", None),
            "become password",
        ),
        ssh_password=read_secret(
            "SSH password: ",
            bool(getattr(args, "ask_pass", False)),
            getattr(args, "connection_password_file", None),
            "SSH password",
        ),
        key_passphrase=read_secret(
            "Key passphrase: ",
            bool(getattr(args, "ask_key_passphrase", False)),
            getattr(args, "key_passphrase_file", None),
            "key passphrase",
        ),
    )


def vault_options(args: argparse.Namespace) -> Any:
    """--vault-password-file (repeatable), --vault-id (repeatable), --ask-vault-pass, for the
    ansible-core inventory reader; None when none is given."""
    from distrib.ansible_core import VaultOptions

    options = VaultOptions(
        password_files=tuple(getattr(args, "vault_password_file", None) or ()),
        vault_ids=tuple(getattr(args, "vault_id", None) or ()),
        ask_vault_pass=bool(getattr(args, "ask_vault_pass", False)),
    )
    return options if options.given else None


def options(args: argparse.Namespace) -> Options:
    """What the parsed flags ask of a run (flags a command lacks keep their defaults)."""
    import sys

    def flag(name: str, default: Any = None) -> Any:
        return getattr(args, name, default)

    playbook, playbook_dir = flag("playbook"), flag("playbook_dir")
    if playbook and not playbook_dir:  # ansible-playbook reads group_vars/ there (issue 17)
        playbook_dir = os.path.dirname(os.path.abspath(playbook))
    if playbook:
        title = f"distrib run {playbook}"
    elif flag("words"):
        title = "distrib push " + " ".join(args.words)
    else:
        title = "distrib verify " + " ".join(flag("images", []))
    return Options(
        inventory=tuple(flag("inventory") or ()),
        inventory_object=flag("adhoc_inventory"),
        playbook_dir=playbook_dir,
        limit=flag("limit"),
        forks=flag("forks"),
        strict=bool(flag("strict", True)),
        list_hosts=bool(flag("list_hosts", False)),
        check=bool(flag("check", False)),
        extra_vars=tuple(flag("extra_vars") or ()),
        vault=vault_options(args),
        user=flag("user"),
        private_key=flag("private_key"),
        timeout=flag("timeout"),
        become=flag("become"),
        become_user=flag("become_user"),
        secrets=lambda: read_secrets(args),
        verbose=int(flag("verbose", 0) or 0),
        out=sys.stderr if flag("json") else sys.stdout,
        retry_file=flag("retry_file"),
        junit=flag("junit"),
        html=flag("html"),
        report_title=title,
    )
