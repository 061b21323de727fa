"""SSH transport: the only package that imports fabric or paramiko (STYLE: I/O at the edges).

`connect(target)` opens a fabric Connection with host keys CHECKED (fabric 3 hard-codes
paramiko's AutoAddPolicy, fabric#2071: our policy replaces it on the connection's paramiko
client before it opens), honouring ~/.ssh/config and ProxyJump (one shared connection per
bastion, every hop's key checked; fabric's own gateway would accept any bastion key),
ssh-agent keys and encrypted keys (passphrase from set_key_passphrase), and returns an SSHSession
with two operations: `run` a command and collect its output, and `upload` a byte stream into a
remote command's stdin over one exec channel (no per-chunk round trips, large window).
Library errors become ConnectError / HostError with a hint, here and nowhere else.

Inside: `sshconfig` (hops from ssh_config and ProxyJump), `hostkeys` (the known_hosts policy),
`credentials` (password and key passphrase), `client` (opening an authenticated client, the
bastion pool), `failures` (library errors translated), `session` (SSHSession: run, upload).
"""

from __future__ import annotations

import logging
import os

from distrib.errors import ConnectError
from distrib.target import HOST_KEY_MODES, Target
from distrib.transport.client import (
    KEEPALIVE_SECONDS,
    bastions,
    direct,
    open_client,
)
from distrib.transport.credentials import login_password, set_key_passphrase, set_password
from distrib.transport.failures import translate
from distrib.transport.hostkeys import default_known_hosts
from distrib.transport.session import SSHSession
from distrib.transport.sshconfig import load_ssh_config, route

__all__ = [
    "SSHSession",
    "Target",
    "connect",
    "route",
    "set_key_passphrase",
    "set_password",
]

# paramiko logs an unreachable host's failure, traceback and all, from its transport thread;
# with no handler Python prints that on stderr. The error reaches the user once, translated
# (issue 19); `-vvv` adds a real handler for the whole paramiko log.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def connect(target: Target) -> SSHSession:
    """Open an SSH session to `target` (through its bastions, if any), checking the host key
    of every hop. Raises ConnectError."""
    if target.connection == "local":  # the workstation itself: no SSH (issue 17)
        from distrib.localconn import LocalSession

        return LocalSession(target)  # type: ignore[return-value]
    mode = target.host_key_checking
    if mode not in HOST_KEY_MODES:
        raise ConnectError(target.name, f"host_key_checking must be one of {HOST_KEY_MODES}")
    known_hosts = os.path.expanduser(target.known_hosts or default_known_hosts())
    if target.key_file:
        key_path = os.path.expanduser(target.key_file)
        if not os.path.exists(key_path):
            raise ConnectError(
                target.name,
                f"private key file {key_path} does not exist",
                hint="fix ansible_ssh_private_key_file in the inventory",
            )
    try:
        jumps, final = route(target, load_ssh_config(target.ssh_config))
    except ValueError as exc:
        raise ConnectError(target.name, str(exc), hint="fix ssh_config / ProxyJump") from None
    bastion = bastions.acquire(jumps, target, known_hosts) if jumps else None
    try:
        sock = direct(bastion, final, target) if bastion else None
        try:
            client = open_client(final, target, known_hosts, sock, login_password(target))
        except BaseException as exc:
            raise translate(target, known_hosts, exc, final) from None
    except BaseException:
        if bastion is not None:
            bastions.release(bastion)
        raise
    transport = client.get_transport()
    if transport is None:  # pragma: no cover - connect() succeeded
        raise ConnectError(target.name, "SSH transport missing after connect")
    transport.set_keepalive(KEEPALIVE_SECONDS)
    on_close = (lambda: bastions.release(bastion)) if bastion is not None else None
    return SSHSession(target, client, transport, on_close=on_close)
