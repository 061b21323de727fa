"""The config digest (an image's identity) of an image in the workstation's containerd image
store, whose own ID is its manifest's (DESIGN.md): asked of containerd, else read from `docker
save`; cached for good, as it is content-addressed."""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from collections.abc import Sequence

from distrib import local
from distrib.errors import LocalError
from distrib.refs import ImageRef

__all__ = ["config_digest"]


def config_digest(ref: ImageRef, target: str, cache: str, docker: Sequence[str]) -> str:
    """The config digest of a containerd-store image whose manifest (or index) is `target`.

    Content-addressed, so the answer is cached for good (`<cache>/ids/`). Asked of the local
    containerd (`ctr content get`, where its socket is ours to use), else read from `docker
    save` (the whole image is read once; index.json comes last). `cache`: the cache
    directory; `docker`: the workstation's docker command."""
    ids = os.path.join(cache, "ids")
    path = os.path.join(ids, target.split(":", 1)[-1])
    with contextlib.suppress(OSError):
        with open(path) as fh:
            cached = fh.read().strip()
        if cached.startswith("sha256:"):
            return cached
    digest = _config_from_containerd(target, docker) or _config_from_save(ref, docker)
    os.makedirs(ids, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(digest + "\n")
    os.replace(tmp, path)
    return digest


def _config_from_containerd(target: str, docker: Sequence[str]) -> str | None:
    from distrib import engines  # manifest/index parsers

    info = local.run(
        [*docker, "info", "--format", "{{.Containerd.Address}}"], check=False, timeout=30
    )
    address = info.stdout.strip() if info.ok else ""
    if not address or address == "<no value>" or not os.access(address, os.W_OK):
        return None

    def blob(digest: str) -> bytes | None:
        argv = ["ctr", "-a", address, "-n", "moby", "content", "get", digest]
        try:
            got = local.run(argv, check=False, timeout=60)
        except LocalError:  # no ctr here
            return None
        return got.stdout.encode() if got.ok and got.stdout else None

    data = blob(target)
    if data is None:
        return None
    child = engines.index_manifest(data)
    if child:  # an index: the linux/amd64 manifest (else its first)
        data = blob(child)
    return engines.manifest_config(data)


def _config_from_save(ref: ImageRef, docker: Sequence[str]) -> str:
    save = local.spawn([*docker, "save", str(ref)], stdout=local.PIPE)
    assert save.stdout is not None
    manifest: list[dict[str, object]] = []
    try:
        with tarfile.open(fileobj=save.stdout, mode="r|") as tar:
            for member in tar:
                if member.name == "manifest.json":
                    source = tar.extractfile(member)
                    manifest = json.loads(source.read()) if source else []
    except (tarfile.TarError, ValueError) as exc:
        save.kill()
        save.wait()
        raise LocalError(f"docker save {ref}: unreadable archive ({exc})") from None
    rc = save.wait()
    entry = manifest[0] if manifest and isinstance(manifest[0], dict) else {}
    config = str(entry.get("Config") or "")
    if rc != 0 or not config.startswith("blobs/sha256/"):
        raise LocalError(f"docker save {ref}: cannot find the image's config (exit {rc})")
    return "sha256:" + config.rsplit("/", 1)[-1]
