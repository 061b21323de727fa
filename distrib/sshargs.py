"""`ansible_ssh_common_args` / `ansible_ssh_extra_args`: the OpenSSH options distrib honours.

Pure. distrib speaks SSH through paramiko, not the `ssh` binary, so the options are read, not
passed on: those that change where or how we connect are applied (ProxyJump/-J, -F,
ConnectTimeout, UserKnownHostsFile, StrictHostKeyChecking, Port, User, IdentityFile); options
that only tune OpenSSH's own behaviour are ignored; anything else is an error rather than
silently dropped (a ProxyCommand ignored would connect somewhere else).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

# Options that tune the ssh client itself and change nothing about the destination.
IGNORED = frozenset(
    {
        "controlmaster",
        "controlpersist",
        "controlpath",
        "serveraliveinterval",
        "serveralivecountmax",
        "tcpkeepalive",
        "compression",
        "loglevel",
        "identitiesonly",
        "forwardagent",
        "forwardx11",
        "preferredauthentications",
        "pubkeyauthentication",
        "passwordauthentication",
        "kbdinteractiveauthentication",
        "gssapiauthentication",
        "batchmode",
        "addkeystoagent",
        "requesttty",
        "hashknownhosts",
        "checkhostip",
        "updatehostkeys",
    }
)
_FLAGS_WITHOUT_VALUE = frozenset("46AaCfGgKkMNnqsTtVvXxYy")


class SSHArgsError(ValueError):
    """An option distrib cannot honour; the message names it."""


@dataclass(frozen=True)
class SSHArgs:
    proxy_jump: str | None = None
    config_file: str | None = None
    connect_timeout: float | None = None
    known_hosts: str | None = None
    host_key_checking: str | None = None  # yes | accept-new | off
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None


_CHECKING = {"yes": "yes", "accept-new": "accept-new", "no": "off", "off": "off", "ask": "yes"}


def parse(text: str) -> SSHArgs:
    """Read OpenSSH command-line options (`-o Key=Value`, `-o Key Value`, `-J`, `-F`, `-p`...)."""
    try:
        words = shlex.split(text or "")
    except ValueError as exc:
        raise SSHArgsError(f"cannot split {text!r}: {exc}") from None
    values: dict[str, object] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("-") or len(word) < 2:
            raise SSHArgsError(f"unexpected argument {word!r} (options only)")
        flag, attached = word[1], word[2:]
        if flag in _FLAGS_WITHOUT_VALUE:
            i += 1
            continue
        if attached:
            value = attached
        else:
            if i + 1 >= len(words):
                raise SSHArgsError(f"option {word} needs a value")
            value = words[i + 1]
            i += 1
        i += 1
        if flag == "o":
            key, sep, rest = value.partition("=")
            if not sep:
                key, _, rest = value.strip().partition(" ")
            _option(values, key.strip(), rest.strip())
        elif flag == "J":
            values["proxy_jump"] = value
        elif flag == "F":
            values["config_file"] = value
        elif flag == "p":
            _option(values, "port", value)
        elif flag == "l":
            values["user"] = value
        elif flag == "i":
            values["identity_file"] = value
        else:
            raise SSHArgsError(f"ssh option -{flag} is not supported by distrib")
    return SSHArgs(**values)  # type: ignore[arg-type]


def _option(values: dict[str, object], key: str, value: str) -> None:
    name = key.lower()
    if name in IGNORED:
        return
    if not value:
        raise SSHArgsError(f"ssh option {key} needs a value")
    if name == "proxyjump":
        values["proxy_jump"] = value
    elif name == "connecttimeout":
        try:
            values["connect_timeout"] = float(value)
        except ValueError:
            raise SSHArgsError(
                f"ConnectTimeout must be a number of seconds, not {value!r}"
            ) from None
    elif name == "userknownhostsfile":
        values["known_hosts"] = value.split()[0]
    elif name == "stricthostkeychecking":
        mode = _CHECKING.get(value.lower())
        if mode is None:
            raise SSHArgsError(f"StrictHostKeyChecking {value!r} is not understood")
        values["host_key_checking"] = mode
    elif name == "port":
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise SSHArgsError(f"not a port number: {value!r}")
        values["port"] = int(value)
    elif name == "user":
        values["user"] = value
    elif name == "identityfile":
        values["identity_file"] = value
    elif name == "proxycommand":
        raise SSHArgsError(
            "ssh option ProxyCommand is not supported by distrib; use ProxyJump (-J) instead"
        )
    else:
        raise SSHArgsError(f"ssh option {key} is not supported by distrib")
