"""A fake docker host behind the Session protocol, for engine tests (never for integration).

It understands exactly the commands that distrib.commands builds, and keeps a tiny in-memory
filesystem and image store, so the engine's real logic runs unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distrib import commands
from distrib.commands import Facts, Inspected
from distrib.errors import ConnectError
from distrib.hostsession import HostSession, Look
from distrib.refs import ImageRef
from distrib.target import Result, Target


@dataclass
class FakeHost:
    name: str
    images: dict[str, str] = field(default_factory=dict)  # ref -> id
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    engine_up: bool = True
    reachable: bool = True
    tools: tuple[str, ...] = ("gzip", "sha256sum", "zstd")
    corrupt_uploads: int = 0  # flip a byte in this many uploads
    load_fails: bool = False
    archive_images: dict[str, str] = field(default_factory=dict)  # what `docker load` adds
    layers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ref -> diffIDs
    # docker's containerd image store (issue 14): `.Id` is a manifest digest, a Descriptor is
    # shown, and the config only as runtime fields: `configs` (ref -> Config) with `created`
    containerd_store: bool = False
    configs: dict[str, dict[str, object]] = field(default_factory=dict)
    created: str = "2026-12-02T04:23:43.370764779Z"
    archive_configs: dict[str, dict[str, object]] = field(default_factory=dict)  # what load sets
    root_avail: int | None = 10**12
    tmp_avail: int | None = 10**12
    cut_after: int | None = None  # the link dies after this many bytes of an upload
    tmp_owner: int = 0  # remote_tmp's owner uid and mode (the SSH user is uid 0)
    tmp_mode: int = 0o1777
    machine: str = ""  # `uname -m` in the probe ("": an older probe that did not say)
    log: list[str] = field(default_factory=list)  # every command and part of one that ran
    remote: list[str] = field(default_factory=list)  # the remote commands (runs, uploads)

    def inspect_line(self, ref: str) -> str:
        """`ref` as docker 28 shows it in commands.INSPECT_FORMAT (real lines: test_commands)."""
        image_id = self.images[ref]
        descriptor = image_id if self.containerd_store else ""
        config = json.dumps(self.configs.get(ref, {"Cmd": None, "Entrypoint": None}))
        layers = json.dumps(list(self.layers.get(ref, ())))
        return "\t".join(
            [image_id, layers, "1000", descriptor, config, "amd64", "linux", "<no value>",
             self.created, ""]
        )  # fmt: skip


def split_parts(command: str) -> list[str] | None:
    """The scripts of a commands.in_parts command (None: not one), split at its top level
    (a separator inside a quoted `sudo ... sh -c SCRIPT` belongs to that script)."""
    sep = f"\n}}; printf '\\n%s\\n' {commands.PART_MARK}; {{ "
    if not command.startswith("{ ") or sep not in command:
        return None
    parts, start, single, double, i = [], 0, False, False, 0
    while i < len(command):
        c = command[i]
        if c == "'" and not double:
            single = not single
        elif c == '"' and not single:
            double = not double
        elif not single and not double and command.startswith(sep, i):
            parts.append(command[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(command[start:])
    if len(parts) < 2 or not parts[-1].endswith("\n}"):
        return None
    return [p.removeprefix("{ ").removesuffix("\n}") for p in parts]


def remote_commands(host: FakeHost) -> list[str]:
    """The remote commands a host ran (the count issue 16 item 2 bounds), host lock aside."""
    return host.remote


def loads(log: list[str]) -> list[str]:
    """The engine loads a fake host ran (not the checksum script around each)."""
    return [c for c in log if " load" in c and not c.startswith("s=$(sha256sum -- ")]


class FakeSession:
    def __init__(self, host: FakeHost, docker: list[str]) -> None:
        self.host = host
        self.docker = docker
        self.closed = False
        self.nested = 0  # >0 while running the parts of one command

    def run_part(self, part: str) -> Result:
        """One script of a commands.in_parts command (a subclass passes its stdin on)."""
        return self.run(part)

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        h = self.host
        if not self.nested:
            h.remote.append(command)
        h.log.append(command)
        parts = split_parts(command)
        if parts is not None:
            self.nested += 1
            try:
                results = [self.run_part(p) for p in parts]
            finally:
                self.nested -= 1
            out = f"\n{commands.PART_MARK}\n".join(r.stdout for r in results)
            err = "".join(r.stderr for r in results)
            return Result(command, results[-1].exit_status, out, err)
        if command.startswith("printf 'engine=%s\\n' docker; "):  # hostfacts.probe_script
            lines = ["engine=docker", f"engine_version={'20.10.24' if h.engine_up else ''}", "docker_root=/d"]
            lines.append(
                'docker_driver=overlayfs [["driver-type","io.containerd.snapshotter.v1"]]'
                if h.containerd_store
                else 'docker_driver=overlay2 [["Backing Filesystem","extfs"]]'
            )
            if h.root_avail is not None:
                lines.append(f"root_avail_kb={h.root_avail // 1024}")
            if h.tmp_avail is not None:
                lines.append(f"tmp_avail_kb={h.tmp_avail // 1024}")
            lines += [f"has_{t}=1" for t in h.tools]
            lines.append(f"arch={h.machine}")
            return Result(command, 0, "\n".join(lines) + "\n", "")
        if command.startswith(commands.join([*self.docker, "version"])):
            return Result(command, 1, "", "Cannot connect to the Docker daemon")
        if " images -q --no-trunc | sort -u | xargs -r " in command:
            out = "".join(json.dumps(list(h.layers.get(ref, ()))) + "\n" for ref in h.images)
            return Result(command, 0, out, "")
        if command.startswith("printf '%s\\t' ") and " image inspect --format " in command:
            out = ""
            for ref in re.findall(r"printf '%s\\t' (\S+); if ", command):
                ref = shlex.split(ref)[0]
                if ref in h.images:
                    out += f"{ref}\t{h.inspect_line(ref)}\n"
                else:
                    out += f"{ref}\t\n\n{ref}\t!Error response from daemon: No such image: {ref}\n"
            return Result(command, 0, out, "")
        if command.startswith("umask 077 && mkdir -p"):
            tmp = f"tmp={h.tmp_owner} {h.tmp_mode:o} 0\n"  # commands.make_staging
            if commands.tmp_problem(h.tmp_owner, h.tmp_mode, 0):
                return Result(command, 0, tmp, "")
            path = shlex.split(command.split("if mkdir -- ", 1)[1].split(" ", 1)[0])[0]
            part = shlex.split(command.rsplit("stat -c %s -- ", 1)[1].split(" 2>", 1)[0])[0]
            h.dirs.add(path)
            return Result(command, 0, f"{tmp}partial={len(h.files.get(part, b''))}\n", "")
        if command.startswith("head -c "):
            n = int(command.split()[2])
            path = shlex.split(command.split(" -- ", 1)[1].split(" |", 1)[0])[0]
            digest = hashlib.sha256(h.files.get(path, b"")[:n]).hexdigest()
            return Result(command, 0, f"{digest}  -\n", "")
        if command.startswith("docker rmi "):
            return Result(command, 0, "", "")
        if command.startswith("rm -f -- "):
            h.files.pop(command[len("rm -f -- ") :], None)
            return Result(command, 0, "", "")
        if command.startswith("s=$(sha256sum -- "):  # commands.checked_load
            m = re.match(
                r"s=\$\(sha256sum -- (\S+)\) .*?\[ \"\$s\" = (\w+) \] \|\| exit 0; "
                r"mv -f -- (\S+) (\S+) \|\| exit 1; \{ (.*)\n\}( && rm -f -- \S+)?$",
                command,
                re.S,
            )
            assert m, command
            part, expected, _, final, load, remove = m.groups()
            data = h.files.get(part)
            if data is None:
                return Result(command, 1, "", f"sha256sum: {part}: No such file or directory")
            digest = hashlib.sha256(data).hexdigest()
            out = f"{commands.CHECKED_MARK}{digest}\n"
            if digest != expected:
                return Result(command, 0, out, "")
            h.files[final] = h.files.pop(part)
            self.nested += 1  # (a part of this command: a subclass logs the outer one)
            try:
                loaded = FakeSession.run(self, load)
            finally:
                self.nested -= 1
            if loaded.ok and remove:
                h.files.pop(final, None)
            return Result(command, loaded.exit_status, out + loaded.stdout, loaded.stderr)
        if command.startswith("sha256sum -- "):
            path = command.split(" -- ", 1)[1]
            data = h.files.get(path)
            if data is None:
                return Result(command, 1, "", f"sha256sum: {path}: No such file or directory")
            return Result(command, 0, f"{hashlib.sha256(data).hexdigest()}  {path}\n", "")
        if command.startswith("mv -f -- "):
            src, dst = command[len("mv -f -- ") :].split(" ")
            h.files[dst] = h.files.pop(src)
            return Result(command, 0, "", "")
        if " load" in command or " images import " in command:  # docker, podman, ctr
            if h.load_fails:
                return Result(command, 1, "", "Error processing tar file: unexpected EOF")
            h.images.update(h.archive_images)
            h.configs.update(h.archive_configs)
            return Result(command, 0, "".join(f"Loaded image: {r}\n" for r in h.archive_images), "")
        if command.startswith("rm -rf -- "):
            path = command[len("rm -rf -- ") :]
            h.dirs.discard(path)
            for name in [f for f in h.files if f.startswith(path + "/")]:
                del h.files[name]
            return Result(command, 0, "", "")
        raise AssertionError(f"fake host does not understand: {command}")

    def upload(
        self,
        command: str,
        chunks: Iterable[bytes],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> Result:
        h = self.host
        h.log.append(command)
        h.remote.append(command)
        data = bytearray()
        for chunk in chunks:
            if h.cut_after is not None and len(data) + len(chunk) > h.cut_after:
                data += chunk[: h.cut_after - len(data)]
                h.reachable = False
                self._store(command, data)
                raise ConnectError(h.name, "connection lost: upload cut off")
            data += chunk
            if on_bytes:
                on_bytes(len(chunk))
        if not command.startswith("umask"):  # streamed into docker load
            self.nested += 1  # (one remote command: counted above)
            try:
                return self.run(command)
            finally:
                self.nested -= 1
        if h.corrupt_uploads > 0:
            h.corrupt_uploads -= 1
            data[0] ^= 0xFF
        self._store(command, data)
        return Result(command, 0, "", "")

    def _store(self, command: str, data: bytearray) -> None:
        if ">> " in command:
            path = command.split("cat >> ", 1)[1]
            self.host.files[path] = self.host.files.get(path, b"") + bytes(data)
        else:
            self.host.files[command.split("cat > ", 1)[1]] = bytes(data)

    def close(self) -> None:
        self.closed = True


class FakeFleet:
    """A connector over several FakeHosts (the engine's `connect` argument)."""

    def __init__(self, *hosts: FakeHost, docker: list[str] | None = None) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.docker = docker or ["docker"]
        self.sessions: list[FakeSession] = []

    def __call__(self, target: Target) -> FakeSession:
        host = self.hosts[target.name]
        if not host.reachable:
            raise ConnectError(target.name, f"connection refused by {target.label}")
        session = FakeSession(host, self.docker)
        self.sessions.append(session)
        return session


# --- a fake at the host-session level (issue 15 item 6) --------------------------------------
#
# fabric's MockRemote idea: passed in (deploy's `open_session`), not patched in. It answers
# what a HostSession offers (facts, identity, stage, load, stream, cleanup) from a FakeHost's
# state, with no command text at all, for any engine kind: what deploy decides and reports
# is tested without the shell; tests of the commands themselves use FakeSession above.


class FakeHostSession(HostSession):
    """A HostSession whose host is `fake` (engine `kind`); `fake.log` gets one line per call
    (`facts`, `identity`, `stage`, `load`, `stream`, ...). `refuse_delta`: the engine refuses
    a payload that leaves layers out (docker's containerd store, issue 8)."""

    VERSIONS = {"docker": "28.5.2", "podman": "5.4.2", "containerd": "2.1.4"}

    def __init__(
        self,
        fake: FakeHost,
        kind: str,
        refuse_delta: bool,
        *args: Any,
    ) -> None:
        super().__init__(*args)
        self.fake, self.kind, self.refuse_delta = fake, kind, refuse_delta

    @classmethod
    def opener(
        cls, fake: FakeHost, kind: str = "docker", refuse_delta: bool = False
    ) -> Callable[..., HostSession]:
        """deploy's `open_session` for `fake`."""
        return lambda *args: cls(fake, kind, refuse_delta, *args)

    def _call(self, name: str) -> None:
        self.fake.log.append(name)
        self.fake.remote.append(name)

    def become(self, password: Any) -> None:
        if self.host.become is not None:
            self._call("become")

    def facts(self, known: Facts | None, refs: Sequence[ImageRef], listing: bool = False) -> Look:
        self._call("facts")
        h = self.fake
        facts = known or Facts(
            self.VERSIONS[self.kind] if h.engine_up else "",
            frozenset(h.tools),
            "/var/lib/x",
            h.root_avail,
            h.tmp_avail,
            self.kind,
            "containerd" if h.containerd_store else ("classic" if self.kind == "docker" else ""),
            h.machine,
        )
        self.result.facts = facts
        if not facts.engine_ok:
            down = Result(f"{self.kind} version", 1, "", "Cannot connect to the engine")
            raise self.failure(down, "the container engine does not answer", nonzero=True)
        listed = self._listing() if listing and self.kind == "docker" else None
        return Look(facts, self._found(refs), listed)

    def identity(self, refs: Sequence[ImageRef]) -> dict[str, Inspected]:
        self._call("identity")
        return self._found(refs)

    def layer_chains(
        self, containerd_store: bool, listed: str | None = None
    ) -> tuple[set[tuple[str, ...]], frozenset[str] | None]:
        if listed is None:
            self._call("layers")
        return commands.parse_host_layers(listed or self._listing()), None

    def stage(self, payload: Any, loading: Any, verify: Sequence[ImageRef] | None) -> Any:
        self._call("stage")
        self._receive(payload)
        return None if verify is None else self._found(verify)

    def load(
        self, key: str, steps: Iterable[Any], loading: Any, verify: Sequence[ImageRef] | None
    ) -> tuple[Any, int]:
        self._call("load")
        count = 0
        for step in steps:
            count += 1
            self._receive(step, loaded=False)
        self._loaded()
        return (None if verify is None else self._found(verify)), count

    def stream(self, payload: Any, loading: Any) -> None:
        self._call("stream")
        self._receive(payload)

    def cleanup(self, tempdir: str, verify: Any = None, stand_ins: Sequence[str] = ()) -> Any:
        self._call("cleanup")
        return None if verify is None else self._found(verify)

    def _receive(self, payload: Any, loaded: bool = True) -> None:
        for chunk in self.chunks(payload):
            self.count(len(chunk))
        if loaded:
            self._loaded()

    def _loaded(self) -> None:
        h = self.fake
        if h.load_fails or (self.refuse_delta and self._partial()):
            load = Result(f"{self.kind} load", 1, "", "Error processing tar file: unexpected EOF")
            raise self.failure(load, f"{self.kind} load", load=True)
        h.images.update(h.archive_images)
        h.configs.update(h.archive_configs)

    def _partial(self) -> bool:
        return self.result.layers_sent < self.result.layers_total

    def _found(self, refs: Sequence[ImageRef]) -> dict[str, Inspected]:
        h = self.fake
        return {
            r.familiar: Inspected(h.images[r.familiar], h.layers.get(r.familiar, ()), 1000)
            for r in refs
            if r.familiar in h.images
        }

    def _listing(self) -> str:
        return "".join(json.dumps(list(self.fake.layers.get(r, ()))) + "\n" for r in self.fake.images)


class NoConnection:
    """A connection no command may use (a FakeHostSession does everything itself)."""

    def run(self, command: str, **kw: object) -> Result:
        raise AssertionError(f"a command reached the connection: {command}")

    upload = run

    def close(self) -> None:
        pass


def no_connection(fleet: FakeFleet | None = None) -> Callable[[Target], NoConnection]:
    """A connector for FakeHostSession tests (unreachable hosts of `fleet` raise as there)."""

    def connect(target: Target) -> NoConnection:
        if fleet is not None and not fleet.hosts[target.name].reachable:
            raise ConnectError(target.name, f"connection refused by {target.label}")
        return NoConnection()

    return connect
