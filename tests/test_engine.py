"""Engine and executor against an injected fake transport (pure; no hosts)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from distrib import commands
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
from distrib.target import Result, Target
from tests.fakes import FakeFleet, FakeHost, FakeSession, loads

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
    assert not loads(h.log), "a bad copy must never be loaded"
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


def test_same_layers_under_another_config_is_different_and_shipped(archive: Archive) -> None:
    # issue 14: a CMD/ENV/LABEL change adds no layer; equal diffIDs are not the same image
    other = "sha256:" + "7" * 64
    h = fake(
        "a",
        images={"demo/web:1.0": other, "demo/worker:1.0": WORKER},
        layers={"demo/web:1.0": ("sha256:l1",), "demo/worker:1.0": ("sha256:l2",)},
    )
    checked = deploy(host("a"), Job(archive.images, None, mode=VERIFY), FakeFleet(h))
    assert checked.status == FAILED
    assert checked.states == {"demo/web:1.0": DIFFERENT, "demo/worker:1.0": PRESENT}
    assert checked.message == "drift: demo/web:1.0 different config"
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED and result.bytes_sent == archive.size, result.message
    assert h.images["demo/web:1.0"] == WEB
    assert result.states == {"demo/web:1.0": PRESENT, "demo/worker:1.0": PRESENT}


CREATED = "2026-12-02T04:23:43.370764779Z"
WEB_MANIFEST = "sha256:" + "e" * 64  # the containerd store's `.Id`
RUNS = {"Cmd": ["/bin/busybox", "true"], "Env": ["PATH=/bin"]}


def built(ref: str, config_digest: str, diff_ids: tuple[str, ...], runtime: object) -> LocalImage:
    """A workstation image whose fingerprint comes from its config blob (archive.py's path)."""
    blob = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }
    fingerprint = commands.config_fingerprint_of(json.dumps(blob).encode())
    return LocalImage(ImageRef.parse(ref), config_digest, diff_ids, 10, fingerprint, config_digest)


@pytest.mark.parametrize(
    ("host_runtime", "state"),
    [
        (RUNS, PRESENT),  # no config digest shown: the fingerprint decides
        ({**RUNS, "Cmd": ["/bin/busybox", "false"]}, DIFFERENT),  # another CMD, same layers
        ({**RUNS, "Labels": {"v": "2"}}, DIFFERENT),
        ({**RUNS, "User": "nobody"}, DIFFERENT),
    ],
)
def test_containerd_store_host_is_judged_by_the_config_fingerprint(
    archive: Archive, host_runtime: dict[str, object], state: str
) -> None:
    web = built("demo/web:1.0", WEB, ("sha256:l1",), RUNS)
    h = fake(
        "a",
        images={"demo/web:1.0": WEB_MANIFEST},
        layers={"demo/web:1.0": ("sha256:l1",)},
        configs={"demo/web:1.0": host_runtime},
        containerd_store=True,
        created=CREATED,
    )
    result = deploy(host("a"), Job((web,), None, mode=VERIFY), FakeFleet(h))
    assert result.states == {"demo/web:1.0": state}
    assert result.status == (OK if state == PRESENT else FAILED)
    assert result.facts is not None and result.facts.store == "containerd"


def test_containerd_store_drift_is_shipped_then_verified(archive: Archive) -> None:
    web = built("demo/web:1.0", WEB, ("sha256:l1",), RUNS)
    worker = built("demo/worker:1.0", WORKER, ("sha256:l2",), RUNS)
    images = (web, worker)
    drifted = Archive(archive.path, "gzip", 6, archive.size, archive.sha256, images)
    h = fake(
        "a",
        images={"demo/web:1.0": WEB_MANIFEST, "demo/worker:1.0": "sha256:" + "d" * 64},
        layers={"demo/web:1.0": ("sha256:l1",), "demo/worker:1.0": ("sha256:l2",)},
        configs={
            "demo/web:1.0": {**RUNS, "Cmd": ["/bin/busybox", "false"]},
            "demo/worker:1.0": RUNS,
        },
        containerd_store=True,
        created=CREATED,
        archive_configs={"demo/web:1.0": RUNS},  # what loading our archive leaves there
    )
    h.archive_images = {"demo/web:1.0": "sha256:" + "f" * 64}  # its new manifest digest
    h.archive_images["demo/worker:1.0"] = h.images["demo/worker:1.0"]
    plan = _plan(["a"], "hosts: all\nimages: [x]\n")
    verify = run_plan(plan, {0: Job(images, None, mode=VERIFY)}, FakeFleet(h))
    assert verify.exit_code == EXIT_HOST_FAILED == 2
    assert verify.plays[0].hosts[0].message == "drift: demo/web:1.0 different config"
    shipped = run_plan(plan, {0: Job.deploy(drifted)}, FakeFleet(h))
    result = shipped.plays[0].hosts[0]
    assert result.status == CHANGED and result.bytes_sent == archive.size, result.message
    assert result.states == {"demo/web:1.0": PRESENT, "demo/worker:1.0": PRESENT}
    again = run_plan(plan, {0: Job(images, None, mode=VERIFY)}, FakeFleet(h))
    assert again.exit_code == EXIT_OK


def test_engine_that_cannot_inspect_is_an_error_not_missing(archive: Archive) -> None:
    class Broken(FakeFleet):
        def __call__(self, target: Target) -> FakeSession:
            session = super().__call__(target)
            real = session.run

            def run(command: str, *, timeout: float | None = None) -> Result:
                if command.startswith("printf '%s\\t' "):  # the identity (a part)
                    ref = "demo/web:1.0"
                    return Result(command, 0, f"{ref}\t\n{ref}\t!permission denied\n", "")
                return real(command, timeout=timeout)

            session.run = run  # type: ignore[method-assign]
            return session

    result = deploy(host("a"), Job.deploy(archive), Broken(fake("a")))
    assert result.status == FAILED and result.bytes_sent == 0
    assert "cannot inspect demo/web:1.0: permission denied" in result.message


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
    assert not loads(h.log)


@pytest.mark.parametrize(
    ("owner", "mode", "why"),
    [(0, 0o777, "group and others may write to it and it is not sticky (mode 0777)"),
     (1001, 0o700, "it belongs to uid 1001, not to this user (uid 0) or root")],
)  # fmt: skip
def test_an_unsafe_remote_tmp_is_refused_before_uploading(
    archive: Archive, owner: int, mode: int, why: str
) -> None:
    """Issue 19: whoever may rename entries in remote_tmp may swap the staged archive."""
    h = fake("a", tmp_owner=owner, tmp_mode=mode)
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == FAILED
    assert result.message == (
        f"remote_tmp /var/tmp is not safe to stage archives in: {why}; nothing was sent"
    )
    assert not any(c.startswith("umask 077 && cat") for c in h.log), "nothing uploaded"
    assert not h.dirs and not h.files and not loads(h.log)


def test_checksum_rename_and_load_are_one_remote_command(archive: Archive) -> None:
    h = fake("a")
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED, result.message
    (checked,) = [c for c in h.log if c.startswith("s=$(sha256sum -- ")]
    assert " mv -f -- " in checked and " load -i " in checked
    assert not any(c.startswith(("sha256sum", "mv ")) for c in h.log), "no separate steps"
