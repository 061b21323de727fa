"""Remote commands per host (issue 16 item 2, issue 15 item 7), counted on the fake tier: a
host that holds everything costs ONE command after connecting (probe + identity), verify
one, a rollout at most five (probe + identity [+ layer listing], staging, upload, checked
load, cleanup + verify), on docker (whole archive and delta), podman and containerd."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from distrib import commands, engines
from distrib.archive import Archive, LocalImage
from distrib.engine import CHANGED, OK, VERIFY, Job, KeptSessions, deploy, probe_facts
from distrib.layerstore import LayerStore
from distrib.plan import HostPlan
from distrib.refs import ImageRef
from distrib.target import Result, Target
from tests.fakes import FakeFleet, FakeHost, FakeSession, remote_commands
from tests.test_engine import WEB, WORKER, fake, host
from tests.test_layerstore import docker_saving, fake_save, layer  # noqa: F401 (a fixture)

REFS = ("demo/web:1.0", "demo/worker:1.0")
ROLLOUT_MAX = 5


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    data = b"pretend this is a gzip of docker save" * 1000
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)
    images = (
        LocalImage(ImageRef.parse(REFS[0]), WEB, ("sha256:l1",), 10),
        LocalImage(ImageRef.parse(REFS[1]), WORKER, ("sha256:l2",), 10),
    )
    return Archive(str(path), "gzip", 6, len(data), hashlib.sha256(data).hexdigest(), images)


def test_a_host_that_holds_everything_costs_one_command(archive: Archive) -> None:
    h = fake("a", images={REFS[0]: WEB, REFS[1]: WORKER})
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == OK and result.message == "all images already present"
    assert result.facts is not None and result.facts.engine_version == "20.10.24"
    (command,) = remote_commands(h)
    assert command.count(commands.PART_MARK) == 1  # the probe and the identity


def test_a_probed_host_costs_one_command_too(archive: Archive) -> None:
    """Facts from the run's probing pass (`compression: auto`): the identity alone."""
    facts = commands.parse_probe("engine_version=28.5.2\nhas_gzip=1\n")
    h = fake("a", images={REFS[0]: WEB, REFS[1]: WORKER})
    job = Job.deploy(archive, facts={"a": facts})
    assert deploy(host("a"), job, FakeFleet(h)).status == OK
    (command,) = remote_commands(h)
    assert commands.PART_MARK not in command and " image inspect " in command


def test_verify_costs_one_command(archive: Archive) -> None:
    h = fake("a", images={REFS[0]: WEB})
    job = Job(archive.images, mode=VERIFY)
    result = deploy(host("a"), job, FakeFleet(h))
    assert result.message == "drift: demo/worker:1.0 missing"
    assert len(remote_commands(h)) == 1


def test_a_docker_rollout_of_a_whole_archive_costs_at_most_five(archive: Archive) -> None:
    h = fake("a")
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED and result.message == "loaded and verified 2 image(s)"
    sent = remote_commands(h)
    assert len(sent) <= ROLLOUT_MAX, sent
    assert sent[0].count(commands.PART_MARK) == 1  # probe + identity
    assert sent[-1].startswith("{ rm -rf -- ") and " image inspect " in sent[-1]  # + verify
    assert result.states == {REFS[0]: "present", REFS[1]: "present"}
    assert "verify" in result.timings and not h.files and not h.dirs


def test_a_failed_load_is_cleaned_up_and_never_verified(archive: Archive) -> None:
    h = fake("a", load_fails=True)
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.failed and "load" in result.message
    assert remote_commands(h)[-1].startswith("rm -rf -- ")  # the cleanup alone
    assert not h.files and not h.dirs


