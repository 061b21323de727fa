"""Engine tests of become (issue 6) against the fake host, behind a fake sudo: which commands go
through sudo, that the password only ever travels as stdin's first line, and the clear errors.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable

import pytest

from distrib import engines
from distrib.archive import Archive, LocalImage
from distrib.engine import CHANGED, FAILED, Job, deploy
from distrib.plan import HostPlan
from distrib.refs import ImageRef
from distrib.target import Result, Target
from tests.fakes import FakeHost, FakeSession

PASSWORD = "hunter2 with spaces"
REF = "demo/web:1.0"
IMAGE_ID = "sha256:" + "ab" * 32


class SudoSession(FakeSession):
    """The fake host behind sudo: `rule` is nopasswd | password | none (no sudo rule)."""

    def __init__(self, host: FakeHost, rule: str, log: list[tuple[str, bytes]]) -> None:
        super().__init__(host, ["docker"])
        self.rule = rule
        self.stdin_log = log
        self.streamed = b""  # a streamed load's first chunk (the password line)
        self.outer_stdin = b""  # the stdin of the command whose parts are running
        self.in_sudo = False  # running a script sudo runs (commands.in_parts parts of it)

    def run_part(self, part: str) -> Result:
        # the command's stdin (the password line) is read by its sudo: a part inside that
        # sudo or a part that is one ran with it, no other part
        with_it = self.in_sudo or part.startswith("sudo ")
        return self.run(part, stdin=self.outer_stdin if with_it else b"")

    def run(self, command: str, *, timeout: float | None = None, stdin: bytes = b"") -> Result:
        stdin, self.streamed = stdin or self.streamed, b""
        if not self.nested:
            self.outer_stdin = stdin
        self.stdin_log.append((command, stdin))
        if command.startswith("if ! command -v sudo"):
            answer = {"nopasswd": "become=nopasswd", "password": "become=sudo: a password is required",
                      "none": "become=sudo: a password is required"}[self.rule]  # fmt: skip
            return Result(command, 0, answer + "\n", "")
        if command == engines.become_validate(engines.Become()):
            if self.rule == "password" and stdin == (PASSWORD + "\n").encode():
                return Result(command, 0, "", "")
            if self.rule == "none":
                return Result(command, 1, "", "bob is not in the sudoers file.\n")
            return Result(command, 1, "", "Sorry, try again.\nsudo: 1 incorrect password attempt\n")
        if " load" in command:
            return super().run(command)
        argv = shlex.split(command)
        if argv and argv[0] == "sudo":
            assert ("-S" in argv) == (self.rule == "password"), command
            if "-S" in argv:
                assert stdin == (PASSWORD + "\n").encode(), "sudo -S without the password line"
            self.in_sudo, was = True, self.in_sudo
            try:
                return super().run(argv[-1])
            finally:
                self.in_sudo = was
        return super().run(command)

    def upload(
        self,
        command: str,
        chunks: Iterable[bytes],
        *,
        on_bytes: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> Result:
        chunks = iter(chunks)
        if command.startswith("sudo -k -S"):
            self.streamed = next(chunks)
            if on_bytes:  # the transport counts every byte it sends, this line too
                on_bytes(len(self.streamed))
        return super().upload(command, chunks, on_bytes=on_bytes, timeout=timeout)


def job(tmp_path: object, password: str | None) -> Job:
    path = f"{tmp_path}/a.tar.gz"
    data = b"archive-bytes" * 100
    with open(path, "wb") as fh:
        fh.write(data)
    import hashlib

    image = LocalImage(ImageRef.parse(REF), IMAGE_ID, ("sha256:l1",), 1000)
    archive = Archive(path, "gzip", 6, len(data), hashlib.sha256(data).hexdigest(), [image])
    secret = engines.Secret(password) if password else None
    return Job((image,), archive, True, "deploy", "gzip", become_password=secret)


def run(tmp_path: object, rule: str, password: str | None, transfer: str = "staged") -> tuple[object, list[tuple[str, bytes]], FakeHost]:  # fmt: skip
    host = FakeHost("h", archive_images={REF: IMAGE_ID})
    log: list[tuple[str, bytes]] = []
    plan = HostPlan("h", Target("h", "h.lab", user="bob"), ("docker",), "/var/tmp",
                    transfer=transfer, become=engines.Become())  # fmt: skip
    result = deploy(plan, job(tmp_path, password), lambda t: SudoSession(host, rule, log))
    return result, log, host


@pytest.mark.parametrize("transfer", ["staged", "stream"])
def test_password_goes_on_stdin_of_every_engine_command_only(tmp_path: object, transfer: str) -> None:
    result, log, host = run(tmp_path, "password", PASSWORD, transfer)
    assert result.status == CHANGED, result.message  # type: ignore[attr-defined]
    assert host.images == {REF: IMAGE_ID}
    assert all(PASSWORD not in command for command, _ in log)
    with_password = [c for c, stdin in log if stdin]
    assert any(" load" in c for c in with_password)
    for command, stdin in log:
        engine_cmd = "docker" in command
        if engine_cmd:  # every command that talks to the engine carried the password line
            assert stdin == (PASSWORD + "\n").encode(), command
        elif not command.startswith(("sudo -k -S -p '' -u root -- true",)):
            assert stdin == b"", f"password sent to a non-engine command: {command}"
    # uploads and staging stay with the SSH user: no sudo around them
    assert not [c for c, _ in log if c.startswith("umask") and "sudo" in c]
    assert result.bytes_sent == 1300  # type: ignore[attr-defined]  # archive only, not the password


def test_nopasswd_rule_never_sees_the_password(tmp_path: object) -> None:
    result, log, _ = run(tmp_path, "nopasswd", PASSWORD)
    assert result.status == CHANGED  # type: ignore[attr-defined]
    assert all(stdin == b"" for _, stdin in log)
    assert any(c.startswith("sudo -n -u root -- /bin/sh -c") for c, _ in log)


@pytest.mark.parametrize(
    ("rule", "password", "message"),
    [
        ("password", None, "asks bob for a password and none was given"),
        ("password", "wrong", "sudo rejected the password of bob"),
        ("none", "anything", "bob may not run commands as root with sudo"),
    ],
)
def test_become_errors_are_clear_and_send_nothing(
    tmp_path: object, rule: str, password: str | None, message: str
) -> None:
    result, log, host = run(tmp_path, rule, password)
    assert result.status == FAILED  # type: ignore[attr-defined]
    assert message in result.message  # type: ignore[attr-defined]
    assert result.bytes_sent == 0 and host.images == {}  # type: ignore[attr-defined]
    assert PASSWORD not in result.message  # type: ignore[attr-defined]
