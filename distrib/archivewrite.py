"""Writing an archive: `docker save` (or a producer of the tar's bytes) piped through the
compressor into a file, hashed while it is written, and its metadata beside it (the cache)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from distrib import codecs, local
from distrib.codecs import CODECS
from distrib.errors import LocalError

__all__ = ["compressor", "load_cached", "meta_path", "produce_compressed", "save_compressed"]

READ_SIZE = 1024 * 1024


def compressor(codec: str, level: int) -> list[str] | None:
    """The compressing command for `codec` on the workstation, preferring multi-core tools
    (the codec table's order); None for 'none'."""
    if codec not in CODECS:
        raise ValueError(codec)
    if codec == "none":
        return None
    argv = codecs.compressor(codec, level, lambda tool: bool(local.which(tool)))
    if argv is None:
        tool = CODECS[codec].compressors[-1][0]
        raise LocalError(f"compression {codec} needs the {tool} program on the workstation")
    return argv


def meta_path(path: str, key: str) -> str:
    return os.path.join(os.path.dirname(path), key + ".json")


def write_meta(
    path: str,
    key: str,
    images: Mapping[str, str],
    codec: str,
    level: int,
    size: int,
    digest: str,
) -> None:
    meta = meta_path(path, key)
    with open(meta + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(
            {
                "sha256": digest,
                "size": size,
                "codec": codec,
                "level": level,
                "images": dict(images),
                "created": time.time(),
            },
            fh,
        )
    os.replace(meta + ".tmp", meta)


def load_cached(path: str, meta_file: str) -> tuple[int, str] | None:
    """(size, sha256) of a cached archive whose metadata file matches it, else None."""
    try:
        with open(meta_file, encoding="utf-8") as fh:
            meta = json.load(fh)
        if os.path.getsize(path) == meta["size"]:
            return int(meta["size"]), str(meta["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def write_hashed(
    blocks: Iterable[bytes], fd: int, grew: Callable[[int], None], abort: threading.Event
) -> tuple[int, str]:
    """Write `blocks` to `fd` (closed after), hashed on the way; `grew(total)` after each
    block; LocalError as soon as `abort` is set. (size, sha256 hex)."""
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as out:
        for block in blocks:
            if abort.is_set():
                raise LocalError("archive build interrupted")
            digest.update(block)
            out.write(block)
            out.flush()
            size += len(block)
            grew(size)
    return size, digest.hexdigest()


def save_compressed(
    save_cmd: list[str],
    codec: str,
    level: int,
    fd: int,
    tmp: str,
    grew: Callable[[int], None],
    abort: threading.Event,
) -> tuple[int, str]:
    """`save_cmd` (docker save) | compressor > tmp, hashed on the way; `grew(total)` after
    each block."""
    with tempfile.TemporaryFile() as save_err, tempfile.TemporaryFile() as comp_err:
        save = local.spawn(save_cmd, stdout=local.PIPE, stderr=save_err)
        comp_cmd = compressor(codec, level)
        comp = None
        try:
            assert save.stdout is not None
            source = save.stdout
            if comp_cmd:
                comp = local.spawn(comp_cmd, stdin=save.stdout, stdout=local.PIPE, stderr=comp_err)
                save.stdout.close()  # the compressor owns the pipe now
                assert comp.stdout is not None
                source = comp.stdout
            read = source.read1  # type: ignore[attr-defined]
            size, sha256 = write_hashed(iter(lambda: read(READ_SIZE), b""), fd, grew, abort)
            source.close()
            comp_rc = comp.wait() if comp else 0
            save_rc = save.wait()
        except BaseException:
            for proc in (save, comp):
                if proc and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if save_rc != 0 or comp_rc != 0:
            os.unlink(tmp)
            save_err.seek(0)
            comp_err.seek(0)
            failed = save_cmd if save_rc else (comp_cmd or [])
            stderr = (save_err.read() if save_rc else comp_err.read()).decode("utf-8", "replace")
            raise LocalError(f"{' '.join(failed[:2])} failed", cmd=failed, stderr=stderr)
    return size, sha256


def produce_compressed(
    producer: Callable[[], Iterator[bytes]],
    codec: str,
    level: int,
    fd: int,
    tmp: str,
    grew: Callable[[int], None],
    abort: threading.Event,
) -> tuple[int, str]:
    """producer() | compressor > tmp, hashed on the way (as `save_compressed`, for images
    that no engine holds: their docker-archive is made from the layer store)."""
    failed: list[BaseException] = []
    comp_cmd = compressor(codec, level)
    with tempfile.TemporaryFile() as comp_err:
        comp = (
            local.spawn(comp_cmd, stdin=local.PIPE, stdout=local.PIPE, stderr=comp_err)
            if comp_cmd
            else None
        )

        def feed() -> None:
            assert comp is not None and comp.stdin is not None
            try:
                for block in producer():
                    if abort.is_set():
                        raise LocalError("archive build interrupted")
                    comp.stdin.write(block)
            except BaseException as exc:  # noqa: BLE001 - raised by the reading thread
                failed.append(exc)
                comp.kill()
            finally:
                with contextlib.suppress(OSError):
                    comp.stdin.close()

        feeder = threading.Thread(target=feed, name="archive-feed", daemon=True)
        try:
            if comp is None:
                blocks: Iterator[bytes] = producer()
            else:
                assert comp.stdout is not None
                feeder.start()
                stdout = comp.stdout
                blocks = iter(lambda: stdout.read1(READ_SIZE), b"")  # type: ignore[attr-defined]
            size, sha256 = write_hashed(blocks, fd, grew, abort)
            if comp is not None:
                feeder.join()
                rc = comp.wait()
                if failed:
                    raise failed[0]
                if rc != 0:
                    comp_err.seek(0)
                    raise LocalError(
                        f"{comp_cmd[0] if comp_cmd else '?'} failed",
                        cmd=comp_cmd or [],
                        stderr=comp_err.read().decode("utf-8", "replace"),
                    )
        except BaseException:
            if comp is not None and comp.poll() is None:
                comp.kill()
                comp.wait()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return size, sha256
