"""One way to work a host (issue 15 item 1): a `HostSession` over a connection
(`target.Session`) and the host's engine (`engines.Engine`) runs commands and raises the
host's CommandError through ONE failure builder, and offers what every per-host step needs:
`become`, `facts` (the one probe command: engine, version, store, tools, space, the wanted
images' identity and the layer chains), `identity`, `stage` (private dir, resume, then sha256
+ rename + load as one checked script), `load` (loading steps while the next is sent),
`stream`, `cleanup`. `host_frame` connects, takes the host lock, runs a body and turns every
error into the host's status. Deploy (`distrib.engine`) is a short composition of these.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from distrib import commands, engines
from distrib.decide import Found, Loading
from distrib.errors import (
    CommandError,
    ConnectError,
    DistribError,
    HostError,
    LocalError,
    TransferError,
    last_lines,
)
from distrib.outcome import Cancelled, HostResult, Progress
from distrib.plan import HostPlan
from distrib.refs import ImageRef
from distrib.steploading import load_steps
from distrib.target import Result, Session

PROBE_TIMEOUT = 60.0
CHECKSUM_TIMEOUT = 900.0
LOAD_TIMEOUT = 3600.0
CLEANUP_TIMEOUT = 30.0
HOST_LOCK_WAIT = 1800.0  # how long a run waits for another one on the same host (issue 19)
UPLOAD_ATTEMPTS = 2  # a checksum mismatch is re-sent once, never loaded


class LoadFailed(CommandError):
    """The engine's load of a payload failed (a delta may be refused: decide)."""


def engine_of(host: HostPlan) -> engines.Engine:
    """The host's engine commands (sudo without a password until the become check says)."""
    return engines.Engine(host.engine, tuple(host.docker), host.containerd_namespace, host.become)


@dataclass(frozen=True)
class Look:
    """`HostSession.facts`' answer: the facts, the wanted images' identity (None when the
    engine does not answer) and the host's layer listing (None when not asked)."""

    facts: commands.Facts
    found: Found | None
    listed: str | None = None


