"""Secrets for logging in, held in this process only: never in argv, logs or errors."""

from __future__ import annotations

from distrib.target import Target

_passphrase: dict[str, str] = {}
_password: dict[str, str] = {}


def set_key_passphrase(passphrase: str | None) -> None:
    """The passphrase of encrypted private keys, for every connection of this process (it comes
    from a prompt or a file, never from argv; it is never logged or shown)."""
    _passphrase.clear()
    if passphrase:
        _passphrase["value"] = passphrase


def set_password(password: str | None) -> None:
    """The SSH login password (`-k/--ask-pass`, `--connection-password-file`) for hosts whose
    inventory gives none (ansible_password wins, as in Ansible). Like ssh, paramiko also tries it
    as the passphrase of an encrypted key when no passphrase was given: `--ask-pass` used to mean
    the key passphrase and still unlocks such keys."""
    _password.clear()
    if password:
        _password["value"] = password


def login_password(target: Target) -> str | None:
    if target.password is not None:
        return target.password.reveal()
    return _password.get("value")


def passphrase() -> str | None:
    """The passphrase for encrypted private keys (`set_key_passphrase`), None when not given."""
    return _passphrase.get("value")
