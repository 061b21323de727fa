"""The lab's engine matrix (issue 14): the catalogue and its parsers (pure), and one mixed lab
of real engines on lab instance 7 ($DISTRIB_LAB_ENGINES_INSTANCE), never the suite's own lab."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distrib import local
from distrib.errors import LabError
from distrib.lab import config, core, engines, fetch, images, procs, remotes, teardown, testing
from distrib.lab.state import LabState, lab_dir, load_state

# ---------------------------------------------------------------------------------- catalogue

BOOKWORM = {
    "docker": "20.10.24+dfsg1-1+deb12u1+b6",
    "podman": "4.3.1+ds1-8+deb12u1+b3",
    "containerd": "1.6.20~ds1-1+deb12u3",
}
TRIXIE = {
    "docker": "26.1.5+dfsg1-9+deb13u1+b1",
    "podman": "5.4.2+ds1-2+b2",
    "containerd": "1.7.24~ds1-6+deb13u1",
}


def test_catalogue_names_and_kinds() -> None:
    assert engines.NAMES == (
        "docker", "podman", "containerd", "docker-20.10", "docker-26", "docker-28",
        "docker-28-containerd", "podman-4", "podman-5", "containerd-1.6", "containerd-2",
    )  # fmt: skip
    for entry in engines.CATALOGUE:
        assert entry.kind in engines.KINDS
        assert entry.name.startswith(entry.kind)
        assert entry.main_package in entry.packages
    assert engines.spec("docker-28-containerd").containerd_store
    assert not engines.spec("docker-28").containerd_store
    assert engines.spec("podman-5").loader
    with pytest.raises(LabError, match="unknown engine"):
        engines.spec("docker-99")


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        (None, 2, ["docker", "docker"]),
        ("docker-28", 3, ["docker-28"] * 3),
        ("docker-20.10, docker-28-containerd,podman-5", 4,
         ["docker-20.10", "docker-28-containerd", "podman-5", "podman-5"]),
        ("docker,podman,containerd", 3, ["docker", "podman", "containerd"]),
    ],
)  # fmt: skip
def test_parse_engines(text: str | None, n: int, expected: list[str]) -> None:
    assert engines.parse_engines(text, n) == expected


@pytest.mark.parametrize(("text", "match"), [("docker-27", "unknown engine"), ("a,b", "unknown")])
def test_parse_engines_rejects(text: str, match: str) -> None:
    with pytest.raises(LabError, match=match):
        engines.parse_engines(text, 3)
    with pytest.raises(LabError, match="--hosts is 1"):
        engines.parse_engines("docker,podman", 1)


@pytest.mark.parametrize(
    ("debian", "upstream"),
    [
        ("20.10.24+dfsg1-1+deb12u1+b6", "20.10.24"),
        ("1:4.17.4-2", "4.17.4"),
        ("1.6.20~ds1-1+deb12u3", "1.6.20"),
        ("28.5.2+dfsg4-5", "28.5.2"),
        ("2.1.9+ds1-5", "2.1.9"),
    ],
)
def test_upstream_version(debian: str, upstream: str) -> None:
    assert engines.upstream_version(debian) == upstream


@pytest.mark.parametrize(
    ("major", "version", "ok"),
    [
        ("20.10", "20.10.24+dfsg1-1", True),
        ("2", "2.1.9+ds1-5", True),
        ("2", "20.10.24", False),  # whole components: 2 is not 20
        ("1.6", "1.6.20~ds1", True),
        ("1.6", "1.7.24~ds1", False),
        ("", "anything", True),
    ],
)
def test_version_matches(major: str, version: str, ok: bool) -> None:
    assert engines.version_matches(major, version) is ok


@pytest.mark.parametrize(
    ("name", "system", "suite", "fetched", "source", "reason"),
    [
        ("docker", BOOKWORM, "bookworm", None, "system", ""),
        ("docker-20.10", BOOKWORM, "bookworm", None, "system", ""),
        ("docker-28", BOOKWORM, "bookworm", None, "", "engines fetch docker-28"),
        ("docker-28", BOOKWORM, "bookworm", "28.5.2+dfsg4-5", "cache", ""),
        ("podman-5", BOOKWORM, "bookworm", "5.4.2+ds1-2+b2", "cache", ""),
        ("containerd-1.6", BOOKWORM, "bookworm", None, "system", ""),
        # Debian 13: docker-26 is the system's; 20.10 cannot be had
        ("docker-26", TRIXIE, "trixie", None, "system", ""),
        ("docker-20.10", TRIXIE, "trixie", None, "", "this machine's docker.io is 26.1.5"),
        ("podman-5", TRIXIE, "trixie", None, "system", ""),
        ("podman-4", TRIXIE, "trixie", None, "", "older releases"),
        ("containerd-2", TRIXIE, "trixie", "2.1.9+ds1-5", "cache", ""),
        ("docker", {**BOOKWORM, "docker": None}, "bookworm", None, "", "not installed"),
    ],
)
def test_resolve(
    name: str,
    system: dict[str, str | None],
    suite: str,
    fetched: str | None,
    source: str,
    reason: str,
) -> None:
    res = engines.resolve(name, system, suite, fetched)
    assert res.source == source
    assert reason in res.reason
    assert res.available is bool(source)
    if source == "system":
        assert res.version == system[res.spec.kind]


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main
"""


