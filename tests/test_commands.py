"""Each remote command next to its parser, tested from real outputs (docker 20.10, coreutils)."""

from __future__ import annotations

import shlex

import pytest

from distrib import commands
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


def test_list_images_quotes_and_filters_exact_refs() -> None:
    cmd = commands.list_images(
        ["sudo", "docker"], [ImageRef.parse("demo/web:1.0"), ImageRef.parse("docker.io/library/x")]
    )
    argv = shlex.split(cmd)
    assert argv[:5] == ["sudo", "docker", "images", "--no-trunc", "--format"]
    assert argv[5] == "{{.Repository}}:{{.Tag}}\t{{.ID}}"
    assert argv[6:] == ["--filter", "reference=demo/web:1.0", "--filter", "reference=x:latest"]


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("", {}),
        (
            "demo/web:1.0\tsha256:"
            + "a" * 64
            + "\n"
            + "demo/worker:1.0\tsha256:"
            + "b" * 64
            + "\n",
            {"demo/web:1.0": "sha256:" + "a" * 64, "demo/worker:1.0": "sha256:" + "b" * 64},
        ),
        ("<none>:<none>\tsha256:" + "c" * 64 + "\n", {}),
        ("garbage line\n", {}),
    ],
)
def test_parse_image_list(stdout: str, expected: dict[str, str]) -> None:
    assert commands.parse_image_list(stdout) == expected


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


def test_parse_loaded() -> None:
    out = "Loaded image: demo/web:1.0\nLoaded image ID: sha256:abc\nsomething else\n"
    assert commands.parse_loaded(out) == ["demo/web:1.0", "sha256:abc"]


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
