"""The relay run's SSH material (issue 9): the workstation's known_hosts lines handed to
relaying hosts, and the run's one-time key pair (in memory only)."""

from __future__ import annotations

import os
import shutil
import tempfile

from distrib import local


def known_hosts_lines(address: str, port: int, path: str | None) -> list[str]:
    """The workstation's known_hosts lines for one host (hashed entries included), via
    `ssh-keygen -F`; [] when the host is not known (it is then never relayed to)."""
    name = address if port == 22 else f"[{address}]:{port}"
    chosen = os.path.expanduser(path or "~/.ssh/known_hosts")
    if not os.path.exists(chosen):
        return []
    out = local.run(["ssh-keygen", "-F", name, "-f", chosen], check=False, timeout=30)
    return [
        line.strip()
        for line in out.stdout.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def one_time_key(comment: str) -> tuple[bytes, str]:
    """A fresh ed25519 key pair (private key bytes, public key line). ssh-keygen writes into
    a private temp dir that is removed before this returns: the key lives in memory only."""
    directory = tempfile.mkdtemp(prefix="distrib-relay-")
    try:
        path = os.path.join(directory, "key")
        local.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
            timeout=30,
            what="ssh-keygen (relay key)",
        )
        with open(path, "rb") as fh:
            private = fh.read()
        with open(path + ".pub", encoding="ascii") as fh:
            public = fh.read().strip()
        return private, public
    finally:
        shutil.rmtree(directory, ignore_errors=True)
