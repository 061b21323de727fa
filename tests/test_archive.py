"""The workstation side: one archive built once, read by many while it grows, cached."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from distrib import archive
from distrib.archive import LocalImage
from distrib.commands import Facts
from distrib.engine import choose_codec
from distrib.errors import LocalError
from distrib.refs import ImageRef

IMAGES = (LocalImage(ImageRef.parse("demo/x:1"), "sha256:" + "1" * 64, ("sha256:a",), 1000),)


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for `docker save` that writes a known stream slowly (a local program, so
    the real pipeline - spawn, compressor, hashing, rename - runs unchanged)."""
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(3_000_000))
    script = tmp_path / "docker"
    script.write_text(f"#!/bin/sh\nfor i in 1 2 3; do head -c 1000000 {payload} | tail -c 1000000; sleep 0.1; done\n")
    script.chmod(0o755)
    monkeypatch.setenv("DISTRIB_LOCAL_DOCKER", str(script))
    monkeypatch.setenv("DISTRIB_CACHE_DIR", str(tmp_path / "cache"))
    return payload


def read_all(a: archive.Archive, out: dict[int, bytes], i: int, offset: int = 0) -> None:
    out[i] = b"".join(a.chunks(offset))


def test_readers_follow_a_growing_archive(fake_docker: Path) -> None:
    a = archive.prepare(IMAGES, "none")
    assert not a.complete and not a.cached
    results: dict[int, bytes] = {}
    readers = [threading.Thread(target=read_all, args=(a, results, i)) for i in range(3)]
    for r in readers:
        r.start()
    for r in readers:
        r.join(30)
    expected = fake_docker.read_bytes()[:1_000_000] * 3
    assert all(results[i] == expected for i in range(3))
    assert a.size == len(expected)
    assert a.sha256 == hashlib.sha256(expected).hexdigest()
    assert a.prefix_sha256(10) == hashlib.sha256(expected[:10]).hexdigest()
    assert b"".join(a.chunks(2_999_990)) == expected[-10:]
    assert not [p for p in os.listdir(os.path.dirname(a.path)) if p.startswith(".partial")]


def test_second_prepare_hits_the_cache(fake_docker: Path) -> None:
    first = archive.prepare(IMAGES, "gzip")
    first.wait()  # built in the background on first use
    second = archive.prepare(IMAGES, "gzip")
    assert second.cached and second.complete
    assert (second.size, second.sha256) == (first.size, first.sha256)
    assert archive.find_cached(IMAGES, "zstd") is None


def test_abort_removes_the_partial_file(fake_docker: Path) -> None:
    a = archive.prepare(IMAGES, "none")
    a.start()
    a.abort()
    with pytest.raises(LocalError):
        a.wait()
    directory = os.path.dirname(a.path)
    assert not [p for p in os.listdir(directory) if p.startswith(".partial")]
    assert not os.path.exists(a.path)


def test_failed_save_is_reported_to_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "docker"
    script.write_text("#!/bin/sh\necho 'Error response from daemon: reference does not exist' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("DISTRIB_LOCAL_DOCKER", str(script))
    monkeypatch.setenv("DISTRIB_CACHE_DIR", str(tmp_path / "cache"))
    a = archive.prepare(IMAGES, "gzip")
    with pytest.raises(LocalError, match="reference does not exist"):
        b"".join(a.chunks())


@pytest.mark.parametrize(
    ("version", "tools", "reads", "decodes"),
    [
        ("20.10.24", {"gzip"}, False, False),
        ("20.10.24", {"gzip", "zstd"}, False, True),
        ("24.0.7", {"gzip"}, True, True),
        ("", {"zstd"}, False, True),
    ],
)
def test_zstd_capability(version: str, tools: set[str], reads: bool, decodes: bool) -> None:
    facts = Facts(version, frozenset(tools))
    assert facts.engine_reads("zstd") is reads
    assert facts.can_decode("zstd") is decodes
    assert facts.engine_reads("gzip")


@pytest.mark.parametrize(
    ("hosts", "codec"),
    [
        ([Facts("20.10.24", frozenset({"zstd"})), Facts("24.0.1", frozenset())], "zstd"),
        ([Facts("20.10.24", frozenset({"zstd"})), Facts("20.10.24", frozenset({"gzip"}))], "gzip"),
        ([None, Facts("20.10.24", frozenset({"zstd"}))], "zstd"),  # unreachable hosts don't vote
        ([], "gzip"),
    ],
)
def test_auto_codec(hosts: list[Facts | None], codec: str) -> None:
    assert choose_codec(hosts) == codec
