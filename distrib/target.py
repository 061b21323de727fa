"""How to reach a host and what a connection offers: pure records, no I/O (issue 15: the
planner imports these, not the SSH transport, so it needs only pyyaml).

`distrib.transport` implements `Session` over SSH, `distrib.localconn` over a local shell,
tests/fakes.py in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

HOST_KEY_MODES = ("yes", "accept-new", "off")
# ansible_connection values: ssh, paramiko and smart all mean SSH here; local is the
# workstation itself, its own engine through a local shell (issue 17)
CONNECTIONS = ("ssh", "smart", "paramiko", "local")
# What one remote command may send back to be kept in memory (stdout when collected, and
# stderr): a flooding or hostile host must not exhaust the workstation (issue 19). Downloads
# hand stdout to their writer instead. `max_command_output` in the inventory sets it.
DEFAULT_MAX_OUTPUT = 64 * 1000**2


class Revealable(Protocol):
    """A secret (engines.Secret) that shows its value only when asked."""

    def reveal(self) -> str: ...


@dataclass(frozen=True)
class Target:
    """Everything needed to reach one host. Built by the planner from inventory vars."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None  # None: the user's ~/.ssh/known_hosts
    host_key_checking: str = "yes"  # yes | accept-new | off
    connect_timeout: float = 10.0
    io_timeout: float = 60.0  # no progress / no keepalive answer for this long: link is dead
    max_output: int = DEFAULT_MAX_OUTPUT  # bytes of output one command may send to be kept
    ssh_config: str | None = None  # None: ~/.ssh/config when it exists; "none": no config
    proxy_jump: str | None = None  # [user@]host[:port],... ("none": direct even if configured)
    # settings the inventory gave explicitly (port, user, connect_timeout, key_file): they win
    # over ssh_config, the others come from it (as ansible_* vars passed to OpenSSH do)
    explicit: frozenset[str] = frozenset()
    connection: str = "ssh"  # ssh | local (ansible_connection: local, no SSH at all)
    # ansible_password / ansible_ssh_pass: an engines.Secret (repr masked), never in argv/logs
    password: Revealable | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.address}:{self.port}"


@dataclass(frozen=True)
class Result:
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Session(Protocol):
    """What the engine needs from a connection (a fake implements it in engine tests)."""

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes = b"") -> Result: ...

    def upload(
        self,
        command: str,
        chunks: Iterable[bytes],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> Result: ...

    def close(self) -> None: ...
