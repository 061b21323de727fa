"""What a run is asked to do (`Options`) and the one holder of its secrets (`Secrets`).

The command line maps its flags here; a program builds them directly. Secrets take one route:
the caller hands a `Secrets` (or a reader of one, asked once after planning and before any
connection) to the API, which gives each host what it needs: the become password to each host
task, the SSH login password to each connection's target, the key passphrase to the SSH layer.
Nothing of them goes to argv, logs or JSON (engines.Secret masks its repr).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from distrib.engines import Secret
from distrib.target import Session, Target

Connector = Callable[[Target], Session]


@dataclass(frozen=True)
class Secrets:
    """Passwords from prompts or files, in memory only (repr shows none of them)."""

    become: Secret | None = None  # -K / --become-password-file: sudo's, on stdin only
    ssh_password: Secret | None = None  # -k / --connection-password-file (ansible_password wins)
    key_passphrase: Secret | None = None  # --ask-key-passphrase / --key-passphrase-file

    def connector(self, connect: Connector) -> Connector:
        """`connect`, giving the SSH login password to targets whose inventory gives none."""
        password = self.ssh_password
        if password is None:
            return connect

        def connect_with_password(target: Target) -> Session:
            if target.password is None:
                target = dataclasses.replace(target, password=password)
            return connect(target)

        return connect_with_password

    def with_become(self, task: Any) -> Any:
        """`task` (a Job or a host task: dataclasses with `become_password`) carrying the
        become password, when there is one."""
        if self.become is None:
            return task
        return dataclasses.replace(task, become_password=self.become)


def no_secrets() -> Secrets:
    return Secrets()


@dataclass(frozen=True)
class Options:
    """A run's inputs, as ansible-playbook's flags name them. None: the default (inventory and
    play vars, then ansible.cfg, then distrib's own)."""

    inventory: Sequence[str] = ()  # -i (empty: $DISTRIB_INVENTORY, then ansible.cfg)
    # an inventory given as an object (push's user@host targets, a program's own)
    inventory_object: Any = None
    playbook_dir: str | None = None  # group_vars/ and host_vars/ read there too
    limit: str | None = None  # -l PATTERN or @retry-file
    forks: int | None = None
    strict: bool = True  # a pattern term that matches nothing is an error (else a warning)
    list_hosts: bool = False  # plan only; the secrets are not read
    check: bool = False  # read-only: what would be shipped
    extra_vars: Sequence[str] = ()  # -e, each key=value ..., YAML/JSON or @FILE
    vault: Any = None  # ansible_core.VaultOptions: where vault passwords come from
    user: str | None = None  # -u and the other connection defaults (the lowest precedence)
    private_key: str | None = None
    timeout: float | None = None
    become: bool | None = None
    become_user: str | None = None
    # read once, after planning and before anything connects (prompts come after plan errors)
    secrets: Callable[[], Secrets] = no_secrets
    verbose: int = 0  # 2: each remote command to the progress log
    out: IO[str] | None = None  # the run's narrative (banners, archive lines); None: stdout
    connect: Connector | None = None  # None: SSH (distrib.transport)
    retry_file: str | None = None  # failed/unreachable hosts written here after the run
    junit: str | None = None
    html: str | None = None
    report_title: str = ""  # the HTML report's title: the command that ran
    matrix: bool = False  # verify: the host x image matrix is part of the report
