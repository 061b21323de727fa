"""The codec table: every fact distrib knows about each archive codec, in one place.

Pure (no I/O): callers pass what they can probe (`available`, a tool lookup on the
workstation or on a host). Facts (DESIGN.md): docker 20.10 `docker load` reads gzip, xz and
bzip2 but not zstd (docker 23 and newer do); podman reads plain and zstd docker-archives, not
gzip; containerd (`ctr images import`) reads a plain tar only. pigz is gzip on all cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CODECS", "Codec", "compressor", "decompressor", "sniff"]

TAR_MAGIC_OFFSET = 257  # a tar header says `ustar` here
DOCKER_ZSTD_SINCE = 23  # the first docker major whose `docker load` reads zstd itself


@dataclass(frozen=True)
class Codec:
    """One codec. Argv templates hold `{level}` where the compression level goes."""

    name: str
    suffix: str  # an archive file's suffix: `.tar.gz`
    level: int  # the default compression level
    magic: bytes = b""  # a compressed stream's first bytes (none: a tar header, see sniff)
    compressors: tuple[tuple[str, ...], ...] = ()  # candidate argv (stdin -> stdout), best first
    decompressors: tuple[tuple[str, ...], ...] = ()  # candidate argv, best first
    native: frozenset[str] = frozenset()  # engines whose load reads it at every version
    blob_suffix: str = ""  # a layer-store blob's suffix ("": the store does not keep it)
    assembled: str = ""  # what an archive assembled from such blobs is, as a whole

    @property
    def tools(self) -> tuple[str, ...]:
        """The programs it may use, compressors' first (what a probe looks for)."""
        names = [argv[0] for argv in (*self.compressors, *self.decompressors)]
        return tuple(dict.fromkeys(names))


CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        Codec(
            "gzip",
            ".tar.gz",
            6,
            b"\x1f\x8b",
            compressors=(("pigz", "-{level}", "-c"), ("gzip", "-{level}", "-c")),
            decompressors=(("pigz", "-dc"), ("gzip", "-dc")),
            native=frozenset({"docker"}),
            blob_suffix=".gz",
            assembled="none",  # a plain tar whose layer.tar members are the gzip blobs
        ),
        Codec(
            "zstd",
            ".tar.zst",
            3,
            b"\x28\xb5\x2f\xfd",
            compressors=(("zstd", "-{level}", "-T0", "-q", "-c"),),
            decompressors=(("zstd", "-dcq"),),
            native=frozenset({"podman"}),  # and docker from DOCKER_ZSTD_SINCE
            blob_suffix=".zst",
            assembled="zstd",  # one zstd stream: the blobs' frames and raw frames between
        ),
        Codec(
            "xz",
            ".tar.xz",
            6,
            b"\xfd7zXZ\x00",
            compressors=(("xz", "-{level}", "-T0", "-c"),),
            decompressors=(("xz", "-dc"),),
            native=frozenset({"docker"}),
        ),
        Codec("none", ".tar", 0, native=frozenset({"docker", "podman", "containerd"})),
    )
}


def compressor(codec: str, level: int, available: Callable[[str], bool]) -> list[str] | None:
    """The argv compressing stdin to stdout at `level` with the best tool `available`; None
    when `codec` needs no compressor or when none of its tools is available."""
    for argv in CODECS[codec].compressors:
        if available(argv[0]):
            return [part.format(level=int(level)) for part in argv]
    return None


def decompressor(codec: str, available: Callable[[str], bool]) -> list[str] | None:
    """The argv decompressing stdin to stdout with the best tool `available` (None: none)."""
    for argv in CODECS[codec].decompressors:
        if available(argv[0]):
            return list(argv)
    return None


def sniff(head: bytes) -> str | None:
    """The codec of a stream from its first bytes (a compressed codec's magic, or `none` for
    a tar header: TAR_MAGIC_OFFSET + 5 bytes are needed to see one); None: neither."""
    for codec in CODECS.values():
        if codec.magic and head.startswith(codec.magic):
            return codec.name
    if head[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "none"
    return None
