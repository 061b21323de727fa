"""The pure decision (distrib.decide, issue 15 item 3), from tables: what a deploy does on a
host given its facts and the wanted images' states. Pure: no fabric, no hosts, no fakes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from distrib import decide
from distrib.commands import Facts, Inspected, parse_probe
from distrib.platforms import Platform

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
GIB = 1000**3


@dataclass(frozen=True)
class Img:
    id: str = "sha256:" + "a" * 64
    engine_id: str = ""
    fingerprint: str = ""
    size: int = 100
    platform: Platform | None = AMD64
    offered: tuple[Platform, ...] = ()


def facts(**kw: object) -> Facts:
    base = {
        "engine_version": "28.5.2",
        "tools": frozenset({"gzip", "sha256sum"}),
        "root_avail": 10 * GIB,
        "tmp_avail": 10 * GIB,
        "arch": "x86_64",
    }
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


DOCKER = facts()
PODMAN = facts(engine="podman", engine_version="5.4.2")
ARM_HOST = facts(arch="aarch64")
OLD_PROBE = facts(arch="")  # a probe that did not say the machine


@pytest.mark.parametrize(
    ("mode", "states", "host", "delta", "relayed", "kind", "words"),
    [
        # nothing to do
        ("deploy", {"a:1": "present"}, DOCKER, True, False, "ok", "all images already present"),
        ("check", {"a:1": "present"}, DOCKER, False, False, "ok", "already present"),
        ("verify", {"a:1": "present", "b:1": "present"}, DOCKER, False, False, "ok",
         "all 2 image(s) present with the same content"),
        # verify mode reports drift, never sends
        ("verify", {"a:1": "present", "b:1": "missing"}, DOCKER, True, False, "refuse",
         "drift: b:1 missing"),
        ("verify", {"a:1": "different"}, DOCKER, False, False, "refuse",
         "drift: a:1 different config"),
        # a payload: a delta on docker with a layer store, else the whole archive
        ("deploy", {"a:1": "missing"}, DOCKER, True, False, "delta", ""),
        ("deploy", {"a:1": "different"}, DOCKER, False, False, "full", ""),
        ("check", {"a:1": "missing"}, DOCKER, True, False, "delta", ""),
        ("deploy", {"a:1": "missing"}, PODMAN, True, False, "full", ""),
        # another platform: refused before a byte is sent
        ("deploy", {"a:1": "missing"}, ARM_HOST, True, False, "refuse",
         "a:1 is linux/amd64, the host is linux/arm64; nothing was sent"),
        ("deploy", {"a:1": "missing"}, OLD_PROBE, False, False, "full", ""),
        # a relay tree feeds the host
        ("deploy", {"a:1": "missing"}, DOCKER, False, True, "relay-child", ""),
    ],
)  # fmt: skip
def test_what_to_send(
    mode: str,
    states: dict[str, str],
    host: Facts,
    delta: bool,
    relayed: bool,
    kind: str,
    words: str,
) -> None:
    images = {ref: Img() for ref in states}
    action = decide.what_to_send(mode, images, states, host, delta, relayed)
    assert action.kind == kind
    assert words in action.reason
    assert action.drift == (mode == "verify" and kind == "refuse")
    if kind in ("delta", "full"):
        assert action.payload == kind
        assert action.missing == tuple(r for r, s in states.items() if s != "present")


def test_a_platform_refusal_names_a_fix() -> None:
    action = decide.what_to_send("deploy", {"a:1": Img()}, {"a:1": "missing"}, ARM_HOST)
    assert action.refused and "build or pull the images for linux/arm64" in action.hint


FULL = decide.Action(decide.FULL, missing=("a:1",), payload=decide.FULL)
DELTA = decide.Action(decide.DELTA, missing=("a:1",), payload=decide.DELTA)


@pytest.mark.parametrize(
    ("action", "host", "codec", "size", "unpacked", "transfer", "kind", "how", "words"),
    [
        (FULL, DOCKER, "gzip", GIB, GIB, "auto", "full", "staged", ""),
        (DELTA, DOCKER, "gzip", GIB, GIB, "auto", "delta", "staged", ""),
        # the staging area cannot hold the payload: stream it (auto, stream) or refuse (staged)
        (FULL, facts(tmp_avail=GIB), "gzip", GIB, GIB, "auto", "stream", "stream", ""),
        (DELTA, facts(tmp_avail=GIB), "gzip", GIB, GIB, "auto", "delta", "stream", ""),
        (FULL, facts(tmp_avail=GIB), "gzip", GIB, GIB, "staged", "refuse", "",
         "not enough space in /var/tmp for the archive"),
        (FULL, DOCKER, "gzip", GIB, GIB, "stream", "stream", "stream", ""),
        (FULL, facts(tmp_avail=None), "gzip", 100 * GIB, GIB, "auto", "full", "staged", ""),
        # the engine's data root cannot hold the images: refused, whatever the transfer
        (FULL, facts(root_avail=GIB), "gzip", GIB, GIB, "auto", "refuse", "",
         "not enough space in the engine's data root"),
        (FULL, facts(root_avail=None), "gzip", GIB, 100 * GIB, "auto", "full", "staged", ""),
        # codecs: docker 20.10 reads no zstd, a `zstd` on the host unpacks it
        (FULL, facts(engine_version="20.10.24"), "zstd", GIB, GIB, "auto", "refuse", "",
         "archive is zstd-compressed but the host has no zstd"),
        (FULL, facts(engine_version="20.10.24", tools=frozenset({"zstd"})), "zstd", GIB, GIB,
         "auto", "full", "staged", ""),
        (FULL, facts(engine="containerd", engine_version="2.1.4"), "gzip", GIB, GIB, "auto",
         "full", "staged", ""),
    ],
)  # fmt: skip
def test_how_to_send(
    action: decide.Action,
    host: Facts,
    codec: str,
    size: int,
    unpacked: int,
    transfer: str,
    kind: str,
    how: str,
    words: str,
) -> None:
    decided = decide.how_to_send(action, host, codec, size, unpacked, transfer, "/var/tmp")
    assert decided.kind == kind
    assert decided.transfer == how
    assert words in decided.reason
    if kind != "refuse":
        assert decided.native == host.engine_reads(codec)
    else:
        assert decided.hint


@pytest.mark.parametrize(
    ("codec", "host", "native"),
    [
        ("zstd", facts(engine_version="28.5.2"), True),
        ("zstd", facts(engine_version="20.10.24", tools=frozenset({"zstd"})), False),
        ("gzip", facts(engine="podman", engine_version="5.4.2"), False),
        ("zstd", facts(engine="podman", engine_version="5.4.2"), True),
        ("none", facts(engine="containerd", engine_version="2.1.4"), True),
    ],
)
def test_whether_the_engine_reads_the_codec_itself(codec: str, host: Facts, native: bool) -> None:
    assert decide.how_to_send(FULL, host, codec, 1, 1).native is native


@pytest.mark.parametrize(
    ("action", "cancelled", "kind"),
    [
        (DELTA, False, "full"),
        (decide.how_to_send(DELTA, facts(tmp_avail=1), "gzip", GIB, 1), False, "stream"),
        (DELTA, True, None),  # interrupted: the failure stands
        (FULL, False, None),  # a whole archive's failure stands
    ],
)
def test_a_refused_delta_becomes_the_full_archive(
    action: decide.Action, cancelled: bool, kind: str | None
) -> None:
    full = decide.after_refused_delta(action, cancelled)
    if kind is None:
        assert full is None
    else:
        assert full is not None and full.kind == kind and full.payload == "full" and full.fallback


SAME = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("image", "seen", "state"),
    [
        (Img(id=SAME), None, "missing"),
        (Img(id=SAME), Inspected(SAME, (), 0), "present"),
        (Img(id=SAME), Inspected(OTHER, (), 0), "different"),
        # docker's containerd store: the manifest digest, else the config fingerprint
        (Img(id=SAME, engine_id=OTHER), Inspected(OTHER, (), 0, descriptor=OTHER), "present"),
        (Img(id=SAME, fingerprint="f1"), Inspected(OTHER, (), 0, OTHER, "f1"), "present"),
        (Img(id=SAME, fingerprint="f1"), Inspected(OTHER, (), 0, OTHER, "f2"), "different"),
    ],
)
def test_image_state(image: Img, seen: Inspected | None, state: str) -> None:
    assert decide.image_state(image, seen) == state


@pytest.mark.parametrize(
    ("probes", "play", "per_host"),
    [
        (["engine_version=28.5.2\n", "engine_version=25.0.1\n"], "zstd", ["zstd", "zstd"]),
        (["engine_version=28.5.2\n", "engine_version=20.10.24\n"], "gzip", ["zstd", "gzip"]),
        (["engine_version=20.10.24\nhas_zstd=1\n"], "zstd", ["zstd"]),
        (["engine=podman\nengine_version=5.4.2\n"], "zstd", ["zstd"]),
        (["engine=containerd\nengine_version=2.1.4\n"], "gzip", ["gzip"]),
        ([], "gzip", []),
    ],
)
def test_codec_choice(probes: list[str], play: str, per_host: list[str]) -> None:
    known = {f"h{i}": parse_probe(p) for i, p in enumerate(probes)}
    assert decide.choose_codec([*known.values(), None]) == play
    assert list(decide.host_codecs(known).values()) == per_host
