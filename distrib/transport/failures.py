"""Library errors as ConnectErrors with a hint that fixes them (here and nowhere else)."""

from __future__ import annotations

import socket

import paramiko

from distrib.errors import ConnectError
from distrib.target import Target
from distrib.transport.credentials import login_password
from distrib.transport.hostkeys import NoBanner, UnknownHostKey, fingerprint, known_hosts_name
from distrib.transport.sshconfig import Hop


def translate(
    target: Target, known_hosts: str, exc: BaseException, hop: Hop | None = None, via: str = ""
) -> BaseException:
    """A library error as a ConnectError with a hint; `hop` is where it happened (`via`
    names a bastion). An error that already is a ConnectError passes through."""
    if isinstance(exc, ConnectError):
        return exc
    if hop is None:
        keys = (target.key_file,) if target.key_file else ()
        hop = Hop(target.address, target.address, target.port, target.user, keys,
                  target.connect_timeout)  # fmt: skip
    where = f"{via}{hop.label}"
    name = known_hosts_name(hop.address, hop.port)

    def error(message: str, hint: str | None = None) -> ConnectError:
        return ConnectError(target.name, message, hint=hint)

    if isinstance(exc, UnknownHostKey):
        return error(
            f"host key of {where} is not in {known_hosts} "
            f"({exc.key.get_name()} {fingerprint(exc.key)}); refusing to connect",
            hint=(
                f"check the fingerprint out of band, then trust it: ssh-keyscan -p {hop.port} "
                f"-t {exc.key.get_name()} {hop.address} >> {known_hosts}"
            ),
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return error(
            f"host key of {where} has CHANGED (now {exc.key.get_name()} {fingerprint(exc.key)}, "
            f"expected {fingerprint(exc.expected_key)}): possible man-in-the-middle; refusing",
            hint=f"if the change is expected: ssh-keygen -f {known_hosts} -R '{name}'",
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return error(
            f"the private key for {where} is encrypted and no passphrase was given",
            hint="pass --ask-key-passphrase (prompt) or --key-passphrase-file FILE, "
            "or load the key into ssh-agent (ssh-add)",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        names = ", ".join(hop.key_files)
        key = f" with key {names}" if names else " (agent/default keys)"
        if hop.alias == target.address and login_password(target) is not None:
            return error(
                f"authentication failed for {where}{key} and password: {exc}",
                hint="check the password (ansible_password, --ask-pass or "
                "--connection-password-file) and that sshd allows PasswordAuthentication",
            )
        return error(
            f"authentication failed for {where}{key}: {exc}",
            hint="check ansible_user and ansible_ssh_private_key_file for this host (or User and "
            "IdentityFile in ssh_config), and that the public key is in that user's "
            "authorized_keys",
        )
    if isinstance(exc, paramiko.SSHException) and "no authentication methods" in str(exc).lower():
        return error(
            f"authentication failed for {where}: no key to offer (no key file, nothing in "
            "ssh-agent, no ~/.ssh/id_*)",
            hint="set ansible_ssh_private_key_file (or IdentityFile in ssh_config), add the "
            "key to ssh-agent (ssh-add) and export SSH_AUTH_SOCK, or give a password "
            "(ansible_password, -k/--ask-pass, --connection-password-file)",
        )
    if isinstance(exc, paramiko.SSHException) and "passphrase" in str(exc).lower():
        return error(
            f"cannot decrypt the private key for {where}: wrong passphrase?",
            hint="check --key-passphrase-file / the passphrase typed at the prompt",
        )
    if isinstance(exc, NoBanner):
        return error(
            f"no SSH banner from {where} within {hop.connect_timeout:g}s: the port accepted "
            "the connection but no SSH server answered",
            hint="check the port is sshd's (not another service), and that sshd is not "
            "overloaded (MaxStartups); connect_timeout sets the wait",
        )
    if isinstance(exc, socket.gaierror):
        return error(f"cannot resolve host name {hop.address!r} ({where})")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return error(f"timed out after {hop.connect_timeout:g}s connecting to {where}")
    if isinstance(exc, ConnectionRefusedError):
        return error(f"connection refused by {where} (is sshd running?)")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errors = list(exc.errors.values())
        if errors and all(isinstance(e, ConnectionRefusedError) for e in errors):
            return error(f"connection refused by {where} (is sshd running?)")
        return error(f"cannot connect to {where}: {exc}")
    if isinstance(exc, (paramiko.SSHException, OSError, EOFError)):
        return error(f"cannot connect to {where}: {exc or type(exc).__name__}")
    return exc
