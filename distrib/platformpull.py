"""A registry's multi-platform image with `local_pull` (issue 18, item 3): each host gets its
own platform's image under the play's tag.

The play's hosts are probed first; for each platform some host has that the workstation's image
of a reference does not run on, the workstation's docker pulls that platform (`docker pull
--platform P REF`), keeps it under a private tag (`distrib-platform/NAME-HASH:TAG--linux-arm64`)
and gets its own tag back (`docker tag ID REF`: a pull with --platform moves the tag). The
platform images ride along as the image's `alternates`, as an OCI index's do (archived.py):
`archived.host_jobs` gives each host its own. The layer store `docker save`s the private tag
(`LocalImage.save_as`); whole archives of such images are made from the store, so the host
sees the play's tag, never the private one. A platform the registry does not have leaves the
hosts of that platform refused, naming what there is.

Only docker's classic image store is handled as a workstation engine (its tag moves with a
pull); on the containerd store this is said in one line and those hosts are refused (see
NOT_ON_CONTAINERD_STORE). `platform:` in the play still pulls one platform for every host.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import IO

from distrib import archive, commands, local
from distrib.archive import LocalImage
from distrib.errors import LocalError
from distrib.platforms import Platform
from distrib.refs import ImageRef

PRIVATE_REPOSITORY = "distrib-platform"
LACKING = ("no matching manifest", "does not match the specified platform")


def private_tag(ref: ImageRef, platform: Platform) -> str:
    """Where the workstation keeps `ref`'s image for `platform` (a valid reference, one per
    reference and platform)."""
    base = re.sub(r"[^a-z0-9]+", "-", ref.name.rsplit("/", 1)[-1].lower()).strip("-") or "image"
    digest = hashlib.sha256(str(ref).encode()).hexdigest()[:10]
    tag = re.sub(r"[^\w.-]+", "-", ref.tag or "digest")[:80]
    arch = "-".join(p for p in (platform.os, platform.architecture, platform.variant) if p)
    return f"{PRIVATE_REPOSITORY}/{base}-{digest}:{tag}--{arch}"


def wanted(
    images: Sequence[LocalImage], hosts: Iterable[Platform | None]
) -> list[tuple[LocalImage, Platform]]:
    """(image, platform) pairs to pull: each host platform that no image held so far (the
    workstation's, or one pulled for another host platform) runs on, newest variant first.
    Images from archives, and images whose config names no platform (they run anywhere),
    need none (pure)."""
    # the newest variant first: a v7 host gets a v7 image, not the v6 one a v6 host needs
    platforms = sorted({p for p in hosts if p is not None}, key=_newest_first)
    out: list[tuple[LocalImage, Platform]] = []
    for image in images:
        if image.origin or image.platform is None:
            continue
        served = [image.platform]
        for platform in platforms:
            if not any(s.runs_on(platform) for s in served):
                out.append((image, platform))
                served.append(platform)
    return out


def _newest_first(platform: Platform) -> tuple[str, str, int]:
    digits = platform.variant.lstrip("v")
    return platform.os, platform.architecture, -int(digits) if digits.isdigit() else 0


def with_platforms(
    images: tuple[LocalImage, ...],
    hosts: Iterable[Platform | None],
    refresh: bool,
    out: IO[str] | None = None,
) -> tuple[LocalImage, ...]:
    """`images` with the platform images their hosts need as alternates (pulled now, or
    found under their private tags when not `refresh`: local_pull missing)."""
    extra: dict[ImageRef, list[LocalImage]] = {}
    needed = wanted(images, hosts)
    if needed and workstation_store() == commands.CONTAINERD_STORE:
        if out is not None:  # said once; those hosts are then refused by the platform check
            print(NOT_ON_CONTAINERD_STORE, file=out)
        return images
    for image, platform in needed:
        if out is not None:
            print(f"pulling {image.ref} ({platform}) on this workstation", file=out, flush=True)
        pulled = pull(image, platform, refresh)
        if pulled is not None:
            extra.setdefault(image.ref, []).append(pulled)
        elif out is not None:
            print(f"{image.ref}: the registry has no image for {platform}", file=out)
    return tuple(
        replace(i, alternates=tuple(extra[i.ref])) if i.ref in extra else i for i in images
    )


# On docker's containerd image store a tag names the registry's whole index (multi-platform
# images are kept as such): a pull with --platform adds that platform's content under the same
# tag rather than moving it, and inspect shows the workstation's own platform, so the
# private-tag scheme above (a tag that moves with each pull) has nothing to hold on to. Not
# tried there (the lab tests use a classic-store workstation): refused with this line instead.
NOT_ON_CONTAINERD_STORE = (
    "local_pull: one image per host platform needs docker's classic image store on this "
    "workstation (on the containerd image store a tag names the whole index and shows one "
    "platform); hosts of another platform than this workstation's image are refused. Use an "
    "OCI archive of the index as the source (images_from), or one play per platform with "
    "platform:"
)


def workstation_store() -> str:
    """The workstation docker's image store (classic or containerd; "" if it does not say)."""
    argv = [*archive.docker_command(), "info", "--format", "{{.Driver}} {{json .DriverStatus}}"]
    result = local.run(argv, check=False, timeout=60)
    return commands.docker_store(result.stdout) if result.ok else ""


def pull(image: LocalImage, platform: Platform, refresh: bool) -> LocalImage | None:
    """`image.ref` for `platform` under its private tag (None: the registry has none)."""
    private = ImageRef.parse(private_tag(image.ref, platform))
    if not refresh:
        found, _ = archive.inspect_local([private])
        if private in found:
            return _as(found[private], image, private)
    docker = archive.docker_command()
    argv = [*docker, "pull", "--platform", str(platform), str(image.ref)]
    try:
        result = local.run(argv, check=False, timeout=archive.PULL_TIMEOUT)
        if not result.ok:
            if any(words in result.stderr.lower() for words in LACKING):
                return None
            raise LocalError(
                f"docker pull {image.ref} for {platform} failed",
                cmd=argv,
                stderr=result.stderr or result.stdout,
                hint="is the registry reachable from this workstation? or leave the hosts of "
                "that platform out of the play",
            )
        found, _ = archive.inspect_local([image.ref])
        got = found.get(image.ref)
        if got is None or (got.platform is not None and not got.platform.runs_on(platform)):
            return None  # a single-platform image: the registry has nothing for `platform`
        local.run([*docker, "tag", str(image.ref), str(private)], timeout=60)
        return _as(got, image, private)
    finally:  # the workstation's own image gets its tag back
        local.run([*docker, "tag", image.engine_id or image.id, str(image.ref)], timeout=60)


def _as(found: LocalImage, image: LocalImage, private: ImageRef) -> LocalImage:
    return replace(found, ref=image.ref, save_as=str(private), alternates=())
