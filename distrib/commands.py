"""Remote commands and their parsers, side by side (STYLE: command and parser as a pair).

Pure: nothing here runs anything. Every argument that reaches a remote shell goes through
`shlex.quote`, even ones already validated (image references, paths we generated).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from distrib.refs import ImageRef

ARCHIVE_NAME = "images.tar"


def q(arg: str) -> str:
    return shlex.quote(arg)


def join(argv: Sequence[str]) -> str:
    return " ".join(q(a) for a in argv)


# --- host facts --------------------------------------------------------------------------------

TOOLS = ("zstd", "pigz", "gzip", "xz", "sha256sum")


def probe(docker: Sequence[str]) -> str:
    """One round trip that reports the engine version and the helper tools present."""
    version = join([*docker, "version", "--format", "{{.Server.Version}}"])
    tools = " ".join(TOOLS)
    return (
        f"printf 'engine_version=%s\\n' \"$({version} 2>/dev/null)\"; "
        f'for t in {tools}; do command -v "$t" >/dev/null 2>&1 && echo "has_$t=1"; done; '
        "true"
    )


@dataclass(frozen=True)
class Facts:
    engine_version: str
    tools: frozenset[str]

    @property
    def engine_ok(self) -> bool:
        return bool(self.engine_version)

    def has(self, tool: str) -> bool:
        return tool in self.tools


def parse_probe(stdout: str) -> Facts:
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    tools = frozenset(k[4:] for k, v in values.items() if k.startswith("has_") and v == "1")
    return Facts(values.get("engine_version", ""), tools)


# --- image listing (probe before shipping, verify after loading) ------------------------------

LIST_FORMAT = "{{.Repository}}:{{.Tag}}\t{{.ID}}"


def list_images(docker: Sequence[str], refs: Iterable[ImageRef]) -> str:
    """A filtered `docker images` listing: one line `repo:tag<TAB>sha256:...` per match.

    Several `--filter reference=` are OR-ed by docker. Exact references only: a glob in a
    filter does not cross '/' (DESIGN.md), and grep would match substrings.
    """
    argv = [*docker, "images", "--no-trunc", "--format", LIST_FORMAT]
    for ref in refs:
        argv += ["--filter", f"reference={ref.familiar}"]
    return join(argv)


def parse_image_list(stdout: str) -> dict[str, str]:
    """`repo:tag -> image id` from `list_images` output (untagged `<none>` lines dropped)."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        name, sep, image_id = line.strip().partition("\t")
        if not sep or "<none>" in name:
            continue
        found[name] = image_id.strip()
    return found


def inspect_layers(docker: Sequence[str], refs: Iterable[str]) -> str:
    """For each ref: `ref<TAB>["sha256:..",..]`, or `ref<TAB>null` when the host lacks it."""
    inspect = join([*docker, "image", "inspect", "--format", "{{json .RootFS.Layers}}", "--"])
    parts = [
        f"printf '%s\\t' {q(ref)}; {inspect} {q(ref)} 2>/dev/null || echo null" for ref in refs
    ]
    return "; ".join(parts)


def parse_inspect_layers(stdout: str) -> dict[str, tuple[str, ...]]:
    """`ref -> diffIDs` from `inspect_layers` output; refs the host lacks are left out."""
    out: dict[str, tuple[str, ...]] = {}
    for line in stdout.splitlines():
        ref, sep, layers = line.partition("\t")
        if not sep:
            continue
        try:
            parsed = json.loads(layers)
        except ValueError:
            continue
        if isinstance(parsed, list):
            out[ref.strip()] = tuple(str(x) for x in parsed)
    return out


# --- local image identity ---------------------------------------------------------------------

INSPECT_FORMAT = "{{.Id}}\t{{json .RootFS.Layers}}\t{{.Size}}"


def parse_inspect_line(line: str) -> tuple[str, tuple[str, ...], int]:
    """`id<TAB>["sha256:..",..]<TAB>size` -> (id, diff_ids, size)."""
    image_id, layers, size = line.strip().split("\t")
    return image_id, tuple(json.loads(layers) or ()), int(size)


# --- staging: private temp dir, upload, checksum, load, cleanup --------------------------------


def make_tempdir(remote_tmp: str) -> str:
    """Create a private (0700) directory under `remote_tmp`, print its path."""
    base = q(remote_tmp)
    return f"umask 077 && mkdir -p -- {base} && mktemp -d -- {base}/distrib.XXXXXXXXXX"


def parse_tempdir(stdout: str, remote_tmp: str) -> str:
    path = stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""
    if not path.startswith(remote_tmp.rstrip("/") + "/distrib."):
        raise ValueError(f"unexpected mktemp output {stdout!r}")
    return path


def receive(path: str) -> str:
    """Write stdin to `path` (the caller streams the archive into it)."""
    return f"umask 077 && cat > {q(path)}"


def sha256(path: str) -> str:
    return f"sha256sum -- {q(path)}"


def parse_sha256(stdout: str) -> str:
    digest = stdout.strip().split(" ", 1)[0] if stdout.strip() else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"unexpected sha256sum output {stdout!r}")
    return digest


def promote(part: str, final: str) -> str:
    """The complete, verified file appears under its final name only now."""
    return f"mv -f -- {q(part)} {q(final)}"


def load(docker: Sequence[str], path: str, codec: str) -> str:
    """Load an archive. docker 20.10 reads gzip/xz/bzip2 itself but not zstd: pipe zstd -dc."""
    if codec == "zstd":
        return f"zstd -dc -- {q(path)} | {join([*docker, 'load'])}"
    return join([*docker, "load", "-i", path])


def parse_loaded(stdout: str) -> list[str]:
    """Names from `docker load` output ('Loaded image: x:y' / 'Loaded image ID: sha256:..')."""
    out = []
    for line in stdout.splitlines():
        for prefix in ("Loaded image: ", "Loaded image ID: "):
            if line.startswith(prefix):
                out.append(line[len(prefix) :].strip())
    return out


def cleanup(tempdir: str) -> str:
    """Remove our private temp dir; refuses anything that is not one of ours."""
    if "/distrib." not in tempdir:
        raise ValueError(f"refusing to remove {tempdir!r}")
    return f"rm -rf -- {q(tempdir)}"
