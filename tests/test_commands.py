"""Each remote command next to its parser, tested from real outputs (docker 20.10, coreutils)."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from distrib import commands, engines, hostfacts
from distrib.archive import LocalImage
from distrib.engine import DIFFERENT, MISSING, PRESENT, image_state
from distrib.refs import ImageRef


def test_probe_parses_real_output() -> None:
    facts = commands.parse_probe(
        "engine_version=20.10.24+dfsg1\nhas_zstd=1\nhas_gzip=1\nhas_sha256sum=1\n"
    )
    assert facts.engine_version == "20.10.24+dfsg1"
    assert facts.engine_ok
    assert facts.has("zstd") and not facts.has("pigz")


def test_probe_without_engine() -> None:
    facts = commands.parse_probe("engine_version=\nhas_gzip=1\n")
    assert not facts.engine_ok


# --- the image store in the probe (issue 14): real `docker info` lines, docker 20.10 / 28.5.2 ---

PROBE_C28 = (
    "engine_version=28.5.2+dfsg4\ndocker_root=/tmp/e/c28/data\n"
    'docker_driver=overlayfs [["driver-type","io.containerd.snapshotter.v1"]]\n'
    "root_avail_kb=81185376\ntmp_avail_kb=81185376\nhas_zstd=1\nhas_gzip=1\n"
)
PROBE_K28 = (
    "engine_version=28.5.2+dfsg4\ndocker_root=/tmp/e/k28/data\n"
    'docker_driver=overlay2 [["Backing Filesystem","extfs"],["Supports d_type","true"],'
    '["Using metacopy","false"],["Native Overlay Diff","true"],["userxattr","false"]]\n'
)
PROBE_2010 = (
    "engine_version=20.10.24+dfsg1\ndocker_root=/var/lib/docker\n"
    'docker_driver=overlay2 [["Backing Filesystem","extfs"],["Supports d_type","true"],'
    '["Native Overlay Diff","true"],["userxattr","false"]]\n'
)


@pytest.mark.parametrize(
    ("stdout", "store", "label"),
    [
        (PROBE_C28, "containerd", "docker 28.5.2+dfsg4, containerd store"),
        (PROBE_K28, "classic", "docker 28.5.2+dfsg4"),
        (PROBE_2010, "classic", "docker 20.10.24+dfsg1"),
        ("engine=podman\nengine_version=4.3.1\ndocker_root=/var/lib/containers\n", "",
         "podman 4.3.1"),
        ("engine=containerd\nengine_version=1.6.20~ds1\ndocker_root=\n", "",
         "containerd 1.6.20~ds1"),
        ("engine_version=20.10.24\n", "", "docker 20.10.24"),  # an older probe: unknown
    ],
)  # fmt: skip
def test_probe_names_the_image_store(stdout: str, store: str, label: str) -> None:
    facts = commands.parse_probe(stdout)
    assert (facts.store, facts.label) == (store, label)


def test_probe_asks_docker_info_once() -> None:
    cmd = commands.probe(["docker"], "/var/tmp")
    assert cmd.count(" info ") == 1 and "DriverStatus" in cmd and "DockerRootDir" in cmd


# --- what a host holds under each tag: real `inspect_images` output ----------------------------

ID_K28 = "sha256:4df3dfa4f91f5420ba60e0a3ae840980c17d7f95d006ba09f800b44624f3b547"
ID_C28 = "sha256:e139be6ca7446c9f01744b0825a389ff6dd61d67b9d48fa995692b292f5db53d"
BASE_LAYER = "sha256:7b7a9c683ee4c4bf0bb5b2639d4b232a65d6190e7a597563ad7ed948271e9b82"
RUNTIME = (
    '{"Cmd":["/bin/busybox","true"],"Entrypoint":null,'
    '"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],'
    '"Labels":null,"OnBuild":null,"User":"","Volumes":null,"WorkingDir":""}'
)
# docker 28.5.2, classic store (overlay2): `.Id` is the config digest, no descriptor
LINE_K28 = (
    f'{ID_K28}\t["{BASE_LAYER}","sha256:2fa74b7544b5a77db542d1c2be59d05492d142844238f19958c52ba5a3ab9993"]'
    f"\t1982260\t\t{RUNTIME}\tamd64\tlinux\t<no value>\t2026-12-02T04:23:43.370764779Z\t"
)
# docker 28.5.2, containerd store: `.Id` is the manifest digest, shown again as the descriptor;
# its config digest (sha256:c30d17c3...) appears nowhere
C28_LAYERS = (BASE_LAYER, "sha256:15b867976afa9ab14e360924bc8532d9000d3362a8ae9d2a13e9888f0ac3e62c")
LINE_C28 = (
    f'{ID_C28}\t["{C28_LAYERS[0]}","{C28_LAYERS[1]}"]\t1081511\t{ID_C28}\t{RUNTIME}'
    "\tamd64\tlinux\t<no value>\t2026-12-02T04:23:42.708502822Z\t"
)
# ... and its config blob, from `docker save` of that image
CONFIG_C28 = (
    '{"created":"2026-12-02T04:23:42.708502822Z","architecture":"amd64","os":"linux",'
    f'"rootfs":{{"type":"layers","diff_ids":["{C28_LAYERS[0]}","{C28_LAYERS[1]}"]}},'
    '"history":[{"created":"2026-12-02T04:23:42.302198641Z","comment":"Imported from -"}],'
    '"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],'
    '"Cmd":["/bin/busybox","true"]}}'
)
# docker 20.10.24 shows every runtime key, empty or not
LINE_2010 = (
    "sha256:9cf82d16ac7b56b0c0ef4fe78732005f0a0304d3f63fb1fd7587bc48d43a98c5"
    '\t["sha256:4e3fe77f2002509dc15499ad900bcbcddd45b6f014f7d8778ba53d985a85173c",'
    '"sha256:1f84f6ddb0c349432a85bba1f77ca323458d3864d837659f1e6981efcfa705a5"]\t1984255\t\t'
    '{"AttachStderr":false,"AttachStdin":false,"AttachStdout":false,"Cmd":["/bin/busybox","true"],'
    '"Domainname":"","Entrypoint":null,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:'
    '/usr/bin:/sbin:/bin"],"Hostname":"","Image":"sha256:7f0f2c5417c94cd967ec4eb23a027244d27e7'
    '65cd84b9b28b168c1b83d1bee18","Labels":null,"OnBuild":null,"OpenStdin":false,'
    '"StdinOnce":false,"Tty":false,"User":"","Volumes":null,"WorkingDir":""}\tamd64\tlinux'
    "\t<no value>\t2026-12-02T04:32:49.639678175Z\t"
)
# podman 4.3.1 (engines.PODMAN_INSPECT_FORMAT): the config digest, bare hex
LINE_PODMAN = (
    "9cf82d16ac7b56b0c0ef4fe78732005f0a0304d3f63fb1fd7587bc48d43a98c5"
    '\t["sha256:4e3fe77f2002509dc15499ad900bcbcddd45b6f014f7d8778ba53d985a85173c"]\t2145051'
)
MISSING_28 = "app:9\t\n\napp:9\t!Error response from daemon: No such image: app:9 \n"
MISSING_2010 = (
    "app:9\t\n\napp:9\t!Error response from daemon: no such image: app:9: No such image: app:9 \n"
)
MISSING_PODMAN = "localhost/app:9\t\nlocalhost/app:9\t!Error: inspecting object: localhost/app:9: image not known\n"
# docker 28 containerd store: a tag whose content never fully arrived (a refused partial load)
BROKEN_C28 = (
    'app:3\t\n\napp:3\t!template parsing error: template: :1:22: executing "" at '
    '<.RootFS.Layers>: map has no entry for key "Layers" \n'
)
DAEMON_DOWN = (
    "app:1\t\n\napp:1\t!Cannot connect to the Docker daemon at unix:///tmp/nonexist.sock. "
    "Is the docker daemon running? \n"
)


def test_inspect_images_is_one_well_formed_shell_command_per_play() -> None:
    cmd = commands.inspect_images(["sudo", "docker"], ["demo/web:1.0", "x:latest"])
    assert cmd.count("printf '%s\\t' ") == 2 and cmd.count(" image inspect --format ") == 2
    argv = shlex.split(cmd)
    assert argv[:3] == ["printf", "%s\\t", "demo/web:1.0;"]
    assert commands.INSPECT_FORMAT in argv
    assert "-- demo/web:1.0 2>&1 >&3 3>&-" in cmd, "only the error is captured"
    hostile = commands.inspect_images(["docker"], ["a'b"])
    assert "'a'\"'\"'b'" in hostile


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (f"app:1\t{LINE_K28}\n", {"app:1": (ID_K28, "", 2)}),
        (f"app:1\t{LINE_C28}\n", {"app:1": (ID_C28, ID_C28, 2)}),
        (f"t14/app:v1\t{LINE_2010}\n", {"t14/app:v1": (LINE_2010[:71], "", 2)}),
        (f"localhost/t14/app:v1\t{LINE_PODMAN}\n",
         {"localhost/t14/app:v1": ("sha256:" + LINE_PODMAN[:64], "", 1)}),
        (MISSING_28, {}),
        (MISSING_2010, {}),
        (MISSING_PODMAN, {}),
        (BROKEN_C28, {"app:3": ("", "", 0)}),  # there, but nothing can be said of it
        (f"app:1\t{LINE_K28}\n{MISSING_28}", {"app:1": (ID_K28, "", 2)}),
        ("", {}),
    ],
)  # fmt: skip
def test_parse_inspect_images(stdout: str, expected: dict[str, tuple[str, str, int]]) -> None:
    found = commands.parse_inspect_images(stdout)
    assert {r: (i.id, i.descriptor, len(i.diff_ids)) for r, i in found.items()} == expected


def test_an_engine_error_is_never_a_missing_image() -> None:
    with pytest.raises(commands.InspectError) as err:
        commands.parse_inspect_images(DAEMON_DOWN)
    assert err.value.ref == "app:1" and "Cannot connect to the Docker daemon" in err.value.message


def test_fingerprint_is_the_same_from_inspect_and_from_the_config_blob() -> None:
    # what a containerd-store host shows == what the workstation computes from the config
    seen = commands.parse_inspect(LINE_C28)
    assert seen.containerd_store
    assert seen.fingerprint == commands.config_fingerprint_of(CONFIG_C28.encode())
    # docker 20.10's extra empty keys do not change it; another CMD does
    other_cmd = LINE_C28.replace('"/bin/busybox","true"', '"/bin/busybox","false"')
    assert commands.parse_inspect(other_cmd).fingerprint != seen.fingerprint


def _local(config: str, fingerprint: str = "", engine_id: str = "") -> LocalImage:
    return LocalImage(ImageRef.parse("app:1"), config, C28_LAYERS, 1, fingerprint, engine_id)


CONFIG_DIGEST = "sha256:c30d17c37af1ac7613d834b6af9262fb17149f394e242faf48cec4bc579ca3b0"
FP_C28 = commands.config_fingerprint_of(CONFIG_C28.encode())
OTHER_CMD_C28 = LINE_C28.replace('"/bin/busybox","true"', '"/bin/busybox","false"').replace(
    ID_C28, "sha256:617cc6d1adeb94ec2d06c46a49cabb032d469337ea6f54c9d653c00cb51ba674"
)


@pytest.mark.parametrize(
    ("image", "line", "state"),
    [
        # classic store: the config digest, and nothing else, decides
        (_local(ID_K28, "fp:x"), LINE_K28, PRESENT),
        (_local("sha256:" + "0" * 64, "fp:x"), LINE_K28, DIFFERENT),  # same layers, other config
        (_local(ID_K28), None, MISSING),
        # containerd store: no config digest shown; the fingerprint decides...
        (_local(CONFIG_DIGEST, FP_C28), LINE_C28, PRESENT),
        (_local(CONFIG_DIGEST, FP_C28), OTHER_CMD_C28, DIFFERENT),  # same layers, other CMD
        (_local(CONFIG_DIGEST), LINE_C28, DIFFERENT),  # no fingerprint known: never "present"
        # ... or the very manifest (a containerd-store workstation knows it)
        (_local(CONFIG_DIGEST, "fp:other", ID_C28), LINE_C28, PRESENT),
        # podman shows the config digest too
        (_local("sha256:" + LINE_PODMAN[:64]), LINE_PODMAN, PRESENT),
        (_local(ID_K28), "", DIFFERENT),  # an unreadable record under the tag
    ],
)
def test_image_state(image: LocalImage, line: str | None, state: str) -> None:
    if line is None:
        seen = None
    elif not line:
        seen = commands.Inspected("", (), 0)
    else:
        seen = commands.parse_inspect_images(f"app:1\t{line}\n")["app:1"]
    assert image_state(image, seen) == state


def test_parse_inspect_line() -> None:
    line = 'sha256:abc\t["sha256:l1","sha256:l2"]\t1234\n'
    assert commands.parse_inspect_line(line) == ("sha256:abc", ("sha256:l1", "sha256:l2"), 1234)
    assert commands.parse_inspect_line("sha256:abc\tnull\t0") == ("sha256:abc", (), 0)


def test_staging_pair() -> None:
    sha = "ab" * 32
    path = commands.staging_dir("/var/tmp/my dir", sha)
    assert path == "/var/tmp/my dir/distrib." + sha[:24]
    cmd = commands.make_staging("/var/tmp/my dir", sha, path + "/images.tar.gz.part")
    assert "umask 077" in cmd and "'/var/tmp/my dir/distrib.abab" in cmd
    assert "[ ! -L " in cmd and "[ -O " in cmd, "an existing dir is used only if private and ours"
    assert commands.parse_staging("partial=0\n") == 0
    assert commands.parse_staging("partial=1048576\n") == 1048576
    with pytest.raises(ValueError):
        commands.parse_staging("mkdir: cannot create directory\n")


@pytest.mark.parametrize(
    ("owner", "mode", "problem"),
    [
        (1000, 0o700, ""),  # the user's own, private
        (1000, 0o755, ""),
        (0, 0o1777, ""),  # /var/tmp, /tmp: root's, sticky
        (0, 0o755, ""),
        (1000, 0o1770, ""),  # group-writable but sticky: only an entry's owner renames it
        (0, 0o777, "group and others may write to it and it is not sticky (mode 0777)"),
        (1000, 0o775, "group may write to it and it is not sticky (mode 0775)"),
        (1000, 0o757, "others may write to it and it is not sticky (mode 0757)"),
        (1001, 0o700, "it belongs to uid 1001, not to this user (uid 1000) or root"),
        (1001, 0o2777, "it belongs to uid 1001, not to this user (uid 1000) or root; "
                       "group and others may write to it and it is not sticky (mode 2777)"),
    ],
)  # fmt: skip
def test_tmp_problem(owner: int, mode: int, problem: str) -> None:
    assert commands.tmp_problem(owner, mode, 1000) == problem


@pytest.mark.parametrize(
    ("stdout", "partial", "problem"),
    [
        ("tmp=0 1777 1000\npartial=12\n", 12, ""),
        ("tmp=1000 700 1000\npartial=0\n", 0, ""),
        ("tmp=0 777 1000\n", None, "and it is not sticky (mode 0777)"),
        ("tmp=1001 755 1000\n", None, "belongs to uid 1001"),
        ("tmp=  1000\n", None, "owner and mode cannot be read"),
        ("partial=5\n", 5, ""),  # (an older host script: no tmp line)
    ],
)
def test_parse_staging_refuses_an_unsafe_remote_tmp(
    stdout: str, partial: int | None, problem: str
) -> None:
    if partial is not None:
        assert commands.parse_staging(stdout) == partial
        return
    with pytest.raises(commands.UnsafeTmp, match=problem.replace("(", r"\(").replace(")", r"\)")):
        commands.parse_staging(stdout)


@pytest.mark.parametrize(
    ("mode", "owner", "safe"),
    [(0o700, 0, True), (0o1777, 0, True), (0o777, 0, False), (0o770, 0, False),
     (0o700, 65534, False)],
)  # fmt: skip
def test_make_staging_checks_remote_tmp_in_a_real_shell(
    tmp_path: Path, mode: int, owner: int, safe: bool
) -> None:
    """The shell's own check agrees with tmp_problem: on an unsafe remote_tmp it prints the
    tmp line only and makes nothing there."""
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    base = tmp_path / "remote tmp"
    base.mkdir()
    os.chmod(base, mode)
    os.chown(base, owner, 0)
    part = str(base / "distrib.x" / "p")
    out = subprocess.run(["sh", "-c", commands.make_staging(str(base), "k" * 32, part)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.startswith(f"tmp={owner} {mode:o} 0\n")
    if safe:
        assert commands.parse_staging(out.stdout) == 0
        assert os.listdir(base) == ["distrib." + "k" * 24]
    else:
        with pytest.raises(commands.UnsafeTmp):
            commands.parse_staging(out.stdout)
        assert os.listdir(base) == [], "nothing is made in an unsafe remote_tmp"


@pytest.mark.parametrize(
    ("part", "final", "load", "remove", "expected"),
    [
        ("/t/d/a.part", "/t/d/a", "docker load -i /t/d/a", False,
         "s=$(sha256sum -- /t/d/a.part) || exit 1; s=${s%% *}; "
         "printf 'distrib-sha256=%s\\n' \"$s\"; [ \"$s\" = SHA ] || exit 0; "
         "mv -f -- /t/d/a.part /t/d/a || exit 1; { docker load -i /t/d/a\n}"),
        ("/t/my d/a.part", "/t/my d/a", "zstd -dc -- '/t/my d/a' | docker load", True,
         "s=$(sha256sum -- '/t/my d/a.part') || exit 1; s=${s%% *}; "
         "printf 'distrib-sha256=%s\\n' \"$s\"; [ \"$s\" = SHA ] || exit 0; "
         "mv -f -- '/t/my d/a.part' '/t/my d/a' || exit 1; "
         "{ zstd -dc -- '/t/my d/a' | docker load\n} && rm -f -- '/t/my d/a'"),
    ],
)  # fmt: skip
def test_checked_load_is_one_command(
    part: str, final: str, load: str, remove: bool, expected: str
) -> None:
    sha = "ab" * 32
    assert commands.checked_load(part, final, sha, load, remove) == expected.replace("SHA", sha)


def test_checked_load_refuses_a_bad_digest() -> None:
    for bad in ("", "AB" * 32, "ab" * 31, "x; rm -rf /" + "a" * 53):
        with pytest.raises(ValueError):
            commands.checked_load("/t/p", "/t/f", bad, "true")


@pytest.mark.parametrize(
    ("stdout", "digest", "rest"),
    [
        ("distrib-sha256=" + "0" * 64 + "\nLoaded image: demo/web:1.0\n", "0" * 64,
         "Loaded image: demo/web:1.0\n"),
        ("distrib-sha256=" + "0" * 64 + "\n", "0" * 64, ""),
        ("distrib-sha256=\n", "", "distrib-sha256=\n"),  # sha256sum printed nothing
        ("Loaded image: x\n", "", "Loaded image: x\n"),
        ("", "", ""),
    ],
)  # fmt: skip
def test_parse_checked_load(stdout: str, digest: str, rest: str) -> None:
    assert commands.parse_checked_load(stdout) == (digest, rest)


@pytest.mark.parametrize("good", [True, False])
def test_checked_load_in_a_real_shell(tmp_path: Path, good: bool) -> None:
    """A mismatch neither renames nor loads; a match renames, loads (stdin reaches the load:
    sudo's password line) and removes the loaded file."""
    part, final = tmp_path / "a b.part", tmp_path / "a b"
    part.write_bytes(b"archive")
    sha = hashlib.sha256(b"archive" if good else b"other").hexdigest()
    load = f"read -r pw; printf 'loaded %s with %s\\n' \"$(cat -- {shlex.quote(str(final))})\" \"$pw\""
    out = subprocess.run(
        ["sh", "-c", commands.checked_load(str(part), str(final), sha, load, remove_after=True)],
        capture_output=True, text=True, input="secret\n", check=True,
    )  # fmt: skip
    digest, rest = commands.parse_checked_load(out.stdout)
    assert digest == hashlib.sha256(b"archive").hexdigest()
    if good:
        assert rest == "loaded archive with secret\n"
        assert not part.exists() and not final.exists()
    else:
        assert rest == "" and part.exists() and not final.exists()


def test_probe_reads_disk_space() -> None:
    facts = commands.parse_probe(
        "engine_version=20.10.24\ndocker_root=/var/lib/docker\nroot_avail_kb=1000\n"
        "tmp_avail_kb=20\nhas_gzip=1\n"
    )
    assert facts.docker_root == "/var/lib/docker"
    assert facts.root_avail == 1024000 and facts.tmp_avail == 20480
    unknown = commands.parse_probe("engine_version=20.10.24\ndocker_root=\n")
    assert unknown.root_avail is None and unknown.tmp_avail is None
    assert "'/srv/my tmp'" in commands.probe(["docker"], "/srv/my tmp")


def test_resume_commands() -> None:
    assert commands.prefix_sha256("/t/a b", 1024) == "head -c 1024 -- '/t/a b' | sha256sum"
    assert commands.receive("/t/p", append=True) == "umask 077 && cat >> /t/p"
    assert commands.receive("/t/p") == "umask 077 && cat > /t/p"


def test_stream_load() -> None:
    assert commands.stream_load(["docker"], "gzip") == "docker load"
    assert commands.stream_load(["sudo", "docker"], "zstd") == "zstd -dc | sudo docker load"


@pytest.mark.parametrize(
    ("stdout", "ok"),
    [
        ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  /tmp/x\n", True),
        ("sha256sum: /tmp/x: No such file or directory\n", False),
        ("", False),
    ],
)
def test_parse_sha256(stdout: str, ok: bool) -> None:
    if ok:
        assert commands.parse_sha256(stdout).startswith("e3b0c442")
    else:
        with pytest.raises(ValueError):
            commands.parse_sha256(stdout)


def test_load_per_codec() -> None:
    assert commands.load(["docker"], "/t/a.tar.gz", "gzip") == "docker load -i /t/a.tar.gz"
    assert (
        commands.load(["docker"], "/t/a b.tar.zst", "zstd")
        == "zstd -dc -- '/t/a b.tar.zst' | docker load"
    )


def test_one_load_builder_for_docker_too() -> None:
    """commands.load/stream_load (relay's docker shorthand) are engines.Engine's builders."""
    docker = engines.Engine()
    assert commands.load(["docker"], "/t/a.zst", "zstd") == docker.load(
        "/t/a.zst", "zstd", False, {"zstd"}
    )
    assert commands.stream_load(["docker"], "gzip") == docker.stream_load("gzip", True, ())


@pytest.mark.parametrize("kind", ["docker", "podman", "containerd"])
def test_one_probe_for_every_engine(kind: str) -> None:
    script = hostfacts.probe_script(kind, [kind], "/var/tmp")
    assert script.startswith(f"printf 'engine=%s\\n' {kind}; ")
    assert commands.ARCH_LINE in script and "has_$t=1" in script
    assert engines.Engine(kind, (kind,)).probe_script("/var/tmp") == script


def test_cleanup_refuses_foreign_paths() -> None:
    assert commands.cleanup("/var/tmp/distrib.x1") == "rm -rf -- /var/tmp/distrib.x1"
    with pytest.raises(ValueError):
        commands.cleanup("/var/tmp")
    with pytest.raises(ValueError):
        commands.cleanup("/")


def test_every_argument_is_quoted() -> None:
    hostile = "/tmp/$(touch /tmp/canary);`id`"
    for cmd in (
        commands.receive(hostile),
        commands.sha256(hostile),
        commands.promote(hostile, hostile),
    ):
        assert "'/tmp/$(touch /tmp/canary);`id`'" in cmd


# --- several queries in one round trip (issue 16 item 2) ------------------------------------


@pytest.mark.parametrize(
    ("stdout", "count", "expected"),
    [
        (
            f"engine_version=28.5.2\n\n{commands.PART_MARK}\nweb\t1\n",
            2,
            ["engine_version=28.5.2\n", "web\t1\n"],
        ),
        (f"a\n\n{commands.PART_MARK}\n\n{commands.PART_MARK}\n", 3, ["a\n", "", ""]),
        (f"no newline\n{commands.PART_MARK}\nb", 2, ["no newline", "b"]),
        ("only\n", 1, ["only\n"]),
    ],
)
def test_split_parts(stdout: str, count: int, expected: list[str]) -> None:
    assert commands.split_parts(stdout, count) == expected


def test_split_parts_refuses_output_cut_short() -> None:
    with pytest.raises(ValueError, match="expected 3 parts, got 2"):
        commands.split_parts(f"a\n\n{commands.PART_MARK}\nb\n", 3)


def test_in_parts_runs_each_script_and_marks_their_outputs() -> None:
    assert commands.in_parts(["echo one"]) == "echo one"
    script = commands.in_parts(["echo a", "printf b", "echo c; false"])
    shlex.split(script)  # well-formed shell
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    assert ran.returncode == 1  # the last script's status
    assert commands.split_parts(ran.stdout, 3) == ["a\n", "b", "c\n"]


def test_host_layers_lets_the_host_decide_the_store_when_not_known() -> None:
    classic = commands.host_layers(["docker"])
    assert "store=containerd" not in classic
    assert "store=containerd" in commands.host_layers(["docker"], containerd_store=True)
    auto = commands.host_layers(["docker"], containerd_store=None)
    assert auto.startswith(classic + " && case ")
    assert "{{json .DriverStatus}}" in auto and "*io.containerd.snapshotter*)" in auto
    shlex.split(auto)
