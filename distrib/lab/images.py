"""Test images built in the workstation's docker with no registry: busybox rootfs + real files."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from distrib import local
from distrib.errors import LabError, LocalError
from distrib.lab import config, procs
from distrib.lab.teardown import WORKSTATION_SOCKET, require_environment

BASE = "distrib/busybox:latest"
BUILD_ENV = {"DOCKER_BUILDKIT": "0"}  # the classic builder: no buildx plugin needed here
MB = 1024 * 1024
FIXED_MTIME = 1_700_000_000  # a constant mtime keeps the rootfs tar byte-identical between runs

INDEX_HTML = """<!doctype html>
<html><head><title>demo/web</title></head>
<body><h1>demo/web 1.0</h1><p>Served from an image distributed by distrib.</p></body></html>
"""


@dataclass(frozen=True)
class LayerSpec:
    """One COPY layer: up to `budget` bytes of regular files from `sources`, placed at `target`."""

    target: str
    sources: tuple[str, ...]
    budget: int
    suffixes: tuple[str, ...] = ()  # only files with these endings ('' = any)


@dataclass(frozen=True)
class ImageSpec:
    """A demo image: `tag` = busybox base + `layers` (+ optional small extra files)."""

    tag: str
    layers: tuple[LayerSpec, ...]
    extra_files: tuple[tuple[str, str], ...] = ()  # (path in image, text)
    tier: str = ""  # "": always built; "bench": with --bench; "huge": with --huge


PY_STDLIB = ("/usr/lib/python3.11", "/usr/lib/python3")

IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec(
        "demo/web:1.0",
        (LayerSpec("/srv/web/lib", PY_STDLIB, 4 * MB, (".py",)),),
        extra_files=(("/srv/web/index.html", INDEX_HTML),),
    ),
    ImageSpec(
        "demo/worker:1.0",
        (LayerSpec("/opt/worker/share", ("/usr/share/perl", "/usr/share/perl5"), 4 * MB),),
        extra_files=(("/opt/worker/run.sh", "#!/bin/sh\necho worker ready\n"),),
    ),
    ImageSpec(
        "demo/big:1.0",
        (
            LayerSpec("/opt/big/lib", ("/usr/lib/x86_64-linux-gnu",), 300 * MB),
            LayerSpec("/opt/big/python", PY_STDLIB, 100 * MB),
            LayerSpec("/opt/big/share", ("/usr/share",), 100 * MB),
        ),
        tier="bench",
    ),
    # ~2 GB of real files: the orchestrator's memory is measured distributing it (issue 5)
    ImageSpec(
        "demo/huge:1.0",
        (
            LayerSpec("/opt/huge/lib", ("/usr/lib",), 1000 * MB),
            LayerSpec("/opt/huge/share", ("/usr/share",), 550 * MB),
            LayerSpec("/opt/huge/bin", ("/usr/libexec", "/usr/bin", "/usr/sbin"), 450 * MB),
        ),
        tier="huge",
    ),
)


@dataclass(frozen=True)
class BuiltImage:
    """An image `images` produced or found: tag, size in bytes, whether it was (re)built now."""

    tag: str
    size: int
    built: bool


# `env` below: where `docker` points. Empty: the workstation's system docker; a lab's
# `up --workstation` engine gives DOCKER_HOST and PATH (LabState.workstation_env).
Env = Mapping[str, str]


def _docker(args: Sequence[str], env: Env, *, what: str, input: bytes | None = None,
            timeout: float = 1800) -> local.Completed:  # fmt: skip
    try:
        return local.run(["docker", *args], input=input, env={**env, **BUILD_ENV},
                         timeout=timeout, what=what)  # fmt: skip
    except LocalError as exc:
        raise LabError(str(exc)) from None


def image_size(tag: str, env: Env | None = None) -> int | None:
    """Size in bytes of local image `tag`, or None if the workstation does not have it."""
    out = local.run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], check=False,
                    env=env or None)  # fmt: skip
    return int(out.stdout.strip()) if out.ok and out.stdout.strip().isdigit() else None


def busybox_rootfs_tar(busybox: str, applets: Sequence[str]) -> bytes:
    """A minimal rootfs tar: static busybox, an applet symlink each in /bin, /etc, /tmp."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, FIXED_MTIME
            tar.addfile(info)

        def add_text(name: str, text: str, mode: int = 0o644) -> None:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "etc", "root", "var", "srv", "opt", "usr", "usr/bin", "proc", "sys",
                  "dev"):  # fmt: skip
            add_dir(d, 0o700 if d == "root" else 0o755)
        add_dir("tmp", 0o1777)
        add_dir("var/tmp", 0o1777)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = os.path.getsize(busybox), 0o755, FIXED_MTIME
        with open(busybox, "rb") as fh:
            tar.addfile(info, fh)
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "busybox", FIXED_MTIME
            tar.addfile(link)
        add_text("etc/passwd", config.busybox_passwd())
        add_text("etc/group", config.busybox_group())
        add_text("etc/hostname", "busybox\n")
    return buf.getvalue()


