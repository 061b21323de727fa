"""Engine and executor against an injected fake transport (pure; no hosts)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from distrib.archive import Archive, LocalImage
from distrib.engine import (
    CHANGED,
    CHECK,
    DIFFERENT,
    FAILED,
    MISSING,
    OK,
    PRESENT,
    SKIPPED,
    UNREACHABLE,
    VERIFY,
    Job,
    Progress,
    deploy,
)
from distrib.errors import EXIT_HOST_FAILED, EXIT_HOST_UNREACHABLE, EXIT_OK, EXIT_PLAY_ABORTED
from distrib.executor import run_plan
from distrib.plan import HostPlan, Plan, PlayPlan, batches
from distrib.playbook import Playbook
from distrib.refs import ImageRef
from distrib.transport import Target
from tests.fakes import FakeFleet, FakeHost

WEB = "sha256:" + "1" * 64
WORKER = "sha256:" + "2" * 64


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    data = b"pretend this is a gzip of docker save" * 1000
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)
    images = (
        LocalImage(ImageRef.parse("demo/web:1.0"), WEB, ("sha256:l1",), 10),
        LocalImage(ImageRef.parse("demo/worker:1.0"), WORKER, ("sha256:l2",), 10),
    )
    return Archive(str(path), "gzip", 6, len(data), hashlib.sha256(data).hexdigest(), images)


def host(name: str) -> HostPlan:
    return HostPlan(name, Target(name, f"{name}.lab"), ("docker",), "/var/tmp")


def fake(name: str, **kw: object) -> FakeHost:
    return FakeHost(name, archive_images={"demo/web:1.0": WEB, "demo/worker:1.0": WORKER}, **kw)  # type: ignore[arg-type]


def test_fresh_host_is_changed_and_verified(archive: Archive) -> None:
    h = fake("a")
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED, result.message
    assert result.images == {"demo/web:1.0": WEB, "demo/worker:1.0": WORKER}
    assert result.bytes_sent == archive.size
    assert not h.files and not h.dirs, "temp files must be removed"


def test_up_to_date_host_is_ok_and_receives_nothing(archive: Archive) -> None:
    h = fake("a", images={"demo/web:1.0": WEB, "demo/worker:1.0": WORKER})
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == OK
    assert result.bytes_sent == 0
    assert not any("cat >" in c for c in h.log)


def test_same_tag_other_content_is_replaced(archive: Archive) -> None:
    h = fake("a", images={"demo/web:1.0": "sha256:" + "9" * 64, "demo/worker:1.0": WORKER})
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED
    assert h.images["demo/web:1.0"] == WEB


def test_corrupted_copy_is_resent_once(archive: Archive) -> None:
    h = fake("a", corrupt_uploads=1)
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED
    assert result.bytes_sent == 2 * archive.size


def test_corrupted_twice_is_never_loaded(archive: Archive) -> None:
    h = fake("a", corrupt_uploads=2)
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == FAILED
    assert "checksum mismatch" in result.message
    assert not any(" load" in c for c in h.log), "a bad copy must never be loaded"
    assert not h.files and not h.dirs


def test_engine_down_is_failed_with_engine_message(archive: Archive) -> None:
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(fake("a", engine_up=False)))
    assert result.status == FAILED
    assert "container engine does not answer" in result.message
    assert "Cannot connect to the Docker daemon" in result.message


def test_load_failure_cleans_up(archive: Archive) -> None:
    h = fake("a", load_fails=True)
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == FAILED and "docker load failed" in result.message
    assert not h.files and not h.dirs


def test_verify_catches_a_load_that_did_not_land(archive: Archive) -> None:
    h = FakeHost("a", archive_images={"demo/web:1.0": WEB})
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == FAILED
    assert "demo/worker:1.0 missing" in result.message


def test_zstd_without_decoder_fails_before_sending(archive: Archive) -> None:
    zst = Archive(archive.path, "zstd", 3, archive.size, archive.sha256, archive.images)
    h = fake("a", tools=("gzip", "sha256sum"))
    result = deploy(host("a"), Job.deploy(zst), FakeFleet(h))
    assert result.status == FAILED and "zstd" in result.message
    assert result.bytes_sent == 0


def test_unreachable_host(archive: Archive) -> None:
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(fake("a", reachable=False)))
    assert result.status == UNREACHABLE
    assert "connection refused" in result.message


def _plan(names: list[str], play_yaml: str) -> Plan:
    play = Playbook.from_text(play_yaml, "p.yaml").plays[0]
    hosts = tuple(host(n) for n in names)
    return Plan((PlayPlan(play, hosts, batches(hosts, play.serial), play.forks),))


def test_one_failure_does_not_stop_others(archive: Archive) -> None:
    fleet = FakeFleet(fake("a"), fake("b", reachable=False), fake("c"))
    run = run_plan(
        _plan(["a", "b", "c"], "hosts: all\nimages: [x]\n"), {0: Job.deploy(archive)}, fleet
    )
    statuses = {r.host: r.status for r in run.plays[0].hosts}
    assert statuses == {"a": CHANGED, "b": UNREACHABLE, "c": CHANGED}
    assert run.exit_code == EXIT_HOST_UNREACHABLE


def test_exit_codes(archive: Archive) -> None:
    ok = run_plan(
        _plan(["a"], "hosts: all\nimages: [x]\n"), {0: Job.deploy(archive)}, FakeFleet(fake("a"))
    )
    assert ok.exit_code == EXIT_OK
    failed = run_plan(
        _plan(["a", "b"], "hosts: all\nimages: [x]\n"),
        {0: Job.deploy(archive)},
        FakeFleet(fake("a"), fake("b", load_fails=True)),
    )
    assert failed.exit_code == EXIT_HOST_FAILED


def test_failure_limit_stops_new_batches(archive: Archive) -> None:
    fleet = FakeFleet(fake("a", load_fails=True), fake("b"), fake("c"))
    run = run_plan(
        _plan(["a", "b", "c"], "hosts: all\nimages: [x]\nserial: 1\nmax_fail_percentage: 0\n"),
        {0: Job.deploy(archive)},
        fleet,
    )
    statuses = [r.status for r in run.plays[0].hosts]
    assert statuses == [FAILED, SKIPPED, SKIPPED]
    assert run.plays[0].aborted
    assert run.exit_code == EXIT_PLAY_ABORTED


def test_whole_batch_failing_stops_without_abort_code(archive: Archive) -> None:
    fleet = FakeFleet(fake("a", reachable=False), fake("b"))
    run = run_plan(
        _plan(["a", "b"], "hosts: all\nimages: [x]\nserial: 1\n"), {0: Job.deploy(archive)}, fleet
    )
    assert [r.status for r in run.plays[0].hosts] == [UNREACHABLE, SKIPPED]
    assert run.plays[0].stopped and not run.plays[0].aborted
    assert run.exit_code == EXIT_HOST_UNREACHABLE


def test_same_layers_under_another_image_id_is_present(archive: Archive) -> None:
    # the containerd image store names an image by its manifest digest, not the config digest
    other = "sha256:" + "7" * 64
    h = fake(
        "a",
        images={"demo/web:1.0": other, "demo/worker:1.0": WORKER},
        layers={"demo/web:1.0": ("sha256:l1",)},
    )
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == OK and result.bytes_sent == 0
    assert result.states == {"demo/web:1.0": PRESENT, "demo/worker:1.0": PRESENT}


def test_check_mode_changes_nothing(archive: Archive) -> None:
    h = fake("a", images={"demo/web:1.0": WEB})
    job = Job(archive.images, None, mode=CHECK)
    result = deploy(host("a"), job, FakeFleet(h))
    assert result.status == CHANGED
    assert "would send" in result.message and "demo/worker:1.0" in result.message
    assert result.bytes_sent == 0
    assert h.images == {"demo/web:1.0": WEB}
    assert not any(c.startswith(("umask", "mv", "rm")) or "cat >" in c for c in h.log)


def test_verify_mode_reports_drift(archive: Archive) -> None:
    h = fake(
        "a", images={"demo/web:1.0": "sha256:" + "5" * 64}, layers={"demo/web:1.0": ("sha256:zz",)}
    )
    result = deploy(host("a"), Job(archive.images, None, mode=VERIFY), FakeFleet(h))
    assert result.status == FAILED
    assert result.states == {"demo/web:1.0": DIFFERENT, "demo/worker:1.0": MISSING}
    assert "drift" in result.message
    ok = fake("b", images={"demo/web:1.0": WEB, "demo/worker:1.0": WORKER})
    assert deploy(host("b"), Job(archive.images, None, mode=VERIFY), FakeFleet(ok)).status == OK


def test_cut_off_upload_resumes_from_checked_prefix(archive: Archive) -> None:
    h = fake("a", cut_after=archive.size // 2)
    first = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert first.status == UNREACHABLE and "cut off" in first.message
    kept = [f for f in h.files if f.endswith(".part")]
    assert kept and len(h.files[kept[0]]) == archive.size // 2, "partial kept for resume"
    h.reachable, h.cut_after = True, None
    second = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert second.status == CHANGED, second.message
    assert second.resumed_from == archive.size // 2
    assert second.bytes_sent == archive.size - archive.size // 2
    assert not h.files and not h.dirs


def test_partial_with_wrong_prefix_starts_over(archive: Archive) -> None:
    h = fake("a", cut_after=1000)
    deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    part = next(f for f in h.files if f.endswith(".part"))
    h.files[part] = b"X" * 1000  # not a prefix of our archive
    h.reachable, h.cut_after = True, None
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED and result.resumed_from == 0
    assert result.bytes_sent == archive.size


def test_small_staging_area_streams_into_load(archive: Archive) -> None:
    h = fake("a", tmp_avail=archive.size // 2)
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED and "streamed" in result.message
    assert not any("cat >" in c for c in h.log), "no temp file in stream mode"
    assert not h.files and not h.dirs


def test_staged_forced_with_small_staging_area_fails_before_sending(archive: Archive) -> None:
    h = fake("a", tmp_avail=10)
    plan = HostPlan("a", Target("a", "a.lab"), ("docker",), "/var/tmp", transfer="staged")
    result = deploy(plan, Job.deploy(archive), FakeFleet(h))
    assert result.status == FAILED and "not enough space in /var/tmp" in result.message
    assert result.bytes_sent == 0


def test_full_data_root_fails_before_sending(archive: Archive) -> None:
    h = fake("a", root_avail=5)
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == FAILED and "data root" in result.message
    assert result.bytes_sent == 0 and not any("cat >" in c for c in h.log)


def test_cancel_during_upload_cleans_up(archive: Archive) -> None:
    import threading

    cancel = threading.Event()

    class CancelOnFirstChunk(Progress):
        def advance(self, host: str, nbytes: int) -> None:
            cancel.set()

    h = fake("a")
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h), CancelOnFirstChunk(), cancel)
    assert result.status == FAILED and "interrupted" in result.message
    assert not h.files and not h.dirs
    assert not any(" load" in c for c in h.log)
