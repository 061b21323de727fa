"""`distrib completion bash|zsh|fish`: shell completion generated from the argparse parser by
shtab (issue 18), so it never drifts from the commands and options that exist."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from distrib.errors import ConfigError

SHELLS = ("bash", "zsh", "fish")
# options and arguments that name a file: completed with file names, not left blank
FILE_DESTS = frozenset(
    {
        "playbook",
        "inventory",
        "retry_file",
        "become_password_file",
        "connection_password_file",
        "private_key",
        "key_passphrase_file",
        "junit",
        "html",
    }
)


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from _actions(sub)


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell`, for every subcommand and option of `parser`."""
    try:
        import shtab
    except ImportError:  # a dependency: only a broken install lacks it
        raise ConfigError(
            "shell completion needs the shtab package", hint="pip install shtab"
        ) from None
    if shell not in SHELLS:
        raise ConfigError(f"no completion for {shell!r} (supported: {', '.join(SHELLS)})")
    if shell not in shtab.SUPPORTED_SHELLS:  # fish arrived in a later shtab than some distros'
        raise ConfigError(
            f"the installed shtab {shtab.__version__} cannot write {shell} completion",
            hint="pip install 'shtab>=1.13'",
        )
    for action in _actions(parser):
        if action.dest in FILE_DESTS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return str(shtab.complete(parser, shell=shell))