def test_debian_archive_uris_from_deb822_and_one_line() -> None:
    assert engines.debian_archive_uris({"d.sources": DEB822}, {}) == [
        "http://mirror.example/debian"
    ]
    one_line = """\
# comment
deb [arch=amd64 signed-by=/k.gpg] http://other.example/debian/ bookworm main contrib
deb http://other.example/debian-security bookworm-security main
deb-src http://other.example/debian bookworm main
"""
    assert engines.debian_archive_uris({}, {"sources.list": one_line}) == [
        "http://other.example/debian"
    ]
    assert engines.debian_archive_uris({}, {}) == []


def test_sources_list_line() -> None:
    assert engines.sources_list("http://m.example/debian", "sid") == (
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://m.example/debian sid main\n"
    )


def test_parse_os_release() -> None:
    assert engines.parse_os_release('NAME="Debian"\nVERSION_CODENAME=bookworm\n') == "bookworm"
    assert engines.parse_os_release("") == ""


def test_daemon_json_and_dockerd_argv() -> None:
    assert json.loads(engines.daemon_json(engines.spec("docker-28-containerd"))) == {
        "features": {"containerd-snapshotter": True}
    }
    argv = config.dockerd_argv(
        data_root="/d", exec_root="/e", socket="/s", pid_file="/p", storage_driver="",
        binary="/c/usr/sbin/dockerd", config_file="/h/daemon.json",
    )  # fmt: skip
    assert argv[:2] == ["/c/usr/sbin/dockerd", "--config-file=/h/daemon.json"]
    assert not any(a.startswith("--storage-driver") for a in argv)


def test_containerd_2_config_is_version_3() -> None:
    text = remotes.containerd_config("/h", 2)
    assert "version = 3" in text and "io.containerd.cri.v1.images" in text
    assert "version = 2" in remotes.containerd_config("/h")


def test_podman_helpers_dir() -> None:
    conf = remotes.podman_files("/h", "overlay2", "/c/helpers")["containers.conf"]
    assert 'helper_binaries_dir = ["/c/helpers"]' in conf


def test_workstation_env() -> None:
    state = LabState(
        lab_dir="/l", bridge="distrib7", workstation_address="10.213.7.1", uplink=None,
        client_key="/l/k", known_hosts="/l/kh", inventory="/l/i", forward_rule=True,
        workstation_dockerd_pid=None, hosts=(),
    )  # fmt: skip
    assert state.workstation_env() == {}
    ws = LabState.from_json(
        json.dumps(
            {**json.loads(state.to_json()), "workstation_docker_host": "unix:///l/w/docker.sock",
             "workstation_docker_bin": "/l/w/bin", "workstation_engine": "docker-28"}
        )
    )  # fmt: skip
    env = ws.workstation_env()
    assert env["DOCKER_HOST"] == "unix:///l/w/docker.sock"
    assert env["PATH"].startswith("/l/w/bin:")


# ---------------------------------------------------------------------------------- real lab

MATRIX = ("docker-20.10", "docker-28", "docker-28-containerd", "containerd-2", "podman-5")
WORKSTATION = "docker-28"


def _instance() -> int:
    return config.check_instance(int(os.environ.get("DISTRIB_LAB_ENGINES_INSTANCE", "7")))


