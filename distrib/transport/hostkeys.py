"""Host keys: every hop's key checked against known_hosts (fabric 3 would accept any,
fabric#2071), `accept-new` recording a first contact only."""

from __future__ import annotations

import base64
import hashlib
import os
import threading

import paramiko

from distrib.errors import ConnectError
from distrib.target import Target

known_hosts_lock = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def default_known_hosts() -> str:
    return os.path.expanduser("~/.ssh/known_hosts")


class UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"unknown host key for {hostname}")
        self.hostname = hostname
        self.key = key


class NoBanner(paramiko.SSHException):
    """The TCP connection was accepted but no SSH banner came (paramiko then says only "No
    existing session" or "Error reading SSH protocol banner")."""


class CheckPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown keys; with accept-new, trust (and record) a first contact only.

    A *changed* key never reaches this policy: paramiko raises BadHostKeyException first.
    """

    def __init__(self, mode: str, path: str) -> None:
        self.mode = mode
        self.path = path

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if self.mode == "off":
            return
        if self.mode != "accept-new":
            raise UnknownHostKey(hostname, key)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with known_hosts_lock:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            with open(self.path, "a", encoding="ascii") as fh:
                fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


def load_host_keys(client: paramiko.SSHClient, target: Target, known_hosts: str) -> None:
    mode = target.host_key_checking
    if mode != "off":
        if os.path.exists(known_hosts):
            try:
                client.load_host_keys(known_hosts)
            except (OSError, paramiko.SSHException) as exc:
                raise ConnectError(
                    target.name, f"cannot read known_hosts {known_hosts}: {exc}"
                ) from None
        elif mode == "yes":
            raise ConnectError(
                target.name,
                f"known_hosts file {known_hosts} does not exist: cannot trust {target.address}",
                hint="set known_hosts in the inventory, or host_key_checking: accept-new",
            )
    client.set_missing_host_key_policy(CheckPolicy(mode, known_hosts))
