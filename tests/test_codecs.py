"""The codec table (distrib/codecs.py): pure facts and the argv picked from what is available."""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile

import pytest

from distrib import codecs
from distrib.codecs import CODECS


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("a")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return out.getvalue()


@pytest.mark.parametrize(
    ("head", "codec"),
    [
        (gzip.compress(b"x"), "gzip"),
        (b"\x28\xb5\x2f\xfd" + b"\0" * 8, "zstd"),
        (lzma.compress(b"x"), "xz"),
        (_tar(), "none"),
        (b"services:\n  web:\n", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, codec: str | None) -> None:
    assert codecs.sniff(head) == codec


@pytest.mark.parametrize(
    ("codec", "tools", "argv"),
    [
        ("gzip", {"pigz", "gzip"}, ["pigz", "-6", "-c"]),
        ("gzip", {"gzip"}, ["gzip", "-6", "-c"]),
        ("zstd", {"zstd"}, ["zstd", "-6", "-T0", "-q", "-c"]),
        ("zstd", {"gzip"}, None),
        ("xz", {"xz"}, ["xz", "-6", "-T0", "-c"]),
        ("none", {"gzip", "zstd"}, None),
    ],
)
def test_compressor(codec: str, tools: set[str], argv: list[str] | None) -> None:
    assert codecs.compressor(codec, 6, tools.__contains__) == argv


@pytest.mark.parametrize(
    ("codec", "tools", "argv"),
    [
        ("gzip", {"pigz", "gzip"}, ["pigz", "-dc"]),
        ("gzip", {"gzip"}, ["gzip", "-dc"]),
        ("zstd", {"zstd"}, ["zstd", "-dcq"]),
        ("xz", set(), None),
        ("none", {"gzip"}, None),
    ],
)
def test_decompressor(codec: str, tools: set[str], argv: list[str] | None) -> None:
    assert codecs.decompressor(codec, tools.__contains__) == argv


def test_table_facts() -> None:
    assert {n: c.suffix for n, c in CODECS.items()} == {
        "gzip": ".tar.gz", "zstd": ".tar.zst", "xz": ".tar.xz", "none": ".tar",
    }  # fmt: skip
    assert {n: c.level for n, c in CODECS.items()} == {"gzip": 6, "zstd": 3, "xz": 6, "none": 0}
    # the layer store keeps gzip and zstd blobs; an archive of them is a plain tar / a zstd stream
    assert {n: (c.blob_suffix, c.assembled) for n, c in CODECS.items() if c.blob_suffix} == {
        "gzip": (".gz", "none"), "zstd": (".zst", "zstd"),
    }  # fmt: skip
    assert CODECS["gzip"].tools == ("pigz", "gzip")
    assert CODECS["none"].native == {"docker", "podman", "containerd"}
