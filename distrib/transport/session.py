"""An open SSH connection to one host: run a command, upload a stream into one, download,
hold a command open; liveness by keepalives and an I/O timeout."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paramiko

from distrib.errors import CommandError, ConnectError, HostError
from distrib.target import Result, Target

# Bulk transfer: a large receive window and maximum packet size for our channels; chunks
# handed to sendall are large so the Python loop is not the bottleneck.
WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
PIECE = 256 * 1024  # progress (and the stall watchdog) advance per piece
# Blocks read per wake-up before the deadlines and the cap are looked at again: a stream that
# never pauses must not keep the reader from its clock (issue 19: the timeout was skipped).
READS_PER_TURN = 64


def close_quietly(chan: paramiko.Channel) -> None:
    """Close a channel in a `finally`: on a dead link paramiko raises EOFError/OSError from
    close() itself, which would hide the ConnectError being raised (the host would then be
    reported as an unexpected error instead of unreachable)."""
    with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
        chan.close()


class SSHSession:
    """An open SSH connection to one host. One per host; not shared between threads.

    Liveness: keepalives are sent every client.KEEPALIVE_SECONDS; while a command runs silently, the
    session asks the server for a reply every `io_timeout` seconds and treats no answer within
    `io_timeout` as a dead link (like OpenSSH's ServerAliveInterval/CountMax). An upload that
    makes no progress for `io_timeout` is cut off. Both raise ConnectError (host unreachable).
    """

    def __init__(
        self,
        target: Target,
        conn: paramiko.SSHClient,
        transport: paramiko.Transport,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.target = target
        self._conn = conn
        self._transport = transport
        self._on_close = on_close

    def _lost(self, what: str) -> ConnectError:
        return ConnectError(self.target.name, f"connection to {self.target.label} lost: {what}")

    def alive(self) -> bool:
        """Whether the server still answers (a session kept open between a run's steps)."""
        return self._alive()

    def _alive(self) -> bool:
        """Whether the server still answers (paramiko closes the channels of a dead connection
        a moment before it marks the transport inactive: ask rather than trust is_active)."""
        return self._transport.is_active() and self._ping(min(self.target.io_timeout, 5.0))

    def _killed(self, command: str) -> HostError:
        """The connection is alive but sshd closed the command's channel without an exit
        status: the remote command was killed by a signal (paramiko ignores `exit-signal`)."""
        return HostError(
            self.target.name,
            f"the remote command ended without an exit status (killed by a signal?): {command}",
            hint="look at the host's kernel log (OOM killer) and at who else manages its processes",
        )

    def _flooded(self, command: str, cap: int) -> HostError:
        """The command sent more output than may be kept: stopped (its channel is closed by
        the caller), the host failed with a message naming the command."""
        return HostError(
            self.target.name,
            f"remote command sent more than {cap:,} bytes of output, stopped: {command}",
            hint="a host flooding its output; if this much is expected, raise "
            "max_command_output for this host in the inventory",
        )

    def _channel(self, command: str) -> paramiko.Channel:
        try:
            chan = self._transport.open_session(
                window_size=WINDOW_SIZE,
                max_packet_size=MAX_PACKET_SIZE,
                timeout=self.target.connect_timeout,
            )
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(str(exc) or type(exc).__name__) from None
        return chan

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes = b"") -> Result:
        """Run `command` in the remote shell; return its exit status and output. `stdin` (a
        become password line) goes to the command's stdin, never into the command string."""
        chan = self._channel(command)
        try:
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            return self._finish(chan, command, timeout)
        except (EOFError, OSError, paramiko.SSHException) as exc:
            raise self._lost(str(exc) or type(exc).__name__) from None
        finally:
            close_quietly(chan)

    def hold(self, command: str, *, timeout: float) -> tuple[str, Callable[[], None]]:
        """Start `command` and return (its first line of output, release) while it keeps
        running: a host-side lock held for as long as its channel is open (issue 19).
        `release()` closes its stdin and the channel; closing the session releases it too.
        A command that ends before printing a line is a CommandError; none within `timeout`
        seconds a HostError."""
        chan = self._channel(command)
        deadline = time.monotonic() + timeout
        out = bytearray()
        try:
            while b"\n" not in out and len(out) < 4096:
                if chan.recv_ready():
                    out += chan.recv(4096)
                elif chan.exit_status_ready() or chan.closed:
                    status = chan.recv_exit_status()
                    err = bytearray()
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                    raise CommandError(
                        self.target.name,
                        command,
                        status,
                        out.decode("utf-8", "replace"),
                        err.decode("utf-8", "replace"),
                    )
                elif time.monotonic() >= deadline:
                    raise HostError(
                        self.target.name, f"no answer within {timeout:g}s from: {command}"
                    )
                else:
                    select.select([chan], [], [], 1.0)
        except (EOFError, OSError, paramiko.SSHException) as exc:
            close_quietly(chan)
            raise self._lost(str(exc) or type(exc).__name__) from None
        except BaseException:
            close_quietly(chan)
            raise

        def release() -> None:
            with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
                chan.shutdown_write()
            close_quietly(chan)

        return out.split(b"\n", 1)[0].decode("utf-8", "replace"), release

    def upload(
        self,
        command: str,
        chunks: Iterable[bytes],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Stream `chunks` into the stdin of `command`; return its result after EOF.

        `timeout` bounds the wait for the command to finish after the last byte.
        """
        chan = self._channel(command)
        io_timeout = self.target.io_timeout
        # A dead link blocks a write inside paramiko's packetizer, where no channel timeout
        # reaches. A watchdog closes the transport when no piece went out for io_timeout;
        # the blocked write then fails at once (paramiko checks for a closed packetizer).
        progress = {"at": time.monotonic(), "done": False, "stalled": False}
        watchdog = threading.Thread(
            target=self._watch, args=(progress, io_timeout), name=f"watch-{self.target.name}"
        )
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.settimeout(io_timeout)
            for chunk in chunks:
                view = memoryview(chunk)
                for start in range(0, len(view), PIECE):
                    piece = view[start : start + PIECE]
                    try:
                        chan.sendall(piece.tobytes() if len(view) > PIECE else chunk)
                    except socket.timeout:
                        raise self._lost(f"no upload progress for {io_timeout:g}s") from None
                    except (OSError, paramiko.SSHException, EOFError) as exc:
                        if progress["stalled"]:
                            raise self._lost(f"no upload progress for {io_timeout:g}s") from None
                        if chan.exit_status_ready() and self._transport.is_active():
                            break  # the remote command died early: report its stderr
                        if chan.closed and self._alive():
                            raise self._killed(command) from None
                        raise self._lost(f"upload cut off: {exc or type(exc).__name__}") from None
                    progress["at"] = time.monotonic()
                    if on_bytes:
                        on_bytes(len(piece))
                if chan.exit_status_ready():
                    break
            chan.shutdown_write()
            progress["done"] = True
            return self._finish(chan, command, timeout)
        except (EOFError, OSError, paramiko.SSHException) as exc:
            if progress["stalled"]:
                raise self._lost(f"no upload progress for {io_timeout:g}s") from None
            raise self._lost(str(exc) or type(exc).__name__) from None
        finally:
            progress["done"] = True
            close_quietly(chan)

    def download(
        self,
        command: str,
        write: Callable[[bytes], None],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
        stdin: bytes = b"",
    ) -> Result:
        """Run `command` and hand its stdout to `write` chunk by chunk as it arrives (never all
        in memory); return its exit status and stderr (`stdout` is empty in the Result).
        `stdin` (a become password line) goes to the command's stdin, never into its string.

        The mirror of `upload`: liveness as in `_finish` (a silent link is pinged every
        `io_timeout`; no answer is a ConnectError). An exception from `write` (disk full, an
        interrupted run) closes the channel, so the remote command stops on its next write.
        """
        chan = self._channel(command)
        try:
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            return self._finish(chan, command, timeout, write=write, on_bytes=on_bytes)
        except (EOFError, paramiko.SSHException) as exc:  # not OSError: `write` may raise it
            raise self._lost(str(exc) or type(exc).__name__) from None
        finally:
            close_quietly(chan)

    def _watch(self, progress: dict[str, Any], io_timeout: float) -> None:
        while not progress["done"]:
            if time.monotonic() - progress["at"] > io_timeout:
                progress["stalled"] = True
                self._transport.close()
                return
            time.sleep(min(0.5, io_timeout / 4))

    def _finish(
        self,
        chan: paramiko.Channel,
        command: str,
        timeout: float | None,
        *,
        write: Callable[[bytes], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Result:
        """Wait for `command` to end; its stdout is collected, or handed to `write` chunk by
        chunk (downloads). A link that stays silent for io_timeout is pinged; no answer is a
        ConnectError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        io_timeout = self.target.io_timeout
        cap = self.target.max_output
        out = bytearray()
        err = bytearray()
        last_heard = time.monotonic()
        while True:
            got = False
            for _ in range(READS_PER_TURN):
                if not chan.recv_ready():
                    break
                block = chan.recv(PIECE)
                if write is None:
                    out += block
                elif block:
                    write(block)
                    if on_bytes:
                        on_bytes(len(block))
                got = True
            for _ in range(READS_PER_TURN):
                if not chan.recv_stderr_ready():
                    break
                err += chan.recv_stderr(65536)
                got = True
            if len(out) + len(err) > cap:
                raise self._flooded(command, cap)
            now = time.monotonic()
            if got:
                last_heard = now
            if chan.exit_status_ready() and chan.eof_received:
                if not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                continue
            if chan.closed or not self._transport.is_active():
                if chan.exit_status_ready():
                    break
                raise self._lost("closed by the remote side")
            if deadline is not None and now >= deadline:  # checked even while data arrives
                raise HostError(
                    self.target.name, f"remote command timed out after {timeout:g}s: {command}"
                )
            if now - last_heard >= io_timeout:
                if not self._ping(io_timeout):
                    self._transport.close()
                    raise self._lost(f"no answer to keepalive for {io_timeout:g}s")
                last_heard = time.monotonic()
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
            select.select([chan], [], [], wait)
        status = chan.recv_exit_status()
        if status == -1:  # closed without an exit status: sshd (or the link) died under us
            if self._alive():
                raise self._killed(command)
            raise self._lost("the channel closed without an exit status")
        return Result(
            command, status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        )

    def _ping(self, timeout: float) -> bool:
        """Whether the server answers a global request within `timeout` seconds."""
        answered = threading.Event()

        def ask() -> None:
            try:
                self._transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # noqa: BLE001 - any answer or error ends the wait
                pass
            finally:
                answered.set()

        threading.Thread(target=ask, name=f"ping-{self.target.name}", daemon=True).start()
        return answered.wait(timeout) and self._transport.is_active()

    def close(self) -> None:
        self._conn.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:  # this host's share of its bastion connection
            on_close()
