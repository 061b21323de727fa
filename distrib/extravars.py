"""`-e/--extra-vars` as ansible-playbook reads them (issue 17): `key=value ...`, inline YAML or
JSON (`{...}`), or `@FILE` (YAML or JSON); repeatable, later values replacing earlier ones.

For distrib, extra vars are the vars of highest precedence: they override inventory and play
vars (connection vars such as ansible_user, ansible_port, ansible_host, and the play's become
keys through ansible_become*). Passwords are secrets: they may come from an `@FILE`, never from
the command line itself (argv is visible to every user of the machine, and in shell history).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from distrib import yamlio
from distrib.errors import ConfigError

SECRET_VARS = (
    "ansible_password",
    "ansible_ssh_pass",
    "ansible_ssh_password",
    "ansible_become_password",
    "ansible_become_pass",
)
VAULT_HEADER = "$ANSIBLE_VAULT;"


Decrypt = Callable[[str, str], str]  # (vault text, file) -> plain text


def parse(text: str, decrypt: Decrypt | None = None) -> dict[str, Any]:
    """One `-e` value as a mapping; ConfigError naming the value (or the file and line).
    `decrypt`: how a vault-encrypted `@FILE` is opened (the vault flags); None refuses it."""
    if not text:
        return {}
    if text.startswith("@"):
        return _from_file(text[1:], decrypt)
    if text[0] in "/.":
        raise ConfigError(f"-e {text!r}: a file name needs a leading @", hint=f"write -e @{text}")
    if text[0] in "[{":
        data = yamlio.loads(text, "-e")
        if not isinstance(data, Mapping):
            raise ConfigError(f"-e {text!r}: not a mapping of vars")
        _refuse_secrets(data, text)
        return dict(data)
    return _key_values(text)


def parse_all(values: Sequence[str], decrypt: Decrypt | None = None) -> dict[str, Any]:
    """Every `-e` in order, merged (the later wins for a var given twice, as in Ansible)."""
    merged: dict[str, Any] = {}
    for value in values:
        merged.update(parse(value, decrypt))
    return merged


def _key_values(text: str) -> dict[str, Any]:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"-e {text!r}: cannot split into key=value words: {exc}") from None
    data: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"-e {text!r}: {word!r} is not key=value",
                hint="pass key=value pairs, YAML/JSON ({...}) or @FILE",
            )
        data[key.strip()] = value
    _refuse_secrets(data, text)
    return data


def _refuse_secrets(data: Mapping[str, Any], text: str) -> None:
    secret = next((k for k in SECRET_VARS if k in data), None)
    if secret is not None:  # never echo the value: `text` is only named when it holds none
        raise ConfigError(
            f"-e: {secret} on the command line is refused (argv is visible to every user)",
            hint="put it in a file and pass -e @FILE (mode 0600), or use --ask-pass / "
            "--ask-become-pass",
        )


def _from_file(path: str, decrypt: Decrypt | None = None) -> dict[str, Any]:
    if not path:
        raise ConfigError("-e @: no file name after the @")
    text = yamlio.read_text(path, "extra vars file")
    if text.lstrip().startswith(VAULT_HEADER):
        if decrypt is None:
            raise ConfigError(
                "the extra vars file is vault-encrypted and no vault secret was given",
                file=path,
                hint="pass --vault-password-file FILE, --vault-id or --ask-vault-pass "
                "(they need the ansible extra: pip install distrib[ansible])",
            )
        text = decrypt(text.lstrip(), path)
    data = yamlio.loads(text, path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("extra vars must be a mapping of names to values", file=path, line=1)
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(
                f"extra var name {key!r} is not a string",
                file=path,
                line=yamlio.key_line(data, key),
            )
    return dict(data)
