"""The only module that starts local processes (STYLE: I/O at the edges).

Everything that runs a program on the workstation (docker save, compressors, ip, tc, ...)
goes through `run` (collect output) or `spawn` (stream through pipes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from distrib.errors import LocalError

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
Process = subprocess.Popen


@dataclass(frozen=True)
class Completed:
    cmd: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def which(name: str) -> str | None:
    """Absolute path of program `name` on PATH (also sbin dirs), or None."""
    path = os.environ.get("PATH", "")
    extra = "/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(name, path=f"{path}:{extra}" if path else extra)


def run(
    cmd: Sequence[str],
    *,
    input: str | bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
) -> Completed:
    """Run `cmd` (no shell), wait, and return its decoded output.

    With `check`, a non-zero exit raises LocalError showing the last lines of stderr.
    """
    full_env = None if env is None else {**os.environ, **env}
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            list(cmd),
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=full_env,
            check=False,
        )
    except FileNotFoundError:
        raise LocalError(f"{cmd[0]}: program not found", cmd=cmd) from None
    except subprocess.TimeoutExpired:
        raise LocalError(f"{what or cmd[0]} timed out after {timeout:g}s", cmd=cmd) from None
    result = Completed(
        tuple(cmd),
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
    if check and not result.ok:
        raise LocalError(
            f"{what or ' '.join(cmd)} failed (exit {result.returncode})",
            cmd=cmd,
            stderr=result.stderr or result.stdout,
        )
    return result


def spawn(
    cmd: Sequence[str],
    *,
    stdin: int | IO[Any] | None = DEVNULL,
    stdout: int | IO[Any] | None = PIPE,
    stderr: int | IO[Any] | None = PIPE,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `cmd` with the given pipes and return the process (caller waits and reaps it)."""
    full_env = None if env is None else {**os.environ, **env}
    try:
        return subprocess.Popen(
            list(cmd),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=full_env,
            start_new_session=new_session,
        )
    except FileNotFoundError:
        raise LocalError(f"{cmd[0]}: program not found", cmd=cmd) from None