def _ssh(state: LabState, host: str, command: str, **kw: object) -> local.Completed:
    return local.run(core.ssh_argv(state, host, [command]), check=False, timeout=120, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def matrix_lab() -> Iterator[tuple[LabState, dict[str, str]]]:
    """A lab with one host per available engine of MATRIX and a docker-28 workstation engine;
    yields (state, unavailable engine -> reason)."""
    reason = testing.unavailable_reason()
    if reason:
        if os.environ.get("DISTRIB_REQUIRE_LAB") == "1":
            pytest.fail(f"lab required but unavailable: {reason}")
        pytest.skip(reason)
    missing = {n: fetch.resolve(n).reason for n in MATRIX if not fetch.resolve(n).available}
    names = [n for n in MATRIX if n not in missing]
    if not names:
        pytest.skip(f"no engine of the matrix here: {missing}")
    ws = fetch.resolve(WORKSTATION)
    number = _instance()
    state = core.up(
        len(names), kinds=",".join(names), instance=number,
        workstation=WORKSTATION if ws.available else None,
    )  # fmt: skip
    if not ws.available:
        missing[WORKSTATION + " (workstation)"] = ws.reason
    try:
        yield state, missing
    finally:
        core.down(instance=number)


def _host_of(state: LabState, engine: str) -> str:
    for h in state.hosts:
        if h.engine == engine:
            return h.name
    pytest.skip(f"{engine} cannot run here: {fetch.resolve(engine).reason}")


@pytest.mark.lab
@pytest.mark.parametrize(
    ("engine", "major", "driver", "store_type"),
    [
        ("docker-20.10", "20.10.", "overlay2", None),
        ("docker-28", "28.", "overlay2", None),
        ("docker-28-containerd", "28.", "overlayfs", "io.containerd.snapshotter.v1"),
    ],
)
def test_docker_host_versions_and_store(
    matrix_lab: tuple[LabState, dict[str, str]],
    engine: str,
    major: str,
    driver: str,
    store_type: str | None,
) -> None:
    state, _ = matrix_lab
    host = _host_of(state, engine)
    out = _ssh(state, host, "docker version --format '{{.Client.Version}} {{.Server.Version}}'")
    assert out.ok, out.stderr
    client, server = out.stdout.split()
    assert client.startswith(major) and server.startswith(major), out.stdout
    info = _ssh(state, host, "docker info --format '{{.Driver}}|{{json .DriverStatus}}'")
    got_driver, status = info.stdout.strip().split("|", 1)
    assert got_driver == driver
    if store_type:
        assert ["driver-type", store_type] in json.loads(status)
    if not major.startswith("20."):
        # its own containerd, supervised under its exec root (never a system one)
        addr = _ssh(state, host, "docker info --format '{{.Containerd.Address}}'").stdout.strip()
        h = state.host(host)
        assert addr.startswith(h.exec_root + "/"), addr
    # a small image loads (saved by the workstation engine's docker)
    env = state.workstation_env()
    save = local.run(["docker", "save", images.BASE], env=env or None, check=False, timeout=120)
    if not save.ok:
        images.build_images(env=env)
    cmd = " ".join(core.ssh_argv(state, host, ["docker", "load"]))
    load = local.run(["sh", "-c", f"docker save {images.BASE} | {cmd}"], env=env or None,
                     check=False, timeout=300)  # fmt: skip
    assert load.ok and "Loaded image" in load.stdout, load.stderr
    assert _ssh(state, host, f"docker image inspect {images.BASE}").ok


@pytest.mark.lab
def test_containerd_2_host(matrix_lab: tuple[LabState, dict[str, str]], tmp_path: Path) -> None:
    state, _ = matrix_lab
    host = _host_of(state, "containerd-2")
    out = _ssh(state, host, "ctr version")
    assert out.ok, out.stderr
    assert out.stdout.count("Version:  2.") == 2, out.stdout  # client and server
    env = state.workstation_env()
    images.build_images(env=env)
    cmd = " ".join(core.ssh_argv(state, host, ["ctr", "-n", "k8s.io", "images", "import", "-"]))
    load = local.run(["sh", "-c", f"docker save {images.BASE} | {cmd}"], env=env or None,
                     check=False, timeout=300)  # fmt: skip
    assert load.ok, load.stderr
    listed = _ssh(state, host, "ctr -n k8s.io images ls -q")
    assert "docker.io/distrib/busybox:latest" in listed.stdout.split(), listed.stdout


@pytest.mark.lab
def test_podman_5_host(matrix_lab: tuple[LabState, dict[str, str]]) -> None:
    state, _ = matrix_lab
    host = _host_of(state, "podman-5")
    out = _ssh(state, host, "podman --version")
    assert out.ok and out.stdout.strip() == "podman version 5.4.2", (out.stdout, out.stderr)
    env = state.workstation_env()
    images.build_images(env=env)
    cmd = " ".join(core.ssh_argv(state, host, ["podman", "load"]))
    load = local.run(["sh", "-c", f"docker save {images.BASE} | {cmd}"], env=env or None,
                     check=False, timeout=300)  # fmt: skip
    assert load.ok, load.stderr
    # a docker 28 `docker save` (OCI layout) names it docker.io/distrib/busybox in podman 5
    # (a docker 20.10 archive gave localhost/... in podman 4.3)
    listed = _ssh(state, host, "podman images --format '{{.Repository}}:{{.Tag}}'").stdout
    assert any(r.endswith("distrib/busybox:latest") for r in listed.split()), listed


@pytest.mark.lab
def test_workstation_engine(matrix_lab: tuple[LabState, dict[str, str]]) -> None:
    state, missing = matrix_lab
    if not state.workstation_engine:
        pytest.skip(f"workstation engine {WORKSTATION}: {missing}")
    env = state.workstation_env()
    out = local.run(["docker", "version", "--format", "{{.Client.Version}} {{.Server.Version}}"],
                    env=env, timeout=60)  # fmt: skip
    assert [v.split(".")[0] for v in out.stdout.split()] == ["28", "28"]
    # `lab images` builds into that engine (docker 28's legacy builder, DOCKER_BUILDKIT=0)
    run = local.run(_cli("images"), timeout=600, check=False)
    assert run.ok, run.stderr
    inspect = ["docker", "image", "inspect", "demo/web:1.0"]
    assert local.run(inspect, env=env, check=False).ok
    printed = local.run(_cli("env"), timeout=60).stdout
    assert f"export DOCKER_HOST={state.workstation_docker_host}\n" in printed
    status = local.run(_cli("status"), check=False, timeout=120)
    assert status.ok, status.stdout
    assert f"workstation engine: {WORKSTATION}" in status.stdout
    for h in state.hosts:
        assert h.engine in status.stdout


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "distrib.lab", *args, "--instance", str(_instance())]


