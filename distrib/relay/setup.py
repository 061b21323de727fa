"""A relay run's setup and sweep (issue 9): each tree host's private staging dir, the run's key
and the children's known_hosts lines on relaying hosts, the authorized_keys entry of every fed
host (restricted to its parent's address and to the receiving command); and, whatever
happened, the sweep that drops every entry of the run, stops leftover pipelines and removes the
staging dir. All of it runs as the SSH user (who owns the staging dir and authorized_keys),
never under become: only the load and the verify talk to the engine (stream.py).
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

from distrib import commands
from distrib.engine import CLEANUP_TIMEOUT, PROBE_TIMEOUT
from distrib.errors import ConnectError, DistribError, HostError
from distrib.relay.member import BROKEN, KEY_HOURS, _Base, _Member, _ok
from distrib.target import Session


class _Setup(_Base):
    def _revoke_when_cancelled(self, over: threading.Event) -> None:
        """On SIGINT/SIGTERM, before anything else: every tree host drops the run's
        authorized_keys entries at once, over the session holding its host lock (no connect
        to wait for), while the hosts' own steps still wind down; the final sweep does it
        again. The 30 s grace of an interrupted run is then spent on the rest (issue 19)."""
        while not over.is_set():
            if self.cancel.wait(0.2):
                break
        if over.is_set() or not self.members:
            return

        def revoke(m: _Member) -> None:
            held = self.locks.get(m.name)
            session = held[0] if held is not None else m.session
            with contextlib.suppress(Exception):  # every host is tried; the sweep follows
                session.run(commands.relay_unauthorize(self.run_id), timeout=CLEANUP_TIMEOUT)

        with ThreadPoolExecutor(max_workers=len(self.members), thread_name_prefix="revoke") as pool:
            list(pool.map(revoke, list(self.members.values())))

    def _child_argv(self, parent: _Member, child: _Member) -> list[str]:
        t = child.host.target
        return commands.relay_ssh(
            t.address,
            t.port,
            child.relay.user,
            f"{parent.directory}/{commands.RELAY_KEY}",
            f"{parent.directory}/{commands.RELAY_KNOWN_HOSTS}",
            t.connect_timeout,
        )

    def _receive_command(self, m: _Member) -> str:
        kids = [self._child_argv(m, self.members[c]) for c in m.children]
        return commands.relay_receive(m.directory, m.part, kids)

    def _setup(self, m: _Member) -> bool:
        """Staging dir, relay files and the authorized_keys entry of one host; False (and a
        failed result) when it cannot be set up: its children then re-parent."""
        try:
            self.progress.phase(m.name, "relay setup")
            s = m.session
            assert self.payload is not None
            out = self._run(
                m,
                commands.make_staging(m.host.remote_tmp, self.payload.key, m.part),
                "creating the private staging dir",
            )
            try:
                commands.parse_staging(out.stdout)
            except commands.UnsafeTmp as exc:
                raise HostError(
                    m.name,
                    f"remote_tmp {m.host.remote_tmp} is not safe to stage archives in: "
                    f"{exc.problem}; nothing was sent",
                ) from None
            self._run(m, commands.relay_reset(m.directory, m.part), "resetting the staging dir")
            if m.children:
                self._install_key(m, s)
            if m.parent is not None:
                parent = self.members[m.parent]
                self._run(
                    m,
                    commands.relay_authorize(
                        commands.relay_options(parent.relay.address, self._receive_command(m)),
                        self.public_key,
                        self.run_id,
                        KEY_HOURS,
                    ),
                    "authorizing the parent's key",
                )
            return True
        except DistribError as exc:
            self._fail(m.result, exc)
            self._set_state(m, BROKEN)
            return False

    def _install_key(self, m: _Member, session: Session) -> None:
        """The run's private key and the known_hosts lines of every tree host of its group,
        into the host's private staging dir (0600), over stdin."""
        with self.cond:
            if m.has_key:
                return
        lines = [
            line
            for other in self.members.values()
            if other.host_group == m.host_group and other is not m
            for line in other.known
        ]
        for name, data in (
            (commands.RELAY_KEY, self.private_key),
            (commands.RELAY_KNOWN_HOSTS, "".join(f"{x}\n" for x in lines).encode()),
        ):
            if not data:
                raise HostError(m.name, "the run's key is gone (interrupted)")
            sent = session.upload(
                commands.relay_install(m.directory, name), [data], timeout=PROBE_TIMEOUT
            )
            _ok(m.name, sent, f"installing {name}")
        with self.cond:
            m.has_key = True

    # -- the final sweep -----------------------------------------------------------------------

    def _sweep(self, m: _Member) -> None:
        """Drop every authorized_keys entry of the run first (issue 19: what matters most if
        the grace of an interrupted run runs out), stop any pipeline left, remove the staging
        dir (archive, key, known_hosts), whatever happened: over the session holding the
        host lock (no connect to wait for), else (or when that link is gone) a fresh one."""
        held = self.locks.get(m.name)
        if held is not None:
            try:
                self._sweep_over(m, held[0])
                return
            except ConnectError:
                pass  # that link is gone: a fresh one
            except DistribError as exc:
                m.result.message += f" (relay cleanup failed: {exc.message})"
                return
        try:
            session = self.connect(m.host.target)
        except DistribError as exc:
            m.result.message += f" (relay cleanup impossible: {exc.message})"
            return
        try:
            self._sweep_over(m, session)
        except DistribError as exc:
            m.result.message += f" (relay cleanup failed: {exc.message})"
        finally:
            session.close()

    def _sweep_over(self, m: _Member, session: Session) -> None:
        for command in (
            commands.relay_unauthorize(self.run_id),
            commands.relay_stop(m.directory),
            commands.cleanup(m.directory),
        ):
            out = session.run(command, timeout=CLEANUP_TIMEOUT)
            if not out.ok:
                m.result.message += f" (relay cleanup: {out.stderr.strip()[-200:]})"
