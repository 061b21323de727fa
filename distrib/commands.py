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

ARCHIVE_NAME = "images"


def q(arg: str) -> str:
    return shlex.quote(arg)


def join(argv: Sequence[str]) -> str:
    return " ".join(q(a) for a in argv)


# --- host facts --------------------------------------------------------------------------------

TOOLS = ("zstd", "pigz", "gzip", "xz", "sha256sum")


def probe(docker: Sequence[str], remote_tmp: str) -> str:
    """One read-only round trip: engine version, its data root and the free space there and
    where archives are staged, and the helper tools present. Changes nothing on the host."""
    version = join([*docker, "version", "--format", "{{.Server.Version}}"])
    root = join([*docker, "info", "--format", "{{.DockerRootDir}}"])
    tools = " ".join(TOOLS)
    # df of the nearest existing ancestor: the staging dir may not exist yet (check mode).
    return (
        f"printf 'engine_version=%s\\n' \"$({version} 2>/dev/null)\"; "
        f"r=\"$({root} 2>/dev/null)\"; printf 'docker_root=%s\\n' \"$r\"; "
        "[ -n \"$r\" ] && df -Pk -- \"$r\" 2>/dev/null | awk 'NR==2{print \"root_avail_kb=\"$4}'; "
        f"p={q(remote_tmp)}; while [ ! -d \"$p\" ]; do p=$(dirname -- \"$p\"); done; "
        "df -Pk -- \"$p\" 2>/dev/null | awk 'NR==2{print \"tmp_avail_kb=\"$4}'; "
        f'for t in {tools}; do command -v "$t" >/dev/null 2>&1 && echo "has_$t=1"; done; '
        "true"
    )


@dataclass(frozen=True)
class Facts:
    engine_version: str
    tools: frozenset[str]
    docker_root: str = ""
    root_avail: int | None = None  # bytes free in the engine's data root (None: unknown)
    tmp_avail: int | None = None  # bytes free where archives are staged (None: unknown)

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

    def kib(key: str) -> int | None:
        value = values.get(key, "")
        return int(value) * 1024 if value.isdigit() else None

    return Facts(
        values.get("engine_version", ""),
        tools,
        values.get("docker_root", ""),
        kib("root_avail_kb"),
        kib("tmp_avail_kb"),
    )


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


# --- staging: private temp dir, upload (resumable), checksum, load, cleanup -------------------
#
# The staging dir is named after the archive's sha256, so that an upload cut off by a lost
# connection (when nothing can be cleaned up) is found and resumed by the next run. It is
# private: created 0700 by us; an existing one is used only if it is ours, not a symlink, and
# not accessible to others. Stale ones (a day old) are removed when a new one is made.

STAGING_PREFIX = "distrib."
RESUME_STALE_MINUTES = 24 * 60


def staging_dir(remote_tmp: str, sha256: str) -> str:
    return f"{remote_tmp.rstrip('/') or ''}/{STAGING_PREFIX}{sha256[:24]}"


def make_staging(remote_tmp: str, sha256: str, part: str) -> str:
    """Create (or re-open, if ours) the private staging dir; print the bytes already in `part`."""
    base = q(remote_tmp)
    d = q(staging_dir(remote_tmp, sha256))
    stale = (
        f"find {base} -maxdepth 1 -name {q(STAGING_PREFIX + '*')} -user \"$(id -u)\" "
        f"-mmin +{RESUME_STALE_MINUTES} -exec rm -rf -- {{}} + 2>/dev/null; "
    )
    return (
        f"umask 077 && mkdir -p -- {base} && {{ {stale}true; }} && "
        f"if mkdir -- {d} 2>/dev/null; then :; "
        f"elif [ -d {d} ] && [ ! -L {d} ] && [ -O {d} ] && "
        f"[ -z \"$(find {d} -maxdepth 0 -perm /077)\" ]; then touch -- {d}; "
        f"else echo 'staging dir exists and is not private to this user' >&2; exit 3; fi && "
        f"printf 'partial=%s\\n' \"$(stat -c %s -- {q(part)} 2>/dev/null || echo 0)\""
    )


def parse_staging(stdout: str) -> int:
    """Bytes already present in the partial file (0 when none)."""
    for line in stdout.splitlines():
        if line.startswith("partial="):
            value = line[len("partial=") :].strip()
            return int(value) if value.isdigit() else 0
    raise ValueError(f"unexpected staging output {stdout!r}")


def prefix_sha256(path: str, nbytes: int) -> str:
    """sha256 of the first `nbytes` of `path` (to check a partial upload before resuming)."""
    return f"head -c {int(nbytes)} -- {q(path)} | sha256sum"


def receive(path: str, append: bool = False) -> str:
    """Write stdin to `path` (the caller streams the archive into it), or append to it."""
    return f"umask 077 && cat {'>>' if append else '>'} {q(path)}"


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


def remove(path: str) -> str:
    return f"rm -f -- {q(path)}"


def stream_load(docker: Sequence[str], codec: str) -> str:
    """Load straight from stdin, no temp file (when staging space is short, or asked for).

    docker 20.10 reads gzip/xz itself but not zstd: decompress on the host. Integrity comes
    from the verification after loading: image IDs and layer diffIDs are content digests.
    """
    if codec == "zstd":
        return f"zstd -dc | {join([*docker, 'load'])}"
    return join([*docker, "load"])


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
    """Remove our staging dir; refuses anything that is not one of ours."""
    if f"/{STAGING_PREFIX}" not in tempdir:
        raise ValueError(f"refusing to remove {tempdir!r}")
    return f"rm -rf -- {q(tempdir)}"
