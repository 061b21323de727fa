"""Deploy over a fake at the host-session level (issue 15 item 6: tests/fakes.FakeHostSession,
passed in as deploy's `open_session`), and the host frame's outcomes. No command text: what
deploy decides, sends and reports, on every engine kind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from distrib import engines
from distrib.archive import Archive
from distrib.engine import CHANGED, CHECK, FAILED, OK, UNREACHABLE, VERIFY, Job, deploy
from distrib.errors import ConnectError, HostError
from distrib.hostframe import host_frame
from distrib.hostsession import HostSession
from distrib.layerstore import LayerStore
from distrib.outcome import HostResult, Progress
from distrib.plan import HostPlan
from distrib.target import Target
from tests.fakes import FakeFleet, FakeHost, FakeHostSession, no_connection
from tests.test_engine import WEB, WORKER, archive, fake, host  # noqa: F401 (a fixture)
from tests.test_layerstore import docker_saving, fake_save, layer  # noqa: F401 (a fixture)

HELD = {"demo/web:1.0": WEB, "demo/worker:1.0": WORKER}


def plan(kind: str = "docker", become: bool = False) -> HostPlan:
    argv = ("ctr",) if kind == "containerd" else (kind,)
    sudo = engines.Become() if become else None
    return HostPlan("a", Target("a", "a.lab"), argv, "/var/tmp", engine=kind, become=sudo)


@pytest.mark.parametrize("kind", ["docker", "podman", "containerd"])
@pytest.mark.parametrize("become", [False, True])
def test_every_engine_deploys_the_same_way(archive: Archive, kind: str, become: bool) -> None:  # noqa: F811
    h = fake("a")
    opener = FakeHostSession.opener(h, kind)
    result = deploy(plan(kind, become), Job.deploy(archive), no_connection(), open_session=opener)
    assert result.status == CHANGED, result.message
    assert result.message == "loaded and verified 2 image(s)"
    assert result.bytes_sent == archive.size and result.facts is not None
    assert h.log == [*(["become"] if become else []), "facts", "stage"]  # verify: with cleanup
    h.log.clear()
    again = deploy(plan(kind, become), Job.deploy(archive), no_connection(), open_session=opener)
    assert again.status == OK and again.message == "all images already present"
    assert h.log == [*(["become"] if become else []), "facts"]


def test_check_and_verify_send_nothing(archive: Archive) -> None:  # noqa: F811
    h = fake("a", images={"demo/web:1.0": WEB})
    opener = FakeHostSession.opener(h)
    checked = deploy(host("a"), Job(archive.images, archive, mode=CHECK), no_connection(),
                     open_session=opener)  # fmt: skip
    assert checked.status == CHANGED and "(staged transfer, check mode)" in checked.message
    verified = deploy(host("a"), Job(archive.images, mode=VERIFY), no_connection(),
                      open_session=opener)  # fmt: skip
    assert verified.status == FAILED and verified.message == "drift: demo/worker:1.0 missing"
    assert h.log == ["facts", "facts"] and h.images == {"demo/web:1.0": WEB}


def test_a_small_staging_area_streams(archive: Archive) -> None:  # noqa: F811
    h = fake("a", tmp_avail=10)
    result = deploy(host("a"), Job.deploy(archive), no_connection(),
                    open_session=FakeHostSession.opener(h))  # fmt: skip
    assert result.status == CHANGED and result.message.endswith(
        " (streamed: staging space too small)"
    )
    assert h.log == ["facts", "stream", "identity"]  # a stream has no cleanup: verify apart


@pytest.mark.parametrize(
    ("hostkw", "words"),
    [
        ({"engine_up": False}, "the container engine does not answer"),
        ({"root_avail": 10}, "not enough space in the engine's data root"),
        ({"load_fails": True}, "docker load"),
    ],
)
def test_refusals_and_failures(archive: Archive, hostkw: dict[str, object], words: str) -> None:  # noqa: F811
    h = fake("a", **hostkw)
    result = deploy(host("a"), Job.deploy(archive), no_connection(),
                    open_session=FakeHostSession.opener(h))  # fmt: skip
    assert result.status == FAILED and words in result.message
    assert not h.images


def test_a_refused_delta_sends_the_full_archive(
    tmp_path: Path,
    docker_saving: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine refuses a payload that leaves layers out (docker's containerd store):
    the same store assembles the full archive, sent at once (decide.after_refused_delta)."""
    layers = [layer(5000, "base"), layer(3000, "lib"), layer(700, "app")]
    image, save = fake_save(tmp_path, layers)
    monkeypatch.setenv("FAKE_SAVE", str(save))
    store = LayerStore(str(tmp_path / "cache"))
    store.ensure([image])
    h = FakeHost(
        "a",
        images={"demo/base:1": "sha256:" + "b" * 64},
        layers={"demo/base:1": image.diff_ids[:1]},
        archive_images={str(image.ref.familiar): image.id},
    )
    opener = FakeHostSession.opener(h, refuse_delta=True)
    result = deploy(host("a"), Job((image,), None, store=store), no_connection(),
                    open_session=opener)  # fmt: skip
    assert result.status == CHANGED, result.message
    assert "(3/3 layers sent; delta refused by the engine, full archive sent)" in result.message
    assert h.log == ["facts", "stage", "stage"]


# --- the host frame ---------------------------------------------------------------------------


class Finished(Progress):
    def __init__(self) -> None:
        self.results: list[HostResult] = []

    def finished(self, result: HostResult) -> None:
        self.results.append(result)


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (None, "skipped", ""),
        (ConnectError("a", "connection lost"), UNREACHABLE, "connection lost"),
        (HostError("a", "no room"), FAILED, "no room"),
        (KeyError("x"), FAILED, "unexpected error: KeyError: 'x'"),
    ],
)
def test_the_host_frame_makes_every_error_an_outcome(
    error: Exception | None, status: str, words: str
) -> None:
    seen: list[HostSession] = []

    def body(hs: HostSession) -> None:
        seen.append(hs)
        if error is not None:
            raise error

    progress = Finished()
    result = host_frame(host("a"), no_connection(), body, progress)
    assert result.status == status and words in result.message
    assert progress.results == [result] and len(seen) == 1 and seen[0].result is result
    assert {"connect", "total"} <= set(result.timings)


def test_the_host_frame_reports_unreachable_and_cancelled_hosts() -> None:
    down = FakeHost("a", reachable=False)
    progress = Finished()
    result = host_frame(host("a"), no_connection(FakeFleet(down)), lambda hs: None, progress)
    assert result.status == UNREACHABLE and "connection refused" in result.message
    cancel = threading.Event()
    cancel.set()
    quiet = Finished()
    stopped = host_frame(host("a"), no_connection(), lambda hs: None, quiet, cancel, finish=False)
    assert stopped.status == FAILED and stopped.message == "interrupted"
    assert quiet.results == []  # finish=False: the caller reports the host's end
