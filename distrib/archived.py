"""Images that come from image archives, and multi-platform sources, at run time (issue 18).

- `local_images`: the LocalImage of each archived image of a playbook (identity: the config
  digest; the other platforms of an OCI index ride along as `alternates`), with a line
  saying where each comes from (also in --check).
- `fill`: before any host is sent anything, the configs and layers of the images a job ships
  are read from their archives into the job's layer store (imagearchive pass 2), never into
  the workstation's engine; `producer` makes a whole archive of them from that store.
- `for_host` / `host_jobs`: each host gets its own platform's image of a multi-platform
  source (platforms.best_match on its probed `uname -m`), under the same tag; a host whose
  platform the source lacks keeps the first one and is refused by the engine's platform
  check with one line naming what the source offers.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import IO, Any, TypeVar

from distrib import archivemembers, imagearchive, local, platforms
from distrib.archive import LocalImage
from distrib.codecs import CODECS
from distrib.errors import LocalError
from distrib.refs import ImageRef
from distrib.units import human_bytes

_J = TypeVar("_J")


def image_of(ref: ImageRef, archived: imagearchive.ArchivedImage) -> LocalImage:
    """`ref` as the archive holds it: its first platform, the others as alternates."""
    variants = [
        LocalImage(
            ref,
            v.config,
            v.diff_ids,
            v.size,
            v.fingerprint,
            "",
            v.platform,
            origin=archived.file,
        )
        for v in archived.variants
    ]
    return replace(variants[0], alternates=tuple(variants[1:]))


def local_images(plays: Sequence[Any], out: IO[str] | None = None) -> dict[ImageRef, LocalImage]:
    """Every archived image of `plays` (specs with `archived`), each reference once, and
    one line per image saying where it comes from."""
    found: dict[ImageRef, LocalImage] = {}
    for play in plays:
        for spec in play.images:
            if spec.archived is None or spec.ref in found or getattr(play, "local_load", False):
                continue
            found[spec.ref] = image_of(spec.ref, spec.archived)
            if out is not None:
                print(
                    f"{spec.ref}: from {spec.archived.file} ({spec.archived.describe()}; "
                    "read into the layer store, not into the local docker)",
                    file=out,
                )
    return found


def missing_hint(ref: ImageRef) -> str | None:
    """`distrib push app.tar.zst HOST`: the word named a file, not an image (an archive is
    named with --images-from); None when it names no image archive."""
    if ref.tag == "latest" and not ref.digest and imagearchive.is_archive(ref.name):
        return f"{ref.name} is an image archive: ship it with --images-from {ref.name}"
    return None


# -- multi-platform sources: each host its own platform's image --------------------------------


def for_host(image: LocalImage, host: platforms.Platform | None) -> LocalImage:
    """The image of a multi-platform source for a host of platform `host` (the first one
    when none runs there: the engine then refuses the host, naming what is offered)."""
    if not image.alternates:
        return image
    candidates = [replace(image, alternates=()), *image.alternates]
    index = platforms.best_match([c.platform for c in candidates], host)
    chosen = candidates[index or 0]
    return replace(chosen, alternates=tuple(c for c in candidates if c is not chosen))


def host_platform(facts: Any) -> platforms.Platform | None:
    return platforms.Platform.of_host(getattr(facts, "arch", "") or "") if facts else None


def is_multi_platform(images: Sequence[LocalImage]) -> bool:
    return any(i.alternates for i in images)


def host_jobs(
    hosts: Sequence[str],
    images: tuple[LocalImage, ...],
    facts: Mapping[str, Any],
    codecs: Mapping[str, str],
    codec: str,
    make: Callable[[str, tuple[LocalImage, ...]], _J],
) -> tuple[_J, dict[str, _J]]:
    """(the play's job, host -> its own job where it differs): one job per codec and
    platform's images, made once each (`make(codec, images)`). The play's job is for the
    platform most hosts have."""
    chosen = {h: tuple(for_host(i, host_platform(facts.get(h))) for i in images) for h in hosts}
    counts: dict[tuple[LocalImage, ...], int] = {}
    for picked in chosen.values():
        counts[picked] = counts.get(picked, 0) + 1
    default = max(counts, key=lambda k: counts[k]) if counts else images
    made: dict[tuple[str, tuple[LocalImage, ...]], _J] = {}

    def job(job_codec: str, picked: tuple[LocalImage, ...]) -> _J:
        if (job_codec, picked) not in made:
            made[(job_codec, picked)] = make(job_codec, picked)
        return made[(job_codec, picked)]

    main = job(codec, default)
    others = {}
    for h in hosts:
        key = (codecs.get(h, codec), chosen[h])
        if key != (codec, default):
            others[h] = job(*key)
    return main, others


# -- the layer store ----------------------------------------------------------------------------


def store_codec(codec: str) -> str:
    """The layer store an xz/none play's archive images are read into (zstd: cheapest)."""
    if CODECS[codec].blob_suffix:  # a codec the store keeps
        return codec
    return "zstd" if local.which("zstd") else "gzip"


def fill(store: Any, images: Sequence[LocalImage], out: IO[str] | None = None) -> None:
    """Read what `store` lacks of the archived `images` from their archives (one pass over
    each file), before any host is sent anything. An archive whose layers are not what its
    configs list is an error naming the file."""
    by_file: dict[str, list[LocalImage]] = {}
    for image in images:
        if image.origin and not store.has(image):
            by_file.setdefault(image.origin, []).append(image)
    for path, wanted_images in by_file.items():
        if all(store.has(i) for i in wanted_images):  # another archive held them too
            continue
        configs = {i.id for i in wanted_images}
        variants = [v for a in imagearchive.read(path) for v in a.variants if v.config in configs]
        wanted = imagearchive.wanted_members(
            variants,
            lambda d: os.path.exists(store.config_path(d)),
            lambda d: store.blob(d) is not None,
        )
        started = time.monotonic()
        try:
            with archivemembers.members(path, set(wanted)) as found:
                added = store.import_members(found, wanted)
        except LocalError as exc:
            raise imagearchive.error_in(path, exc) from None
        lacking = [str(i.ref) for i in wanted_images if not store.has(i)]
        if lacking:
            raise LocalError(
                f"{path}: the layers or config of {', '.join(lacking)} were not found in it",
                hint="the archive is incomplete; nothing was sent",
            )
        if out is not None:
            print(
                f"read {len(wanted)} blob(s) of {path} into the layer store "
                f"({human_bytes(added)} newly compressed, {time.monotonic() - started:.1f}s)",
                file=out,
            )


def with_sizes(store: Any, images: tuple[LocalImage, ...]) -> tuple[LocalImage, ...]:
    """Archived images with their unpacked size (the sum of their raw layers, known once
    stored: the archive may hold them compressed), for the hosts' disk preflight."""
    out = []
    for image in images:
        blobs = [store.blob(d) for d in image.diff_ids] if image.origin else []
        if blobs and all(b is not None for b in blobs):
            image = replace(image, size=sum(b.raw_size for b in blobs))
        out.append(image)
    return tuple(out)


def producer(
    images: Sequence[LocalImage], make_store: Callable[[], Any]
) -> Callable[[], Iterator[bytes]] | None:
    """A whole archive's uncompressed bytes from the layer store when some image is in no
    engine, or there under a private tag only (a platform's pull), so that `docker save`
    would name it wrongly (archive.prepare's `producer`); None: `docker save` them."""
    if not any(i.origin or i.save_as for i in images):
        return None

    def produce() -> Iterator[bytes]:
        store = make_store()
        fill(store, images)
        return iter(store.raw_archive(images))

    return produce


def load_local(plays: Sequence[Any], out: IO[str] | None = None) -> None:
    """`local_load: true` (the user asks): the workstation's docker loads the archived images
    of those plays (for an OCI index, the workstation's platform), as a docker-archive made
    from the layer store (so every archive kind loads, on every docker, named as the play
    names it); they then ship from the engine as any local image."""
    from distrib import archive as archive_mod
    from distrib.layerstore import LayerStore

    images: dict[ImageRef, LocalImage] = {}
    for play in plays:
        if getattr(play, "local_load", False):
            for spec in play.images:
                if spec.archived is not None:
                    images.setdefault(spec.ref, image_of(spec.ref, spec.archived))
    if not images:
        return
    machine = platforms.Platform.of_host(os.uname().machine)
    chosen = [for_host(i, machine) for i in images.values()]
    store = LayerStore(codec=store_codec("none"))
    fill(store, chosen, out)
    argv = [*archive_mod.docker_command(), "load"]
    if out is not None:
        names = ", ".join(str(i.ref) for i in chosen)
        print(f"loading {names} into the local docker (local_load)", file=out, flush=True)
    with tempfile.TemporaryFile() as output:
        proc = local.spawn(argv, stdin=local.PIPE, stdout=output, stderr=output)
        assert proc.stdin is not None
        try:
            for block in store.raw_archive(chosen):
                proc.stdin.write(block)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            output.seek(0)
            raise LocalError(
                "docker load (local_load) failed",
                cmd=argv,
                stderr=output.read().decode("utf-8", "replace"),
            )