@pytest.mark.lab
def test_matrix_down_leaves_nothing(matrix_lab: tuple[LabState, dict[str, str]]) -> None:
    """Last in the module: a killed session is replaced cleanly, then `down` leaves nothing."""
    state, _ = matrix_lab
    number = _instance()
    root = lab_dir(instance=number)
    inventory = Path(state.inventory).read_text()
    for h in state.hosts:
        assert f"lab_engine: {h.engine}" in inventory
    # SIGKILL the lab's daemons (leftovers of a killed session), then up again over them; not
    # the shared system dockerd on /run/docker.sock (another instance's lab may use it)
    victims = procs.daemons_mentioning(f"{root}/hosts/")
    victims |= procs.daemons_mentioning(f"{root}/{core.WORKSTATION_ENGINE_DIR}/")
    victims |= {p for h in state.hosts for p in (h.sshd_pid, h.dockerd_pid) if p}
    assert state.workstation_engine_pid in victims or not state.workstation_engine
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    again = core.up(
        len(state.hosts), kinds=",".join(h.engine for h in state.hosts), instance=number,
        workstation=state.workstation_engine,
    )  # fmt: skip
    assert all(r.healthy for r in core.status(instance=number))
    if again.workstation_docker_host:
        assert procs.docker_ping(again.workstation_docker_host.removeprefix("unix://"))
    core.down(instance=number)
    assert load_state(instance=number) is None
    mounts = config.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    assert config.mounts_under(mounts, str(root)) == []
    leftover = procs.daemons_mentioning(str(root))
    if teardown.other_instances_in_use(number):
        leftover -= {teardown.workstation_dockerd(root)}
    assert leftover == set()
    netns = os.listdir("/run/netns") if Path("/run/netns").exists() else []
    assert config.lab_netns(netns, number) == []
    assert not (root / core.WORKSTATION_ENGINE_DIR).exists()
    assert subprocess.run(["ip", "link", "show", config.bridge_name(number)],
                          capture_output=True).returncode != 0  # fmt: skip
