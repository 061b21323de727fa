"""`ansible_connection: local` (issue 17): the host is the workstation itself, reached with no SSH.

A LocalSession offers what an SSHSession does (`run`, `upload`, `download`, `hold`, `close`),
running each command in the workstation's `/bin/sh` (through distrib.local, the only module that
starts processes): the engine's steps are the same commands, so the probe, the deploy and the
verify of a local host use the workstation's own engine. Images shipped from this workstation
are already there, so a rollout to it finds them present and changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from distrib import local
from distrib.errors import CommandError, HostError

PIECE = 256 * 1024
SHELL = "/bin/sh"


class LocalSession:
    """One local "connection": each command a child process of its own (process group)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self._held: list[Any] = []

    def _spawn(self, command: str, stdin: bool) -> Any:
        return local.spawn(
            [SHELL, "-c", command],
            stdin=local.PIPE if stdin else local.DEVNULL,
            new_session=True,  # a timeout kills the command and its children
        )

    def _kill(self, proc: Any) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(5)

    def _timed_out(self, proc: Any, command: str, timeout: float | None) -> HostError:
        self._kill(proc)
        return HostError(self.target.name, f"local command timed out after {timeout:g}s: {command}")

    def _flooded(self, command: str) -> HostError:
        cap = self.target.max_output
        return HostError(
            self.target.name,
            f"local command sent more than {cap:,} bytes of output, stopped: {command}",
        )

    def _reader(self, stream: IO[bytes], sink: bytearray, cap: int) -> threading.Thread:
        def read() -> None:
            while True:
                block = stream.read1(PIECE) if hasattr(stream, "read1") else stream.read(PIECE)
                if not block:
                    return
                if len(sink) <= cap:  # keep reading past the cap: the writer must not block
                    sink.extend(block)

        thread = threading.Thread(target=read, name=f"local-{self.target.name}", daemon=True)
        thread.start()
        return thread

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes = b"") -> Any:
        """Run `command` in the local shell; `stdin` (a become password line) on its stdin."""
        return self.upload(command, [stdin] if stdin else [], timeout=timeout)

    def upload(
        self,
        command: str,
        chunks: Iterable[bytes],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Stream `chunks` into the stdin of `command`; its result after EOF."""
        from distrib.target import Result

        proc = self._spawn(command, stdin=True)
        out, err = bytearray(), bytearray()
        cap = int(self.target.max_output)
        readers = [self._reader(proc.stdout, out, cap), self._reader(proc.stderr, err, cap)]
        try:
            assert proc.stdin is not None
            for chunk in chunks:
                try:
                    proc.stdin.write(chunk)
                except BrokenPipeError:  # the command ended early: its stderr says why
                    break
                if on_bytes:
                    on_bytes(len(chunk))
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            status = self._wait(proc, command, timeout)
        except BaseException:
            self._kill(proc)
            raise
        for reader in readers:
            reader.join()
        if len(out) + len(err) > cap:
            raise self._flooded(command)
        return Result(
            command, status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        )

    def _wait(self, proc: Any, command: str, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return int(proc.wait(0.5))
            except Exception:  # subprocess.TimeoutExpired: not imported here (local.py's)
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out(proc, command, timeout) from None

    def download(
        self,
        command: str,
        write: Callable[[bytes], None],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
        stdin: bytes = b"",
    ) -> Any:
        """Run `command`, handing its stdout to `write` chunk by chunk (stdout empty in the
        Result); `stdin` (a become password line) on its stdin."""
        from distrib.target import Result

        proc = self._spawn(command, stdin=bool(stdin))
        if stdin:  # one line: the pipe takes it whole, then EOF
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(stdin)
                proc.stdin.close()
        err = bytearray()
        reader = self._reader(proc.stderr, err, int(self.target.max_output))
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = proc.stdout.fileno()
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out(proc, command, timeout)
                if not select.select([fd], [], [], 0.5)[0]:
                    continue  # silent: the deadline is looked at again
                block = os.read(fd, PIECE)
                if not block:
                    break
                write(block)
                if on_bytes:
                    on_bytes(len(block))
            status = self._wait(
                proc, command, None if deadline is None else max(0.1, deadline - time.monotonic())
            )
        except BaseException:
            self._kill(proc)
            raise
        reader.join()
        return Result(command, status, "", err.decode("utf-8", "replace"))

    def hold(self, command: str, *, timeout: float) -> tuple[str, Callable[[], None]]:
        """Start `command` and return (its first line of output, release) while it keeps
        running (a lock held as long as it runs); release() closes its stdin and ends it."""
        proc = self._spawn(command, stdin=True)
        deadline = time.monotonic() + timeout
        out = bytearray()
        fd = proc.stdout.fileno()
        try:
            while b"\n" not in out and len(out) < 4096:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if ready:
                    block = os.read(fd, 4096)
                    if block:
                        out += block
                        continue
                    status = proc.wait()
                    err = proc.stderr.read().decode("utf-8", "replace")
                    raise CommandError(
                        self.target.name, command, status, out.decode("utf-8", "replace"), err
                    )
                if time.monotonic() >= deadline:
                    raise HostError(
                        self.target.name, f"no answer within {timeout:g}s from: {command}"
                    )
        except BaseException:
            self._kill(proc)
            raise
        self._held.append(proc)

        def release() -> None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(5)
            except Exception:  # still running: ended by force
                self._kill(proc)
            with contextlib.suppress(ValueError):
                self._held.remove(proc)

        return out.split(b"\n", 1)[0].decode("utf-8", "replace"), release

    def close(self) -> None:
        for proc in list(self._held):
            with contextlib.suppress(OSError):
                proc.stdin.close()
            self._kill(proc)
        self._held.clear()
