"""SSH transport: the only module that imports fabric or paramiko (STYLE: I/O at the edges).

`connect(target)` opens one fabric Connection with host keys CHECKED (fabric 3 hard-codes
paramiko's AutoAddPolicy, fabric#2071: we replace it before opening) and returns an SSHSession
with two operations: `run` a command and collect its output, and `upload` a byte stream into a
remote command's stdin over one exec channel (no per-chunk round trips, large window).
Library errors become ConnectError / HostError with a hint, here and nowhere else.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import paramiko
from fabric import Connection

from distrib.errors import ConnectError, HostError

# Bulk transfer: a large receive window and maximum packet size for our channels; chunks
# handed to sendall are large so the Python loop is not the bottleneck.
WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
PIECE = 256 * 1024  # progress (and the stall watchdog) advance per piece
KEEPALIVE_SECONDS = 15
HOST_KEY_MODES = ("yes", "accept-new", "off")

_known_hosts_lock = threading.Lock()


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

    def run(self, command: str, *, timeout: float | None = None) -> Result: ...

    def upload(
        self,
        command: str,
        chunks: Iterable[bytes],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> Result: ...

    def close(self) -> None: ...


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _default_known_hosts() -> str:
    return os.path.expanduser("~/.ssh/known_hosts")


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"unknown host key for {hostname}")
        self.hostname = hostname
        self.key = key


class _CheckPolicy(paramiko.MissingHostKeyPolicy):
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
            raise _UnknownHostKey(hostname, key)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _known_hosts_lock:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            with open(self.path, "a", encoding="ascii") as fh:
                fh.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)


def connect(target: Target) -> SSHSession:
    """Open an SSH session to `target`, checking its host key. Raises ConnectError."""
    mode = target.host_key_checking
    if mode not in HOST_KEY_MODES:
        raise ConnectError(target.name, f"host_key_checking must be one of {HOST_KEY_MODES}")
    known_hosts = os.path.expanduser(target.known_hosts or _default_known_hosts())
    connect_kwargs: dict[str, Any] = {
        "banner_timeout": target.connect_timeout,
        "auth_timeout": target.connect_timeout,
        "channel_timeout": target.connect_timeout,
    }
    if target.key_file:
        key_path = os.path.expanduser(target.key_file)
        if not os.path.exists(key_path):
            raise ConnectError(
                target.name,
                f"private key file {key_path} does not exist",
                hint="fix ansible_ssh_private_key_file in the inventory",
            )
        connect_kwargs["key_filename"] = key_path
    conn = Connection(
        host=target.address,
        user=target.user,
        port=target.port,
        connect_timeout=target.connect_timeout,
        connect_kwargs=connect_kwargs,
    )
    client: paramiko.SSHClient = conn.client
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
    client.set_missing_host_key_policy(_CheckPolicy(mode, known_hosts))
    try:
        conn.open()
    except BaseException as exc:
        conn.close()
        raise _translate(target, known_hosts, exc) from None
    transport = client.get_transport()
    if transport is None:  # pragma: no cover - open() succeeded
        raise ConnectError(target.name, "SSH transport missing after connect")
    transport.set_keepalive(KEEPALIVE_SECONDS)
    return SSHSession(target, conn, transport)


def _translate(target: Target, known_hosts: str, exc: BaseException) -> BaseException:
    where = target.label
    name = _known_hosts_name(target.address, target.port)
    if isinstance(exc, _UnknownHostKey):
        return ConnectError(
            target.name,
            f"host key of {where} is not in {known_hosts} "
            f"({exc.key.get_name()} {fingerprint(exc.key)}); refusing to connect",
            hint=(
                f"check the fingerprint out of band, then trust it: ssh-keyscan -p {target.port} "
                f"-t {exc.key.get_name()} {target.address} >> {known_hosts}"
            ),
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return ConnectError(
            target.name,
            f"host key of {where} has CHANGED (now {exc.key.get_name()} {fingerprint(exc.key)}, "
            f"expected {fingerprint(exc.expected_key)}): possible man-in-the-middle; refusing",
            hint=f"if the change is expected: ssh-keygen -f {known_hosts} -R '{name}'",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        key = f" with key {target.key_file}" if target.key_file else " (agent/default keys)"
        return ConnectError(
            target.name,
            f"authentication failed for {where}{key}: {exc}",
            hint="check ansible_user and ansible_ssh_private_key_file for this host, and that "
            "the public key is in that user's authorized_keys",
        )
    if isinstance(exc, socket.gaierror):
        return ConnectError(target.name, f"cannot resolve host name {target.address!r}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ConnectError(
            target.name, f"timed out after {target.connect_timeout:g}s connecting to {where}"
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(target.name, f"connection refused by {where} (is sshd running?)")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errors = list(exc.errors.values())
        if errors and all(isinstance(e, ConnectionRefusedError) for e in errors):
            return ConnectError(target.name, f"connection refused by {where} (is sshd running?)")
        return ConnectError(target.name, f"cannot connect to {where}: {exc}")
    if isinstance(exc, (paramiko.SSHException, OSError, EOFError)):
        return ConnectError(target.name, f"cannot connect to {where}: {exc or type(exc).__name__}")
    return exc


class SSHSession:
    """An open SSH connection to one host. One per host; not shared between threads.

    Liveness: keepalives are sent every KEEPALIVE_SECONDS; while a command runs silently, the
    session asks the server for a reply every `io_timeout` seconds and treats no answer within
    `io_timeout` as a dead link (like OpenSSH's ServerAliveInterval/CountMax). An upload that
    makes no progress for `io_timeout` is cut off. Both raise ConnectError (host unreachable).
    """

    def __init__(
        self,
        target: Target,
        conn: Connection,
        transport: paramiko.Transport,
    ) -> None:
        self.target = target
        self._conn = conn
        self._transport = transport

    def _lost(self, what: str) -> ConnectError:
        return ConnectError(self.target.name, f"connection to {self.target.label} lost: {what}")

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

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        """Run `command` in the remote shell; return its exit status and output."""
        chan = self._channel(command)
        try:
            chan.shutdown_write()
            return self._finish(chan, command, timeout)
        finally:
            chan.close()

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
                        raise self._lost(f"upload cut off: {exc or type(exc).__name__}") from None
                    progress["at"] = time.monotonic()
                    if on_bytes:
                        on_bytes(len(piece))
                if chan.exit_status_ready():
                    break
            chan.shutdown_write()
            progress["done"] = True
            return self._finish(chan, command, timeout)
        finally:
            progress["done"] = True
            chan.close()

    def _watch(self, progress: dict[str, Any], io_timeout: float) -> None:
        while not progress["done"]:
            if time.monotonic() - progress["at"] > io_timeout:
                progress["stalled"] = True
                self._transport.close()
                return
            time.sleep(min(0.5, io_timeout / 4))

    def _finish(self, chan: paramiko.Channel, command: str, timeout: float | None) -> Result:
        deadline = None if timeout is None else time.monotonic() + timeout
        io_timeout = self.target.io_timeout
        out = bytearray()
        err = bytearray()
        last_heard = time.monotonic()
        while True:
            got = False
            while chan.recv_ready():
                out += chan.recv(65536)
                got = True
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                got = True
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
            if deadline is not None and now >= deadline:
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
