"""Where to connect: ~/.ssh/config (or the inventory's ssh_config) and ProxyJump chains
resolved into hops, each checked like the final host."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import paramiko

from distrib.target import Target

# ~/.ssh/config (or the inventory's `ssh_config:`) is read with paramiko.SSHConfig and applied
# as OpenSSH does: the inventory's explicit settings win (Ansible passes them as -p/-l/-i),
# the config fills in the rest (HostName, User, Port, IdentityFile, ProxyJump, ConnectTimeout).
# fabric's own ssh-config handling is not used: it would open a ProxyJump gateway per
# Connection with paramiko's AutoAddPolicy (bastion host key unchecked, fabric#2071) and with
# no sharing between threads. Here every hop's key is checked like the target's, and one
# connection per bastion carries the direct-tcpip channels of all hosts behind it.

MAX_JUMPS = 8


@dataclass(frozen=True)
class Hop:
    """One SSH connection of a route: a bastion, or the target itself."""

    alias: str  # the name it was asked for (ssh_config Host alias, or the address)
    address: str
    port: int
    user: str | None
    key_files: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    # ssh_config ProxyCommand (tokens expanded by paramiko): its stdin/stdout is the connection
    proxy_command: str | None = None

    @property
    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        via = f" (via ProxyCommand {self.proxy_command!r})" if self.proxy_command else ""
        return f"{user}{self.address}:{self.port}{via}"


def load_ssh_config(path: str | None) -> paramiko.SSHConfig | None:
    """The ssh client config at `path` (None: ~/.ssh/config if it exists; "none": no config).

    Raises ConfigError-like ValueError on an unreadable file (the caller names the host)."""
    if path and path.lower() == "none":
        return None
    chosen = os.path.expanduser(path or "~/.ssh/config")
    if not os.path.exists(chosen):
        if path:
            raise ValueError(f"ssh_config file {chosen} does not exist")
        return None
    try:
        with open(chosen, encoding="utf-8") as fh:
            config = paramiko.SSHConfig.from_text(fh.read())
    except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
        raise ValueError(f"cannot read ssh_config {chosen}: {exc}") from None
    config.distrib_path = chosen  # type: ignore[attr-defined]  # for errors naming the line
    return config


def _config_line(config: paramiko.SSHConfig | None, keyword: str) -> str:
    """`FILE:LINE` of the first `keyword` line in the ssh_config `config` was read from (the
    file is named alone when the line cannot be found)."""
    path = str(getattr(config, "distrib_path", "ssh_config"))
    with contextlib.suppress(OSError, UnicodeDecodeError), open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            word = line.strip().split("=", 1)[0].split(None, 1)
            if word and word[0].lower() == keyword.lower():
                return f"{path}:{number}"
    return path


def _proxy_command(found: dict[str, Any]) -> str | None:
    value = found.get("proxycommand")
    return None if value is None or str(value).lower() == "none" else str(value)


def parse_jump(spec: str) -> list[tuple[str | None, str, int | None]]:
    """`[user@]host[:port],...` (or ssh://user@host:port) -> [(user, host, port)]."""
    hops = []
    for raw in spec.split(","):
        text = raw.strip()
        if text.startswith("ssh://"):
            text = text[len("ssh://") :]
        if not text:
            raise ValueError(f"empty hop in ProxyJump {spec!r}")
        user, _, hostport = text.rpartition("@")
        port: int | None = None
        host = hostport
        if hostport.startswith("["):  # [v6]:port
            host, _, rest = hostport[1:].partition("]")
            if rest.startswith(":"):
                port = _jump_port(rest[1:], spec)
        elif hostport.count(":") == 1:
            host, _, port_text = hostport.partition(":")
            port = _jump_port(port_text, spec)
        if not host:
            raise ValueError(f"no host in ProxyJump hop {raw!r}")
        hops.append((user or None, host, port))
    return hops


def _jump_port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r} in ProxyJump {spec!r}")
    return int(text)


def _lookup(config: paramiko.SSHConfig | None, name: str) -> dict[str, Any]:
    return dict(config.lookup(name)) if config is not None else {}


def _timeout(found: dict[str, Any], default: float) -> float:
    try:
        return float(found["connecttimeout"])
    except (KeyError, ValueError):
        return default


def route(target: Target, config: paramiko.SSHConfig | None) -> tuple[tuple[Hop, ...], Hop]:
    """(bastions in order, the target) for `target` under `config`. Pure given the config."""
    found = _lookup(config, target.address)
    explicit = target.explicit
    keys = (target.key_file,) if target.key_file else tuple(found.get("identityfile", ()))
    final = Hop(
        alias=target.address,
        address=str(found.get("hostname") or target.address),
        port=target.port if "port" in explicit or "port" not in found else int(found["port"]),
        user=target.user or found.get("user"),
        key_files=keys,
        connect_timeout=(
            target.connect_timeout
            if "connect_timeout" in explicit
            else _timeout(found, target.connect_timeout)
        ),
    )
    spec = target.proxy_jump or found.get("proxyjump")
    command = _proxy_command(found)
    if not spec or str(spec).lower() == "none":
        return (), dataclasses.replace(final, proxy_command=command)
    if command:  # OpenSSH takes whichever comes first; refused rather than guessed
        raise ValueError(
            f"{_config_line(config, 'ProxyCommand')}: ProxyCommand for {target.address} "
            "together with a ProxyJump: use one of them"
        )
    return _jumps(str(spec), config, target, 0), final


def _jumps(
    spec: str, config: paramiko.SSHConfig | None, target: Target, depth: int
) -> tuple[Hop, ...]:
    if depth >= MAX_JUMPS:
        raise ValueError(f"ProxyJump chain longer than {MAX_JUMPS} hops (a loop?)")
    hops: list[Hop] = []
    for index, (user, name, port) in enumerate(parse_jump(spec)):
        found = _lookup(config, name)
        if index == 0 and found.get("proxyjump") and str(found["proxyjump"]).lower() != "none":
            # The first bastion is itself reached as its own config says (as OpenSSH does).
            hops.extend(_jumps(str(found["proxyjump"]), config, target, depth + 1))
        command = _proxy_command(found)
        if command and (hops or index > 0):
            # only the first connection of a route can run a command; later hops are reached
            # through the bastion before them (OpenSSH would run it there, on `ssh -W`)
            raise ValueError(
                f"{_config_line(config, 'ProxyCommand')}: ProxyCommand for bastion {name}, "
                "which is reached through another bastion: not supported",
            )
        keys = tuple(found.get("identityfile", ()))
        if target.key_file and target.key_file not in keys:
            keys += (target.key_file,)  # like Ansible users expect: the inventory key works too
        hops.append(
            Hop(
                alias=name,
                address=str(found.get("hostname") or name),
                port=port or int(found.get("port", 22)),
                user=user or found.get("user"),
                key_files=keys,
                connect_timeout=_timeout(found, target.connect_timeout),
                proxy_command=command,
            )
        )
    return tuple(hops)