def _pick_files(spec: LayerSpec) -> Iterator[Path]:
    """Regular files of `spec.sources` in sorted order (deterministic) until the budget."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for source in spec.sources:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if spec.suffixes and not name.endswith(spec.suffixes):
                    continue
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if not path.is_file() or path.is_symlink() or (st.st_dev, st.st_ino) in seen:
                    continue
                if not os.access(path, os.R_OK) or st.st_size == 0:
                    continue
                if total + st.st_size > spec.budget:
                    if total >= spec.budget * 0.98:
                        return
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
                yield path


def _stage(spec: LayerSpec, dest: Path) -> int:
    """Place the layer's files under `dest` (hard links when possible: no 500 MB copy)."""
    count = 0
    for path in _pick_files(spec):
        rel = next(path.relative_to(s) for s in spec.sources if path.is_relative_to(s))
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue  # the same relative path from two sources: first one wins
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        count += 1
    if count == 0:
        raise LabError(f"no files found for layer {spec.target} in {', '.join(spec.sources)}")
    return count


def dockerfile(spec: ImageSpec) -> str:
    """The Dockerfile text of a demo image (one COPY per layer, extra files last)."""
    lines = [f"FROM {BASE}"]
    for i, layer in enumerate(spec.layers):
        lines.append(f"COPY layer{i}/ {layer.target}/")
    if spec.extra_files:
        lines.append("COPY extra/ /")
    lines.append(f'LABEL org.opencontainers.image.title="{spec.tag}"')
    lines.append('CMD ["/bin/sh"]')
    return "\n".join(lines) + "\n"


def _build_base(rebuild: bool, env: Env) -> BuiltImage:
    size = image_size(BASE, env)
    if size is not None and not rebuild:
        return BuiltImage(BASE, size, built=False)
    busybox = local.which("busybox")
    if busybox is None:
        raise LabError("busybox is missing", hint="apt-get install busybox-static")
    applets = config.parse_busybox_applets(local.run([busybox, "--list"]).stdout)
    tar = busybox_rootfs_tar(os.path.realpath(busybox), applets)
    _docker(["import", "--change", 'CMD ["/bin/sh"]', "-", BASE], env, input=tar,
            what="docker import")  # fmt: skip
    return BuiltImage(BASE, image_size(BASE, env) or 0, built=True)


def _build_image(spec: ImageSpec, scratch: Path, rebuild: bool, env: Env) -> BuiltImage:
    size = image_size(spec.tag, env)
    if size is not None and not rebuild:
        return BuiltImage(spec.tag, size, built=False)
    ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=scratch))
    try:
        for i, layer in enumerate(spec.layers):
            _stage(layer, ctx / f"layer{i}")
        for path, text in spec.extra_files:
            dest = ctx / "extra" / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            os.utime(dest, (FIXED_MTIME, FIXED_MTIME))
            if path.endswith(".sh"):
                dest.chmod(0o755)
        (ctx / "Dockerfile").write_text(dockerfile(spec))
        _docker(["build", "-q", "-t", spec.tag, str(ctx)], env, what=f"docker build {spec.tag}")
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return BuiltImage(spec.tag, image_size(spec.tag, env) or 0, built=True)


def build_images(
    *,
    bench: bool = False,
    huge: bool = False,
    rebuild: bool = False,
    scratch: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[BuiltImage]:
    """Build the demo images in the workstation's docker (skipping tags that exist).

    `scratch` holds the temporary build contexts; on the same filesystem as /usr the files
    are hard-linked instead of copied. `env` (LabState.workstation_env()): build in the lab's
    workstation engine instead (its DOCKER_HOST and client first on PATH).
    """
    require_environment()
    host = (env or {}).get("DOCKER_HOST", "")
    socket = host.removeprefix("unix://") if host else WORKSTATION_SOCKET
    if not procs.docker_ping(socket):
        raise LabError(f"the workstation's dockerd does not answer on {socket}",
                       hint="distrib lab up")  # fmt: skip
    scratch_dir = Path(scratch) if scratch else Path("/var/tmp")
    scratch_dir.mkdir(parents=True, exist_ok=True)
    target = dict(env or {})
    built = [_build_base(rebuild, target)]
    for spec in IMAGES:
        if (spec.tier == "bench" and not bench) or (spec.tier == "huge" and not huge):
            continue
        built.append(_build_image(spec, scratch_dir, rebuild, target))
    return built
