"""Opening an image archive: what a path is (`sniff`: an OCI layout directory, or a tar and
its outer codec, by content, never by name) and its members, streamed (`members`)."""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from typing import IO

from distrib import codecs, local
from distrib.codecs import CODECS, TAR_MAGIC_OFFSET
from distrib.errors import ConfigError

__all__ = ["clean_name", "corrupt", "members", "sniff"]

READ_SIZE = 1024 * 1024


def sniff(path: str) -> str | None:
    """`layout` for an OCI layout directory, else the archive's outer codec (`none`, `gzip`,
    `zstd`, `xz`) from its first bytes; None when `path` is neither (a text file)."""
    if os.path.isdir(path):
        names = set(os.listdir(path))
        return "layout" if {"index.json", "oci-layout"} & names else None
    try:
        with open(path, "rb") as fh:
            head = fh.read(TAR_MAGIC_OFFSET + 8)
    except OSError:
        return None
    return codecs.sniff(head)


@contextlib.contextmanager
def members(
    path: str, wanted: set[str] | None = None, links: dict[str, str] | None = None
) -> Iterator[Iterator[tuple[str, IO[bytes]]]]:
    """The archive's regular members as (name, stream), in archive order (a layout: its
    JSON files, then its blobs). `wanted`: only those (a layout opens nothing else; a tar is
    still read through). `links` receives the tar's links (old `docker save`s link a shared
    layer.tar to another). Errors are ConfigErrors naming `path`."""
    codec = sniff(path)
    if codec is None:
        raise ConfigError(
            "is not an image archive (docker-archive, OCI archive or layout)", file=path
        )
    if codec == "layout":
        yield _layout_members(path, wanted)
        return
    with open(path, "rb") as raw, tempfile.TemporaryFile() as errors:
        proc = None
        source: IO[bytes] = raw
        if codec == "zstd":  # gzip and xz: read in-process (_open_tar)
            unzstd = list(CODECS["zstd"].decompressors[0])
            proc = local.spawn(unzstd, stdin=raw, stdout=local.PIPE, stderr=errors)
            assert proc.stdout is not None
            source = proc.stdout
        try:
            with _open_tar(source, codec) as tar:
                yield _tar_members(tar, wanted, {} if links is None else links)
            if proc is not None:  # the tar's end may leave padding unread: drain, then wait
                while source.read(READ_SIZE):
                    pass
                source.close()
                if proc.wait() != 0:
                    errors.seek(0)
                    tail = errors.read().decode("utf-8", "replace").strip().splitlines()
                    raise corrupt(path, f"zstd: {tail[-1] if tail else 'failed'}")
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
            raise corrupt(path, str(exc) or type(exc).__name__) from None
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _open_tar(source: IO[bytes], codec: str) -> tarfile.TarFile:
    # gzip and xz through their modules, not tarfile's r|gz (a truncated gzip header made
    # that raise TypeError: found by test_any_bytes_give_images_or_a_config_error)
    if codec == "gzip":
        return tarfile.open(fileobj=gzip.GzipFile(fileobj=source, mode="rb"), mode="r|")
    if codec == "xz":
        unpacked = lzma.LZMAFile(source, mode="rb")  # noqa: SIM115 - closed with the file
        return tarfile.open(fileobj=unpacked, mode="r|")
    return tarfile.open(fileobj=source, mode="r|")


def corrupt(path: str, why: str) -> ConfigError:
    """The ConfigError of an archive that cannot be read to its end."""
    return ConfigError(
        f"truncated or corrupt image archive ({why})",
        file=path,
        hint="copy or write the archive again (skopeo copy, docker save); nothing was sent",
    )


def _tar_members(
    tar: tarfile.TarFile, wanted: set[str] | None, links: dict[str, str]
) -> Iterator[tuple[str, IO[bytes]]]:
    for member in tar:
        name = clean_name(member.name)
        if member.issym() or member.islnk():
            base = os.path.dirname(name) if member.issym() else ""
            links[name] = clean_name(os.path.normpath(os.path.join(base, member.linkname)))
            continue
        if not member.isfile() or (wanted is not None and name not in wanted):
            continue
        stream = tar.extractfile(member)
        if stream is not None:
            yield name, stream


def _layout_members(path: str, wanted: set[str] | None) -> Iterator[tuple[str, IO[bytes]]]:
    names = [
        n
        for n in ("oci-layout", "index.json", "manifest.json")
        if os.path.isfile(os.path.join(path, n))
    ]
    blobs = os.path.join(path, "blobs")
    for algorithm in sorted(os.listdir(blobs)) if os.path.isdir(blobs) else ():
        directory = os.path.join(blobs, algorithm)
        if os.path.isdir(directory):
            names += [f"blobs/{algorithm}/{n}" for n in sorted(os.listdir(directory))]
    for name in names:
        if wanted is not None and name not in wanted:
            continue
        try:
            with open(os.path.join(path, name), "rb") as fh:
                yield name, fh
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc.strerror or exc}", file=path) from None


def clean_name(name: str) -> str:
    """A member name without leading `./`."""
    while name.startswith("./"):
        name = name[2:]
    return name