def test_a_docker_delta_rollout_costs_at_most_five(
    tmp_path: Path,
    docker_saving: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layers = [layer(5000, "base"), layer(3000, "lib"), layer(700, "app")]
    image, save = fake_save(tmp_path, layers)
    monkeypatch.setenv("FAKE_SAVE", str(save))
    store = LayerStore(str(tmp_path / "cache"))
    store.ensure([image])
    # the host holds another image on the same base layer: only two layers are sent
    h = FakeHost(
        "a",
        images={"demo/base:1": "sha256:" + "b" * 64},
        layers={"demo/base:1": image.diff_ids[:1]},
        archive_images={str(image.ref.familiar): image.id},
    )
    result = deploy(host("a"), Job((image,), None, store=store), FakeFleet(h))
    assert result.status == CHANGED, result.message
    assert "(2/3 layers sent)" in result.message
    sent = remote_commands(h)
    assert len(sent) <= ROLLOUT_MAX, sent
    assert sent[0].count(commands.PART_MARK) == 2  # probe + identity + layer listing
    assert not h.files and not h.dirs


# --- podman and containerd: the fake host behind those engines' commands --------------------


def probe_answer(kind: str, version: str) -> str:
    return (
        f"engine={kind}\nengine_version={version}\ndocker_root=/var/lib/x\n"
        "root_avail_kb=100000000\ntmp_avail_kb=100000000\nhas_gzip=1\nhas_sha256sum=1\n"
        "arch=x86_64\n"
    )


class EngineSession(FakeSession):
    """The fake host as podman or containerd answer: their probe, containerd's identity
    script (`ctr images ls`, the manifests), the rest as the docker fake does."""

    def __init__(self, host: FakeHost, kind: str) -> None:
        super().__init__(host, [kind])
        self.kind = kind

    def run(self, command: str, *, timeout: float | None = None) -> Result:
        if command.startswith("printf 'engine=%s\\n' "):
            if not self.nested:
                self.host.remote.append(command)
            version = "5.4.2" if self.kind == "podman" else "2.1.4"
            return Result(command, 0, probe_answer(self.kind, version), "")
        if command.startswith("if ! l=$(ctr "):
            if not self.nested:
                self.host.remote.append(command)
            return Result(command, 0, self.ctr_identity(), "")
        return super().run(command, timeout=timeout)

    def ctr_identity(self) -> str:
        lines = ["REF TYPE DIGEST SIZE PLATFORMS LABELS"]
        blobs = []
        for name, config in self.host.images.items():
            manifest = json.dumps({"config": {"digest": config}, "layers": []}).encode()
            digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
            media = "application/vnd.oci.image.manifest.v1+json"
            lines.append(f"{name} {media} {digest} 1MiB linux/amd64 -")
            blobs.append(f"{digest}\t{base64.b64encode(manifest).decode()}")
        return "\n".join([*lines, engines.BLOBS_MARK, *blobs]) + "\n"


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("podman", ("localhost/demo/web:1.0", "localhost/demo/worker:1.0")),
        ("containerd", ("docker.io/demo/web:1.0", "docker.io/demo/worker:1.0")),
    ],
)
def test_podman_and_containerd_cost_one_command_or_at_most_five(
    archive: Archive, kind: str, names: tuple[str, str]
) -> None:
    argv = ("ctr",) if kind == "containerd" else (kind,)
    plan = HostPlan("a", Target("a", "a.lab"), argv, "/var/tmp", engine=kind)
    held = dict(zip(names, (WEB, WORKER)))
    h = FakeHost("a", archive_images=held)
    fleet = FakeFleet(h)

    def connect(target: Target) -> FakeSession:
        fleet(target)  # reachable?
        return EngineSession(h, kind)

    result = deploy(plan, Job.deploy(archive), connect)
    assert result.status == CHANGED, result.message
    assert result.facts is not None and result.facts.engine == kind
    assert result.states == {REFS[0]: "present", REFS[1]: "present"}
    assert len(remote_commands(h)) <= ROLLOUT_MAX, remote_commands(h)
    h.remote.clear()
    again = deploy(plan, Job.deploy(archive), connect)
    assert again.status == OK, again.message
    assert len(remote_commands(h)) == 1


# --- one connection per host per run (issue 16 item 3) ----------------------------------------


def test_the_probing_pass_session_is_reused_by_the_deploy(archive: Archive) -> None:
    h = fake("a", images={REFS[0]: WEB, REFS[1]: WORKER})
    fleet = FakeFleet(h)
    kept = KeptSessions()
    facts = probe_facts(host("a"), fleet, kept)
    assert facts is not None and facts.engine_ok
    assert len(fleet.sessions) == 1 and not fleet.sessions[0].closed, "kept open"
    result = deploy(host("a"), Job.deploy(archive, facts={"a": facts}), kept.connector(fleet))
    assert result.status == OK
    assert len(fleet.sessions) == 1, "one connection for the probe and the deploy"
    assert len(remote_commands(h)) == 2  # the probing pass's probe, then the identity
    assert fleet.sessions[0].closed  # closed by the deploy, as any session
    kept.close()  # nothing left: a no-op


def test_a_kept_session_is_handed_out_once_and_a_dead_one_replaced(archive: Archive) -> None:
    h = fake("a")
    fleet = FakeFleet(h)
    kept = KeptSessions()
    assert probe_facts(host("a"), fleet, kept) is not None
    first = fleet.sessions[0]
    first.alive = lambda: False  # type: ignore[attr-defined]  # the link died while it waited
    connect = kept.connector(fleet)
    assert connect(host("a").target) is not first and first.closed
    assert len(fleet.sessions) == 2
    connect(host("a").target)
    assert len(fleet.sessions) == 3, "handed out once: then a new connection"


def test_unused_kept_sessions_are_closed_and_unreachable_hosts_not_kept() -> None:
    up, down = fake("up"), fake("down", engine_up=False)
    fleet = FakeFleet(up, down)
    kept = KeptSessions()
    assert probe_facts(host("up"), fleet, kept) is not None
    assert probe_facts(host("down"), fleet, kept) is None  # its engine does not answer
    assert [s.closed for s in fleet.sessions] == [False, True]
    kept.close()
    assert all(s.closed for s in fleet.sessions)
