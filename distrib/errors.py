"""The exception tree. Every expected failure is a DistribError carrying its evidence.

Library errors (paramiko, socket, yaml, subprocess) are translated into these at the boundary
that meets them, with a hint that fixes the problem where one is known.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Exit codes follow ansible-playbook (TaskQueueManager RUN_* flags), plus our own.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_HOST_FAILED = 2
EXIT_HOST_UNREACHABLE = 4
EXIT_PLAY_ABORTED = 8
EXIT_CONFIG = 5  # usage / config / bad input: nothing was connected
EXIT_INTERRUPTED = 130
EXIT_UNEXPECTED = 250


class DistribError(Exception):
    """Base of every expected error; `str()` is one clear line (plus optional detail lines)."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(DistribError):
    """Bad inventory, playbook, flag or image reference. Names file, line and key."""

    exit_code = EXIT_CONFIG

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if file:
            where = file if line is None else f"{file}:{line}"
        if key:
            where = f"{where}: {key}" if where else key
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.file = file
        self.line = line
        self.key = key


class LabError(DistribError):
    """The built-in lab could not be created, used or removed."""


class LocalError(DistribError):
    """A local command (docker save, a compressor) failed."""

    def __init__(
        self, message: str, *, cmd: Sequence[str] = (), stderr: str = "", hint: str | None = None
    ) -> None:
        tail = last_lines(stderr)
        super().__init__(f"{message}{': ' + tail if tail else ''}", hint=hint)
        self.cmd = list(cmd)
        self.stderr = stderr


class CorruptEntry(LocalError):
    """A workstation cache entry (a cached archive, a layer-store blob or config) did not
    match its record on read and was removed (issue 19): the deploying host rebuilds it and
    retries once, in the same run."""


class HostError(DistribError):
    """Something went wrong on one host. `host` names it; the run goes on for the others."""

    def __init__(self, host: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host


class ConnectError(HostError):
    """The host could not be reached or authenticated: counted as unreachable."""


class CommandError(HostError):
    """A remote command exited non-zero. Carries the command, exit status and output tails."""

    def __init__(
        self,
        host: str,
        cmd: str,
        exit_status: int,
        stdout: str = "",
        stderr: str = "",
        *,
        what: str = "",
        hint: str | None = None,
    ) -> None:
        tail = last_lines(stderr) or last_lines(stdout)
        label = what or f"command {cmd!r}"
        msg = f"{label} failed (exit {exit_status})"
        if tail:
            msg += f": {tail}"
        super().__init__(host, msg, hint=hint)
        self.cmd = cmd
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr


class TransferError(HostError):
    """The archive did not arrive intact (cut off, checksum mismatch)."""


class VerifyError(HostError):
    """After loading, the host does not hold the expected images."""


def last_lines(text: str, n: int = 3) -> str:
    """The last `n` non-empty lines of `text`, joined with ' | ' (for one-line messages),
    with terminal control sequences removed (see `printable`)."""
    lines = [ln.strip() for ln in printable(text).strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


# ESC sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ST`, two-byte `ESC x`), then any
# other C0/C1 control but tab and newline
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|\x9b[0-?]*[ -/]*[@-~]"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` safe to show on a terminal: what a host sends (stderr, versions, names) could
    otherwise move the cursor, rewrite earlier lines, set the window title or hide text
    (issue 19). Escape sequences are dropped, other control characters shown as '?'."""
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub("?", _ESCAPES.sub("", text))
