"""Platforms (issue 18, item 3): names, the host's from its probe, the image's from its
inspect line, and the refusal before sending (pure, then the engine on a fake transport)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from distrib import commands
from distrib.archive import Archive, LocalImage
from distrib.engine import FAILED, Job, deploy
from distrib.plan import HostPlan
from distrib.platforms import Platform, normalise_arch, refusals
from distrib.refs import ImageRef
from distrib.target import Target
from tests.fakes import FakeFleet, FakeHost

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", ("amd64", "")),  # uname -m on a PC, docker info Architecture
        ("aarch64", ("arm64", "")),  # uname -m on a Raspberry Pi 4 / Graviton, 64-bit OS
        ("armv7l", ("arm", "v7")),  # Raspberry Pi OS 32-bit
        ("armv6l", ("arm", "v6")),  # Pi Zero
        ("i686", ("386", "")),
        ("ppc64le", ("ppc64le", "")),
        ("s390x", ("s390x", "")),
        ("riscv64", ("riscv64", "")),
        ("loongarch64", ("loong64", "")),
        (" X86_64\n", ("amd64", "")),
        ("sparc64", ("sparc64", "")),  # unknown: compared as written
    ],
)
def test_normalise_arch(machine: str, expected: tuple[str, str]) -> None:
    assert normalise_arch(machine) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("Linux/x86_64", "linux/amd64"),
        ("linux/armv7l", "linux/arm/v7"),
    ],
)
def test_platform_parse(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize("text", ["amd64", "linux/", "linux/amd64/v1/x", "linux/am d64", ""])
def test_platform_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="OS/ARCH"):
        Platform.parse(text)


@pytest.mark.parametrize(
    ("image", "host", "runs"),
    [
        (AMD64, AMD64, True),
        (AMD64, ARM64, False),
        (Platform("linux", "arm64", "v8"), ARM64, True),  # host variant unknown
        (Platform("linux", "arm", "v6"), Platform("linux", "arm", "v7"), True),
        (Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6"), False),
        (Platform("windows", "amd64"), AMD64, False),
    ],
)
def test_runs_on(image: Platform, host: Platform, runs: bool) -> None:
    assert image.runs_on(host) is runs


def test_refusals_one_line_per_image_and_unknowns_pass() -> None:
    host = Platform.of_host("aarch64")
    images = [("demo/web:1.0", AMD64), ("demo/arm:1.0", ARM64), ("demo/old:1.0", None)]
    assert refusals(images, host) == ["demo/web:1.0 is linux/amd64, the host is linux/arm64"]
    assert refusals(images, Platform.of_host("")) == []  # the probe did not say


def test_probe_reports_the_machine_and_parse_reads_it() -> None:
    assert commands.ARCH_LINE in commands.probe(["docker"], "/var/tmp")
    facts = commands.parse_probe("engine_version=20.10.24\narch=aarch64\n")
    assert facts.arch == "aarch64"
    assert commands.parse_probe("engine_version=20.10.24\n").arch == ""


def test_inspect_line_keeps_the_config_platform() -> None:
    # a real docker 20.10 line (test_commands has more), arm64 config
    line = (
        "sha256:" + "a" * 64 + '\t["sha256:' + "b" * 64 + '"]\t1234\t\t{"Cmd":["sh"]}'
        "\tarm64\tlinux\tv8\t2026-12-02T04:23:43Z\t"
    )
    seen = commands.parse_inspect(line)
    assert seen.platform == ("linux", "arm64", "v8")
    assert str(Platform.of_image(*seen.platform)) == "linux/arm64/v8"
    # docker 20.10 shows a config without a variant as <no value>
    seen = commands.parse_inspect(line.replace("\tv8\t", "\t<no value>\t"))
    assert seen.platform == ("linux", "arm64", "")


def test_engine_refuses_another_platform_before_sending(tmp_path: Path) -> None:
    data = b"archive" * 100
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)
    web = LocalImage(ImageRef.parse("demo/web:1.0"), "sha256:" + "1" * 64, ("sha256:l1",), 10,
                     platform=AMD64)  # fmt: skip
    archive = Archive(str(path), "gzip", 6, len(data), hashlib.sha256(data).hexdigest(), (web,))
    plan = HostPlan("pi", Target("pi", "pi.lab"), ("docker",), "/var/tmp")
    host = FakeHost("pi", machine="aarch64", archive_images={"demo/web:1.0": web.id})
    result = deploy(plan, Job.deploy(archive), FakeFleet(host))
    assert result.status == FAILED
    assert result.message.startswith("demo/web:1.0 is linux/amd64, the host is linux/arm64")
    assert result.bytes_sent == 0 and "demo/web:1.0" not in host.images
    # the same image goes to an amd64 host
    pc = FakeHost("pc", machine="x86_64", archive_images={"demo/web:1.0": web.id})
    pc_plan = HostPlan("pc", Target("pc", "pc.lab"), ("docker",), "/var/tmp")
    assert deploy(pc_plan, Job.deploy(archive), FakeFleet(pc)).status != FAILED