class HostSession:
    """One host's connection, engine and outcome, for the length of one step."""

    def __init__(
        self,
        host: HostPlan,
        session: Session,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        result: HostResult | None = None,
    ) -> None:
        self.host = host
        self.name = host.name
        self.session = session
        self.progress = progress or Progress()
        self.cancel = cancel or threading.Event()
        self.result = result if result is not None else HostResult(host.name)
        self.engine = engine_of(host)
        self.secret_line = b""  # the become password line, when sudo needs one

    # -- running -------------------------------------------------------------------------------

    def phase(self, name: str) -> None:
        if self.cancel.is_set():
            raise Cancelled("interrupted")
        self.progress.phase(self.name, name)

    def timed(self, name: str, started: float) -> None:
        self.result.timings[name] = round(time.monotonic() - started, 3)

    def failure(
        self,
        result: Result,
        what: str,
        *,
        command: str | None = None,
        hint: str | None = None,
        nonzero: bool = False,
        load: bool = False,
    ) -> CommandError:
        """This host's CommandError for `result` (`command`: the one to name, when `result`
        holds another; `nonzero`: an exit 0 counts as 1, for output that failed a check
        after the command succeeded; `load`: the engine's load failed: LoadFailed). The one
        builder of a host's CommandError."""
        status = (result.exit_status or 1) if nonzero else result.exit_status
        return (LoadFailed if load else CommandError)(
            self.name,
            result.command if command is None else command,
            status,
            result.stdout,
            result.stderr,
            what=what,
            hint=hint,
        )

    def run(self, command: str, what: str, timeout: float, *, engine: bool = False) -> Result:
        """Run `command`; CommandError (`what` failed) unless it exits 0. `engine`: an engine
        command, which reads sudo's password line on stdin when sudo needs one."""
        result = self.run_unchecked(command, timeout, engine=engine)
        if not result.ok:
            raise self.failure(result, what, command=command)
        return result

    def run_unchecked(self, command: str, timeout: float, *, engine: bool = True) -> Result:
        """`command`'s result, whatever its exit status (the caller reports a failure)."""
        if engine and self.secret_line:
            return self.session.run(command, timeout=timeout, stdin=self.secret_line)
        return self.session.run(command, timeout=timeout)

    # -- become ----------------------------------------------------------------------------

    def become(self, password: engines.Secret | None) -> None:
        """Can the SSH user become the host's become user with sudo, and does it need the
        password (`password` unless the inventory gives one)? Fast and clear in every case:
        `sudo -n` never prompts, and `sudo -S` reads the one line we send, then sees EOF."""
        become = self.host.become
        if become is None:
            return
        who = self.host.target.user or "the SSH user"
        out = self.run(engines.become_check(become), "checking sudo", PROBE_TIMEOUT).stdout
        state, words = engines.parse_become_check(out)
        if state == engines.NOPASSWD:
            return
        cannot = f"become: {who} may not run commands as {become.user} with sudo"
        if state == engines.NO_SUDO:
            raise HostError(
                self.name,
                f"become: sudo is not installed on the host ({who} cannot run the engine as "
                f"{become.user})",
                hint="install sudo there, or connect as a user who may use the engine",
            )
        if state == engines.DENIED:
            raise HostError(
                self.name, f"{cannot}: {words}", hint="add a sudoers rule for this user on the host"
            )
        secret = become.password or password  # ansible_become_password first
        if secret is None:
            raise HostError(
                self.name,
                f"become: sudo on the host asks {who} for a password and none was given",
                hint="pass --ask-become-pass or --become-password-file FILE, or give the user "
                "a NOPASSWD sudoers rule",
            )
        checked = self.session.run(
            engines.become_validate(become), timeout=PROBE_TIMEOUT, stdin=secret.line()
        )
        if not checked.ok:
            if engines.password_rejected(checked.stderr):
                raise HostError(
                    self.name,
                    f"become: sudo rejected the password of {who} (nothing was changed)",
                    hint="check the password given with --ask-become-pass or "
                    "--become-password-file",
                )
            raise HostError(
                self.name,
                f"{cannot}: {last_lines(checked.stderr) or 'sudo failed'}",
                hint="add a sudoers rule for this user on the host",
            )
        self.engine = replace(self.engine, password=True)
        self.secret_line = secret.line()

    # -- reading the host --------------------------------------------------------------------

    def facts(
        self, known: commands.Facts | None, refs: Sequence[ImageRef], listing: bool = False
    ) -> Look:
        """The probe (unless `known` from a run's probing pass), the identity of `refs` and
        (`listing`, docker) the host's layer chains: ONE remote command, as the engine user
        (issue 16 item 2: a host that holds everything costs one command after connecting).
        The identity is parsed only when the engine answers; when it does not, CommandError
        with the engine's own words (its version command's)."""
        scripts = [] if known is not None else [self.engine.probe_script(self.host.remote_tmp)]
        scripts.append(self.engine.identity_script(refs) if refs else "true")
        listing = listing and self.engine.kind == engines.DOCKER
        if listing:
            store = None if known is None else known.store == commands.CONTAINERD_STORE
            scripts.append(commands.host_layers(list(self.host.docker), store))
        command = self.engine.wrap(commands.in_parts(scripts))
        result = self.run(command, "probe", PROBE_TIMEOUT, engine=True)
        try:
            parts = commands.split_parts(result.stdout, len(scripts))
        except ValueError:
            raise self.failure(
                result, "probe (its output was cut short)", command=command
            ) from None
        facts = known if known is not None else commands.parse_probe(parts[0])
        self.result.facts = facts
        if not facts.engine_ok:
            why = self.run_unchecked(self.engine.version_command(), PROBE_TIMEOUT)
            raise self.failure(
                why,
                "the container engine does not answer",
                hint="is the engine running, and may this user use it (docker group, become)?",
                nonzero=True,
            )
        found = self.parse_identity(parts[1 if known is None else 0], refs)
        return Look(facts, found, parts[-1] if listing else None)

    def identity(self, refs: Sequence[ImageRef]) -> Found:
        """What the host holds under `refs`, in one command as the engine user."""
        command = self.engine.wrap(self.engine.identity_script(refs))
        out = self.run(command, "inspecting images", PROBE_TIMEOUT, engine=True)
        return self.parse_identity(out.stdout, refs)

    def parse_identity(self, text: str, refs: Sequence[ImageRef]) -> Found:
        try:
            return self.engine.parse_identity(text, refs)
        except commands.InspectError as exc:
            raise HostError(
                self.name,
                f"{self.engine.kind} cannot inspect {exc.ref}: {exc.message}",
                hint="is the engine running, and may this user use it?",
            ) from None

    def layer_chains(
        self, containerd_store: bool, listed: str | None = None
    ) -> tuple[set[tuple[str, ...]], frozenset[str] | None]:
        """The host's layer chains, and its content blobs on docker's containerd store
        (`listed`: the listing already read with the probe)."""
        text = listed
        if text is None:
            listing = self.engine.wrap(
                commands.host_layers(list(self.host.docker), containerd_store)
            )
            text = self.run(listing, "listing the host's layers", PROBE_TIMEOUT, engine=True).stdout
        return commands.parse_host_layers(text), commands.parse_host_blobs(text)

    # -- staging: private dir, resumable upload, then ONE checked script -------------------

    def stage(
        self, payload: Any, loading: Loading, verify: Sequence[ImageRef] | None
    ) -> Found | None:
        """Send `payload` to a private staging dir (resuming a cut-off upload), check its
        sha256, rename and load it in one command, then clean up: the cleanup also reads
        the identity of `verify` (None: no verify). Returns that identity (None: not read).
        A lost link leaves what arrived for the next run to resume."""
        tempdir = commands.staging_dir(self.host.remote_tmp, payload.key)
        final = f"{tempdir}/{commands.ARCHIVE_NAME}{payload.extension}"
        part = final + ".part"
        self.phase("upload")
        present = self.make_staging(payload.key, part)
        keep, loaded = False, False
        try:
            t = time.monotonic()
            offset = self.resume_offset(payload, part, present)
            self.upload(payload, part, offset, announce=True)
            self.timed("upload", t)
            self.phase("load")
            t = time.monotonic()
            self.checked_load(payload, part, final, loading)
            self.timed("load", t)
            loaded = True
        except ConnectError:
            keep = True  # the link is gone: what arrived stays for the next run to resume
            raise
        finally:
            found = None if keep else self.cleanup(tempdir, verify if loaded else None)
        return found

    def make_staging(self, key: str, part: str) -> int:
        """The private staging dir (after checking remote_tmp: issue 19); the bytes of an
        earlier, cut-off upload already in `part`."""
        command = commands.make_staging(self.host.remote_tmp, key, part)
        out = self.run(command, "creating the private staging dir", PROBE_TIMEOUT).stdout
        try:
            return commands.parse_staging(out)
        except commands.UnsafeTmp as exc:
            raise HostError(
                self.name,
                f"remote_tmp {self.host.remote_tmp} is not safe to stage archives in: "
                f"{exc.problem}; nothing was sent",
                hint="use a remote_tmp that belongs to the SSH user (or root) and that only "
                "its owner may write to (chmod go-w), or a sticky one like /var/tmp",
            ) from None

    def resume_offset(self, payload: Any, part: str, present: int) -> int:
        """Bytes of a previous, cut-off upload that can be kept (prefix checked by sha256)."""
        if present <= 0:
            return 0
        command = commands.prefix_sha256(part, present)
        out = self.run(command, "checking the partial upload", CHECKSUM_TIMEOUT).stdout
        # (the local prefix waits for a growing archive to reach `present` bytes)
        if commands.parse_sha256(out) == payload.prefix_sha256(present):
            self.result.resumed_from = present
            return present
        # longer than the payload, or a different prefix: start over
        self.run(commands.remove(part), "removing a stale partial upload", PROBE_TIMEOUT)
        return 0

    def upload(self, payload: Any, part: str, offset: int, announce: bool) -> None:
        """Write `payload` from `offset` into `part` on the host (`announce`: tell the
        progress display the bytes to come; a step's are in the total already)."""
        if announce:
            self.progress.transfer_started(self.name, payload.size_hint - offset)
        sent = self.session.upload(
            commands.receive(part, append=offset > 0),
            self.chunks(payload, offset),
            on_bytes=self.count,
            timeout=CHECKSUM_TIMEOUT,
        )
        if not sent.ok:
            raise self.failure(sent, "writing the archive on the host")

    def checked_load(
        self,
        payload: Any,
        part: str,
        final: str,
        loading: Loading,
        remove_after: bool = False,
        quiet: bool = False,
    ) -> None:
        """Checksum, rename and load in one remote command (issue 19: nothing can swap the
        file in between). A copy whose sha256 differs is removed and sent again once, never
        loaded (`quiet`: no phase changes, the step loader's thread)."""
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            load = self.engine.load(final, loading.codec, loading.native, loading.tools)
            command = commands.checked_load(part, final, payload.sha256, load, remove_after)
            out = self.run_unchecked(command, LOAD_TIMEOUT)
            remote, _ = commands.parse_checked_load(out.stdout)
            if remote == payload.sha256:
                if not out.ok:
                    raise self.failure(out, f"{self.engine.kind} load", command=command, load=True)
                return
            if not remote:
                raise self.failure(out, "sha256sum before loading", command=command, nonzero=True)
            self.run(commands.remove(part), "removing the bad copy", PROBE_TIMEOUT)
            verify = getattr(payload, "verify", None)
            if verify is not None:  # the workstation's copy, if it was read unchecked: a
                verify()  # CorruptEntry then (rebuilt, and this host retries)
            if attempt == UPLOAD_ATTEMPTS:
                raise TransferError(
                    self.name,
                    f"checksum mismatch after {attempt} attempts "
                    f"(expected {payload.sha256[:12]}, host has {remote[:12]}); not loaded",
                )
            if not quiet:
                self.phase("upload")
            self.upload(payload, part, 0, announce=True)
            if not quiet:
                self.phase("load")

    def load(
        self, key: str, steps: Iterable[Any], loading: Loading, verify: Sequence[ImageRef] | None
    ) -> tuple[Found | None, int]:
        """Staged, one loading step at a time, each loaded while the next is sent
        (steploading.load_steps). Returns (the identity of `verify` read with the cleanup,
        the number of steps sent)."""
        return load_steps(self, key, steps, loading, verify)

    # -- streamed: straight into the engine's load, no temp file ---------------------------

    def stream(self, payload: Any, loading: Loading) -> None:
        self.phase("stream")
        t = time.monotonic()
        self.progress.transfer_started(self.name, payload.size_hint)
        skip = [len(self.secret_line)]  # the password line is not payload bytes

        def count(nbytes: int) -> None:
            dropped = min(skip[0], nbytes)
            skip[0] -= dropped
            if nbytes > dropped:
                self.count(nbytes - dropped)

        def after_secret() -> Iterator[bytes]:
            if self.secret_line:  # sudo's password line first, when sudo reads one
                yield self.secret_line
            yield from self.chunks(payload)

        loaded = self.session.upload(
            self.engine.stream_load(loading.codec, loading.native, loading.tools),
            after_secret(),
            on_bytes=count,
            timeout=LOAD_TIMEOUT,
        )
        if not loaded.ok:
            raise self.failure(loaded, f"{self.engine.kind} load (streamed)", load=True)
        self.timed("upload", t)

    def chunks(self, payload: Any, offset: int = 0) -> Iterator[bytes]:
        try:
            for chunk in payload.chunks(offset):
                if self.cancel.is_set():
                    raise Cancelled("interrupted during upload")
                yield chunk
        except OSError as exc:  # the workstation's file, not the link (transport: lost)
            raise LocalError(f"reading {payload.path} failed: {exc}") from None

    def count(self, nbytes: int) -> None:
        self.result.bytes_sent += nbytes
        self.progress.advance(self.name, nbytes)

    # -- cleanup -------------------------------------------------------------------------------

    def cleanup(
        self,
        tempdir: str,
        verify: Sequence[ImageRef] | None = None,
        stand_ins: Sequence[str] = (),
    ) -> Found | None:
        """Remove the loading steps' stand-ins (`rmi`: untagged, the real image keeps its
        layers; those never loaded are `No such image`: not an error) and our temp dir,
        whatever happened, in one command; a failure here is reported, not raised. After a
        load the same command reads the identity of `verify` (issue 16 item 2: one round
        trip less); returned (None: not asked)."""
        steps = [commands.cleanup(tempdir)]
        # the engine's commands under ONE sudo (which reads the one password line there is)
        as_engine_user = (
            [commands.join([*self.engine.argv, "rmi", *stand_ins])] if stand_ins else []
        )
        if verify is not None:
            as_engine_user.append(self.engine.identity_script(verify))
        if as_engine_user:
            steps.append(self.engine.wrap(commands.in_parts(as_engine_user)))
        command = commands.in_parts(steps)
        count = len(steps) - 1 + len(as_engine_user)  # the parts of the output
        t = time.monotonic()
        try:
            timeout = CLEANUP_TIMEOUT if verify is None else PROBE_TIMEOUT
            out = self.run_unchecked(command, timeout)
        except DistribError as exc:
            if stand_ins:
                self.result.message += (
                    f" (removing the loading steps' images failed: {exc.message})"
                )
            self.result.message += f" (cleanup of {tempdir} failed: {exc.message})"
            return None
        if verify is None:
            return None
        if not out.ok:
            raise self.failure(out, "inspecting images", command=command)
        try:
            text = commands.split_parts(out.stdout, count)[-1]
        except ValueError:
            raise self.failure(
                out, "inspecting images (the output was cut short)", command=command
            ) from None
        found = self.parse_identity(text, verify)
        self.timed("verify", t)
        return found
