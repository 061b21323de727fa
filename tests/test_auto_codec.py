"""`compression: auto` per host (issue 14): each host gets the codec it can load."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from distrib import commands
from distrib.api.jobs import codecs_line as _codecs_line
from distrib.api.jobs import main_codec as _main_codec
from distrib.archive import Archive
from distrib.engine import CHANGED, Job, deploy, host_codecs
from tests.fakes import FakeFleet
from tests.fakes import loads as fake_loads
from tests.test_engine import archive, fake, host  # noqa: F401 - fixture

__all__ = ["archive"]


def facts(engine: str, version: str, *tools: str) -> commands.Facts:
    return commands.Facts(version, frozenset(tools), engine=engine)


@pytest.mark.parametrize(
    ("fleet", "codecs"),
    [
        # docker 20.10 reads no zstd: it needs the zstd tool to pipe through
        ({"a": facts("docker", "20.10.24", "zstd")}, {"a": "zstd"}),
        ({"a": facts("docker", "20.10.24", "gzip")}, {"a": "gzip"}),
        ({"a": facts("docker", "28.5.2")}, {"a": "zstd"}),  # reads zstd itself
        ({"a": facts("podman", "4.3.1")}, {"a": "zstd"}),
        ({"a": facts("containerd", "1.6.20")}, {"a": "gzip"}),  # plain only, no zstd tool
        (
            {"a": facts("docker", "28.5.2"), "b": facts("docker", "20.10.24")},
            {"a": "zstd", "b": "gzip"},
        ),
    ],
)
def test_each_host_gets_the_codec_it_can_load(
    fleet: dict[str, commands.Facts], codecs: dict[str, str]
) -> None:
    assert host_codecs(fleet) == codecs


def test_the_play_codec_is_the_majority_and_the_line_names_the_rest() -> None:
    per_host = {"n1": "zstd", "n2": "gzip", "n3": "zstd"}
    assert _main_codec(per_host) == "zstd"
    assert _main_codec({"n1": "gzip", "n2": "gzip", "n3": "zstd"}) == "gzip"
    assert _main_codec({"n1": "gzip", "n2": "zstd"}) == "zstd"
    assert _codecs_line(per_host) == "zstd (n1, n3), gzip (n2)"
    assert _codecs_line({"n1": "gzip"}) == "gzip"


def test_a_host_is_sent_the_archive_of_its_own_codec(archive: Archive, tmp_path: Path) -> None:  # noqa: F811
    data = b"pretend this is a zstd of docker save" * 1000
    path = tmp_path / "a.tar.zst"
    path.write_bytes(data)
    zstd = Archive(
        str(path), "zstd", 3, len(data), hashlib.sha256(data).hexdigest(), archive.images
    )
    gzip_job = Job.deploy(archive)
    job = dataclasses.replace(Job.deploy(zstd), others={"b": gzip_job})
    assert job.for_host("a") is job and job.for_host("b") is gzip_job
    assert job.variants() == [job, gzip_job]
    fleet = FakeFleet(fake("a"), fake("b"))
    for name, extension in (("a", ".tar.zst"), ("b", ".tar.gz")):
        result = deploy(host(name), job, fleet)
        assert result.status == CHANGED, result.message
        loads = fake_loads(fleet.hosts[name].log)
        assert loads and all(extension in c for c in loads), loads
