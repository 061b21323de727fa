"""Remote commands and their parsers, side by side (STYLE: command and parser as a pair).

Pure: nothing here runs anything. Every argument that reaches a remote shell goes through
`shlex.quote`, even ones already validated (image references, paths we generated).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from distrib.refs import ImageRef

ARCHIVE_NAME = "images"


def q(arg: str) -> str:
    return shlex.quote(arg)


def join(argv: Sequence[str]) -> str:
    return " ".join(q(a) for a in argv)


# --- host facts --------------------------------------------------------------------------------

TOOLS = ("zstd", "pigz", "gzip", "xz", "sha256sum")
DOCKER_INFO_FORMAT = "{{.DockerRootDir}}{{println}}{{.Driver}} {{json .DriverStatus}}"
# docker's image store (issue 14): the containerd image store (docker 26+ with the
# containerd-snapshotter feature, the default of docker 29) runs a containerd snapshotter as
# its "driver" (`overlayfs [["driver-type","io.containerd.snapshotter.v1"]]`); the classic
# store a graph driver (`overlay2 [["Backing Filesystem","extfs"],...]`).
CONTAINERD_STORE = "containerd"
CLASSIC_STORE = "classic"


def probe(docker: Sequence[str], remote_tmp: str) -> str:
    """One read-only round trip: engine version, its data root and the free space there and
    where archives are staged, and the helper tools present. Changes nothing on the host."""
    version = join([*docker, "version", "--format", "{{.Server.Version}}"])
    # one `docker info`: the data root (line 1) and the storage driver with its status (line
    # 2), which names the containerd snapshotter on the containerd image store (issue 14)
    info = join([*docker, "info", "--format", DOCKER_INFO_FORMAT])
    tools = " ".join(TOOLS)
    # df of the nearest existing ancestor: the staging dir may not exist yet (check mode).
    return (
        f"printf 'engine_version=%s\\n' \"$({version} 2>/dev/null)\"; "
        f'i="$({info} 2>/dev/null)"; r="$(printf \'%s\\n\' "$i" | sed -n 1p)"; '
        "printf 'docker_root=%s\\n' \"$r\"; "
        "printf 'docker_driver=%s\\n' \"$(printf '%s\\n' \"$i\" | sed -n 2p)\"; "
        '[ -n "$r" ] && df -Pk -- "$r" 2>/dev/null | awk \'NR==2{print "root_avail_kb="$4}\'; '
        f'p={q(remote_tmp)}; while [ ! -d "$p" ]; do p=$(dirname -- "$p"); done; '
        'df -Pk -- "$p" 2>/dev/null | awk \'NR==2{print "tmp_avail_kb="$4}\'; '
        f'for t in {tools}; do command -v "$t" >/dev/null 2>&1 && echo "has_$t=1"; done; '
        f"{ARCH_LINE}; true"
    )


# the host's machine (issue 18, item 3: platforms): the kernel's name, normalised by
# distrib.platforms (x86_64 -> amd64); the same line in every engine's probe
ARCH_LINE = "printf 'arch=%s\\n' \"$(uname -m 2>/dev/null)\""


@dataclass(frozen=True)
class Facts:
    engine_version: str
    tools: frozenset[str]
    docker_root: str = ""
    root_avail: int | None = None  # bytes free in the engine's data root (None: unknown)
    tmp_avail: int | None = None  # bytes free where archives are staged (None: unknown)
    engine: str = "docker"  # docker | podman | containerd (distrib.engines)
    store: str = ""  # docker's image store: containerd | classic ("" when not docker, unknown)
    arch: str = ""  # `uname -m` ("" when the probe did not say)

    @property
    def engine_ok(self) -> bool:
        return bool(self.engine_version)

    @property
    def label(self) -> str:
        """`docker 28.5.2, containerd store`, `docker 20.10.24`, `podman 4.3.1`: what each
        host's outcome line names (the classic store, docker's long-time default, is not)."""
        text = f"{self.engine} {self.engine_version}".strip()
        return f"{text}, containerd store" if self.store == CONTAINERD_STORE else text

    def has(self, tool: str) -> bool:
        return tool in self.tools

    @property
    def engine_major(self) -> int:
        head = self.engine_version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    def engine_reads(self, codec: str) -> bool:
        """Whether `docker load` reads `codec` itself (zstd: docker 23 and newer; DESIGN.md:
        20.10 does not). podman reads plain and zstd, containerd plain only (engines.py)."""
        if self.engine != "docker":
            from distrib.engines import engine_reads

            return engine_reads(self.engine, codec, False)
        if codec == "zstd":
            return self.engine_major >= 23
        return True

    def can_decode(self, codec: str) -> bool:
        """Whether this host can load a `codec` archive at all (itself, or through a tool)."""
        return self.engine_reads(codec) or self.has(codec if codec != "gzip" else "gzip")


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
        values.get("engine") or "docker",
        docker_store(values.get("docker_driver", "")),
        values.get("arch", ""),
    )


def docker_store(driver: str) -> str:
    """The image store from `{{.Driver}} {{json .DriverStatus}}` ("" when not answered)."""
    if not driver.strip():
        return ""
    return CONTAINERD_STORE if "io.containerd.snapshotter" in driver else CLASSIC_STORE


# --- local image identity ---------------------------------------------------------------------

# What identifies an image is its config (DESIGN.md; issue 14): the classic store's image ID is
# the config digest, but the containerd image store (docker 26+ with containerd-snapshotter,
# the default of docker 29) shows a manifest digest as `.Id` (and then a `.Descriptor`), and
# `docker image inspect` there shows no config digest at all. Where the digest cannot be had in
# one command, the *fingerprint* stands in: a hash of the config fields inspect shows on every
# engine (runtime config, platform, creation time, author, diffIDs), equal exactly when those
# are. `{{index . "X"}}` renders missing keys as empty on every docker version (`.X` fails).
INSPECT_FORMAT = (
    "{{.Id}}\t{{json .RootFS.Layers}}\t{{.Size}}"
    '\t{{with index . "Descriptor"}}{{.digest}}{{end}}'
    '\t{{json .Config}}\t{{.Architecture}}\t{{.Os}}\t{{index . "Variant"}}'
    "\t{{.Created}}\t{{.Author}}"
)
# The runtime config keys compared (docker's container config; podman and docker 28 omit empty
# ones, docker 20.10 shows every key: an empty value counts as absent).
FINGERPRINT_KEYS = (
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Healthcheck", "ArgsEscaped",
    "Volumes", "WorkingDir", "Labels", "StopSignal", "StopTimeout", "Shell", "OnBuild",
)  # fmt: skip


@dataclass(frozen=True)
class Inspected:
    """One image as `docker image inspect --format INSPECT_FORMAT` describes it."""

    id: str  # the engine's image ID: config digest (classic), manifest digest (containerd)
    diff_ids: tuple[str, ...]
    size: int
    descriptor: str = ""  # the containerd store's manifest/index digest ("" on classic)
    fingerprint: str = ""
    platform: tuple[str, str, str] = ("", "", "")  # the config's (os, architecture, variant)

    @property
    def containerd_store(self) -> bool:
        return bool(self.descriptor)


def config_fingerprint(
    config: object,
    architecture: str,
    os_name: str,
    variant: str,
    created: str,
    author: str,
    diff_ids: Sequence[str],
) -> str:
    """sha256 of the runtime config (FINGERPRINT_KEYS, empty values dropped), the platform,
    the creation time, the author and the diffIDs: the identity where no config digest is
    shown (the containerd store). `created` is cut to whole seconds: engines print it with
    different fractional digits."""
    runtime = config if isinstance(config, dict) else {}
    kept = {
        k: runtime[k] for k in FINGERPRINT_KEYS if runtime.get(k) not in (None, "", [], {}, False)
    }
    doc = {
        "config": kept,
        "platform": [architecture, os_name, "" if variant in ("<no value>", "") else variant],
        "created": created.split(".")[0].rstrip("Z"),
        "author": author,
        "diff_ids": list(diff_ids),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return "fp:" + hashlib.sha256(text.encode()).hexdigest()


def config_fingerprint_of(config_json: bytes) -> str:
    """The fingerprint of an image from its config blob (what `config_fingerprint` sees)."""
    doc = json.loads(config_json)
    rootfs = doc.get("rootfs") or {}
    return config_fingerprint(
        doc.get("config") or {},
        str(doc.get("architecture") or ""),
        str(doc.get("os") or ""),
        str(doc.get("variant") or ""),
        str(doc.get("created") or ""),
        str(doc.get("author") or ""),
        [str(d) for d in rootfs.get("diff_ids") or ()],
    )


def parse_inspect(line: str) -> Inspected:
    """One INSPECT_FORMAT line (older callers' 3-field lines still parse)."""
    fields = line.rstrip("\n").split("\t")
    image_id, layers, size = fields[0].strip(), fields[1], fields[2]
    diff_ids = tuple(json.loads(layers) or ())
    if len(fields) < 5:  # a short line: no config fields asked for
        return Inspected(image_id, diff_ids, int(size))
    fields += [""] * (10 - len(fields))  # trailing empty fields may have been stripped
    descriptor, config, arch, os_name, variant, created, author = fields[3:10]
    try:
        parsed_config = json.loads(config) if config.strip() else {}
    except ValueError:
        parsed_config = {}
    fingerprint = config_fingerprint(
        parsed_config, arch, os_name, variant, created, author, diff_ids
    )
    # docker 20.10 renders a config without `variant` as "<no value>"
    shown = ["" if v.strip() == "<no value>" else v.strip() for v in (os_name, arch, variant)]
    platform = (shown[0], shown[1], shown[2])
    return Inspected(image_id, diff_ids, int(size), descriptor.strip(), fingerprint, platform)


def parse_inspect_line(line: str) -> tuple[str, tuple[str, ...], int]:
    """`id<TAB>["sha256:..",..]<TAB>size...` -> (id, diff_ids, size)."""
    found = parse_inspect(line)
    return found.id, found.diff_ids, found.size


# --- what a host holds under each tag (probe before shipping, verify after loading) ----------
#
# One round trip for all images of a play: `image inspect` of each ref in INSPECT_FORMAT (its
# config digest, or on docker's containerd store its manifest digest and the fingerprint).
# Exact references only (a `--filter reference=` glob does not cross '/', grep matches
# substrings: DESIGN.md). The engine's error is kept, not dropped: only "no such image" means
# missing; a record the format cannot render (the containerd store keeps a tag whose content
# never fully arrived: `map has no entry for key "Layers"`) is there but unusable; anything
# else (the daemon went away, permission denied) is an error, never "missing".

NO_SUCH_IMAGE = ("no such image", "image not known", "no such object")
UNRENDERABLE = ("map has no entry for key", "nil pointer evaluating", "can't evaluate field")


def inspect_images(docker: Sequence[str], refs: Iterable[str], fmt: str = INSPECT_FORMAT) -> str:
    """For each ref a line `ref<TAB>` and its `fmt` line; when the engine fails, then a line
    `ref<TAB>!` and its error, flattened (docker prints an empty line for a missing image
    first: the last line of a ref counts). Only the error is captured; the format's output
    goes straight to stdout."""
    inspect = join([*docker, "image", "inspect", "--format", fmt, "--"])
    flat = "tr '\\t\\n\\r' '   '"
    parts = [
        f"printf '%s\\t' {q(ref)}; "
        f"if {{ e=$({inspect} {q(ref)} 2>&1 >&3 3>&-); }} 3>&1; then :; "
        f"else printf '\\n%s\\t!%s\\n' {q(ref)} \"$(printf '%s' \"$e\" | {flat})\"; fi"
        for ref in refs
    ]
    return "; ".join(parts)


class InspectError(ValueError):
    """The engine could not say what it holds under `ref` (not a missing image)."""

    def __init__(self, ref: str, message: str) -> None:
        super().__init__(f"{ref}: {message}")
        self.ref = ref
        self.message = message


def parse_inspect_images(stdout: str) -> dict[str, Inspected]:
    """`ref -> Inspected` from `inspect_images` output. Refs the host lacks are left out; a
    tag whose record cannot be rendered is an `Inspected` with no id (there, not usable);
    any other engine error raises InspectError."""
    last: dict[str, str] = {}
    for line in stdout.splitlines():
        ref, sep, rest = line.partition("\t")
        if sep and ref.strip():
            last[ref.strip()] = rest
    found: dict[str, Inspected] = {}
    for ref, rest in last.items():
        if rest.startswith("!") or not rest.strip():
            words = rest[1:].strip()
            lowered = words.lower()
            if not words or any(m in lowered for m in NO_SUCH_IMAGE):
                continue
            if any(m in lowered for m in UNRENDERABLE):
                found[ref] = Inspected("", (), 0)
                continue
            raise InspectError(ref, words)
        try:
            seen = parse_inspect(rest)
        except (ValueError, IndexError) as exc:
            raise InspectError(ref, f"unexpected inspect output {rest!r}") from exc
        if seen.id and ":" not in seen.id:  # podman prints the bare hex
            seen = replace(seen, id=f"sha256:{seen.id}")
        found[ref] = seen
    return found


# --- staging: private temp dir, upload (resumable), checksum, load, cleanup -------------------
#
# The staging dir is named after the archive's identity (images + codec), so that an upload
# cut off by a lost connection (when nothing can be cleaned up) is found and resumed by the
# next run. It is private: created 0700 by us; an existing one is used only if it is ours, not
# a symlink, and not accessible to others. Stale ones (a day old) are removed when a new one
# is made.

STAGING_PREFIX = "distrib."
RESUME_STALE_MINUTES = 24 * 60


def staging_dir(remote_tmp: str, key: str) -> str:
    """The staging dir of one archive (`key`: its identity, known before it is built)."""
    return f"{remote_tmp.rstrip('/') or ''}/{STAGING_PREFIX}{key[:24]}"


# remote_tmp itself (issue 19): whoever may rename entries in it may swap our staging dir
# for theirs between the checksum and the load. It must belong to the SSH user or root, and
# be writable by nobody else, unless it is sticky (then only an entry's owner may rename or
# remove it: /tmp, /var/tmp, the default). The same rule as the shell's check in make_staging.


def tmp_problem(owner: int, mode: int, me: int) -> str:
    """What makes a remote_tmp owned by uid `owner` with permission bits `mode` unsafe for
    user `me` ("" when it is safe)."""
    problems = []
    if owner not in (me, 0):
        problems.append(f"it belongs to uid {owner}, not to this user (uid {me}) or root")
    writable = [who for who, bit in (("group", 0o020), ("others", 0o002)) if mode & bit]
    if writable and not mode & 0o1000:
        problems.append(
            f"{' and '.join(writable)} may write to it and it is not sticky (mode {mode:04o})"
        )
    return "; ".join(problems)


class UnsafeTmp(ValueError):
    """remote_tmp may be written by someone else (see tmp_problem)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def make_staging(remote_tmp: str, key: str, part: str) -> str:
    """Check remote_tmp (`tmp=OWNER MODE ME`, and nothing more when unsafe), then create (or
    re-open, if ours) the private staging dir; print the bytes already in `part`."""
    base = q(remote_tmp)
    d = q(staging_dir(remote_tmp, key))
    stale = (
        f'find {base} -maxdepth 1 -name {q(STAGING_PREFIX + "*")} -user "$(id -u)" '
        f"-mmin +{RESUME_STALE_MINUTES} -exec rm -rf -- {{}} + 2>/dev/null; "
    )
    check = (
        f"set -- $(stat -L -c '%u %a' -- {base}) && u=$(id -u) && "
        "printf 'tmp=%s %s %s\\n' \"$1\" \"$2\" \"$u\" && "
        'if { [ "$1" = "$u" ] || [ "$1" = 0 ]; } && '
        "{ [ $((0$2 & 022)) -eq 0 ] || [ $((0$2 & 01000)) -ne 0 ]; }; then :; else exit 0; fi"
    )
    return (
        f"umask 077 && mkdir -p -- {base} && {check} && {{ {stale}true; }} && "
        f"if mkdir -- {d} 2>/dev/null; then :; "
        f"elif [ -d {d} ] && [ ! -L {d} ] && [ -O {d} ] && "
        f'[ -z "$(find {d} -maxdepth 0 -perm /077)" ]; then touch -- {d}; '
        f"else echo 'staging dir exists and is not private to this user' >&2; exit 3; fi && "
        f"printf 'partial=%s\\n' \"$(stat -c %s -- {q(part)} 2>/dev/null || echo 0)\""
    )


def parse_staging(stdout: str) -> int:
    """Bytes already present in the partial file (0 when none). UnsafeTmp when the `tmp=`
    line shows a remote_tmp others may write to (nothing was made in it then)."""
    for line in stdout.splitlines():
        if line.startswith("tmp="):
            words = line[len("tmp=") :].split()
            if len(words) != 3 or not all(w.isdigit() for w in words):
                raise UnsafeTmp(f"its owner and mode cannot be read (stat said {line!r})")
            problem = tmp_problem(int(words[0]), int(words[1], 8), int(words[2]))
            if problem:
                raise UnsafeTmp(problem)
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


# Checksum, rename and load in ONE remote command (issue 19): nothing can swap the file
# between the check and the load. The script prints `distrib-sha256=HEX` first; only when
# that is `sha256` does it rename `part` to `final` and run `load` (whose output follows).
# A mismatch leaves `part` for the caller to remove and send again; exit 0 then.
CHECKED_MARK = "distrib-sha256="


def checked_load(part: str, final: str, sha256: str, load: str, remove_after: bool = False) -> str:
    """sha256 of `part`; if it is `sha256`: `mv part final`, then `load` (a shell command that
    reads `final`), then (`remove_after`) remove `final` once loaded. `load` is run last and
    reads the channel's stdin (sudo's password line) untouched by the steps before it."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    done = f" && rm -f -- {q(final)}" if remove_after else ""
    return (
        f"s=$(sha256sum -- {q(part)}) || exit 1; s=${{s%% *}}; "
        f"printf '{CHECKED_MARK}%s\\n' \"$s\"; "
        f'[ "$s" = {q(sha256)} ] || exit 0; '
        f"mv -f -- {q(part)} {q(final)} || exit 1; {{ {load}\n}}{done}"
    )


def parse_checked_load(stdout: str) -> tuple[str, str]:
    """(the sha256 the host computed, "" when none was printed; the load's own output)."""
    first, _, rest = stdout.partition("\n")
    if first.startswith(CHECKED_MARK):
        digest = first[len(CHECKED_MARK) :].strip()
        if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
            return digest, rest
    return "", stdout


def stream_load(docker: Sequence[str], codec: str, native: bool = False) -> str:
    """Load straight from stdin, no temp file (when staging space is short, or asked for).

    docker 20.10 reads gzip/xz itself but not zstd: decompress on the host. Integrity comes
    from the verification after loading: image IDs and layer diffIDs are content digests.
    """
    if codec == "zstd" and not native:
        return f"zstd -dc | {join([*docker, 'load'])}"
    return join([*docker, "load"])


def load(docker: Sequence[str], path: str, codec: str, native: bool = False) -> str:
    """Load an archive. docker 20.10 reads gzip/xz/bzip2 itself but not zstd: then pipe
    `zstd -dc` (`native`: the engine reads this codec itself)."""
    if codec == "zstd" and not native:
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


# --- one run at a time per host (issue 19) ------------------------------------------------------
#
# Two runs against one host at once would share the staging dir (named after the archive) and
# the delta's stand-in images (named by content): one run's cleanup could break the other's
# load. A run holds an flock on the remote_tmp directory itself (no lock file is left behind)
# from before its probe to its end; the lock lives as long as the command holding it, i.e. as
# long as the SSH channel (a lost connection releases it). Hosts without flock run unlocked.

LOCKED = "distrib-locked"
UNLOCKED = "distrib-no-flock"


def host_lock(remote_tmp: str, wait: float, relay: bool = False) -> str:
    """Print LOCKED once the distrib lock on the host's `remote_tmp` is held (waiting up to
    `wait` seconds for another run to finish), then hold it until stdin closes. Prints
    UNLOCKED and just waits when the host has no flock.

    Once locked, relay entries left in authorized_keys by an interrupted run are removed
    (relay_sweep) unless a relay run is live for this user: a relay run (`relay`) holds a
    shared flock on ~/.ssh for as long as its entries may be used; the sweep needs the
    exclusive one and skips when it cannot have it at once (issue 19)."""
    base = q(remote_tmp.rstrip("/") or "/")
    held = f"echo {LOCKED}; read -r _ || :"  # a builtin: no process to mistake for ours
    ssh = '"$HOME/.ssh"'
    sweep = f"if [ -d {ssh} ]; then flock -n -x {ssh} sh -c {q(relay_sweep())} || :; fi"
    if relay:  # (without a ~/.ssh it can make, or the shared lock, it holds as before)
        shared = f"flock -s -w 60 {ssh} sh -c {q(held)} || {{ {held}; }}"
        hold = f"{sweep}; if mkdir -p -- {ssh} 2>/dev/null; then {shared}; else {held}; fi"
    else:
        hold = f"{sweep}; {held}"
    return (
        f"umask 077 && mkdir -p -- {base} && "
        f"if command -v flock >/dev/null 2>&1; then exec flock -w {int(wait)} {base} sh -c "
        f"{q(hold)}; else echo {UNLOCKED}; read -r _ || :; fi"
    )


def parse_lock(line: str) -> bool:
    """Whether the lock is held (False: the host has no flock, the run goes on unlocked)."""
    if line.strip() == LOCKED:
        return True
    if line.strip() == UNLOCKED:
        return False
    raise ValueError(f"unexpected lock output {line!r}")


# --- workflows (issue 7): commit, backup, registry push and pull --------------------------------
#
# Container names follow docker's grammar and image references ImageRef's; both are validated
# before anything connects and quoted here all the same.

STATUS_MARK = "distrib-status"  # `distrib-status STAGE CODE` on stderr: a pipeline stage failed


def container_inspect(docker: Sequence[str], containers: Iterable[str]) -> str:
    """For each container one line `name<TAB>id<TAB>image`, or `name<TAB>-` when the host
    has no such container. Read-only."""
    inspect = join([*docker, "container", "inspect", "--format", "{{.Id}}\t{{.Config.Image}}"])
    return "; ".join(
        f"printf '%s\\t' {q(c)}; {inspect} -- {q(c)} 2>/dev/null || echo -" for c in containers
    )


def parse_container_inspect(stdout: str) -> dict[str, tuple[str, str] | None]:
    """`name -> (container id, image it runs)` from `container_inspect`; None when absent."""
    out: dict[str, tuple[str, str] | None] = {}
    for line in stdout.splitlines():
        name, sep, rest = line.partition("\t")
        if not sep:
            continue
        cid, sep, image = rest.partition("\t")
        out[name] = (cid.strip(), image.strip()) if sep and cid.strip() else None
    return out


def commit_argv(
    docker: Sequence[str],
    container: str,
    ref: ImageRef,
    message: str | None = None,
    author: str | None = None,
) -> list[str]:
    """`docker commit` of `container` into `ref` (the container is paused meanwhile: a
    consistent snapshot). An argv: the workstation runs it as is, a host through `join`."""
    argv = [*docker, "commit"]
    if message is not None:
        argv += ["--message", message]
    if author is not None:
        argv += ["--author", author]
    return [*argv, "--", container, str(ref)]


def parse_commit(stdout: str) -> str:
    """The new image's ID from `docker commit` output (`sha256:...`)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.strip().startswith("sha256:"):
            return line.strip()
    raise ValueError(f"unexpected docker commit output {stdout!r}")


def inspect_image(docker: Sequence[str], ref: ImageRef | str) -> str:
    """One line in INSPECT_FORMAT (id, diffIDs, size) for `ref`; see parse_inspect_line."""
    return join([*docker, "image", "inspect", "--format", INSPECT_FORMAT, "--", str(ref)])


def host_compressor(codec: str, level: int, tools: Iterable[str]) -> list[str]:
    """The compressing command on a host: pigz when present (all cores), else gzip; zstd -T0.

    ValueError when the host lacks the tool for `codec`."""
    have = set(tools)
    if codec == "gzip":
        return ["pigz" if "pigz" in have else "gzip", f"-{int(level)}", "-c"]
    if codec == "zstd":
        if "zstd" not in have:
            raise ValueError("the host has no zstd")
        return ["zstd", f"-{int(level)}", "-T0", "-q", "-c"]
    raise ValueError(f"unsupported codec {codec!r}")


def save_stream(
    docker: Sequence[str], refs: Sequence[ImageRef | str], compress: Sequence[str]
) -> str:
    """`docker save | compress` to stdout; the sha256 of exactly the bytes sent goes to stderr.

    `tee` hands the compressed stream both to stdout (fd 4, the SSH channel) and to
    sha256sum, so the host hashes what it sends with no temp file and no second pass. A
    POSIX shell has no pipefail: each stage reports its own failure on stderr
    (`distrib-status STAGE CODE`), read by `parse_save_stream`.
    """
    save = join([*docker, "save", "--", *map(str, refs)])
    mark = f"echo {STATUS_MARK}"
    return (
        f"{{ {{ {save} || {mark} save $? >&2; }} | "
        f"{{ {join(compress)} || {mark} compress $? >&2; }} | "
        f"{{ tee /dev/fd/4 || {mark} send $? >&2; }} | sha256sum >&2; }} 4>&1"
    )


@dataclass(frozen=True)
class StreamReport:
    sha256: str | None  # what the host hashed (None: no hash line)
    failed: dict[str, int]  # stage -> exit code, for the stages that failed
    messages: str  # the remaining stderr (docker's own error text)

    @property
    def ok(self) -> bool:
        return not self.failed and self.sha256 is not None


def parse_save_stream(stderr: str) -> StreamReport:
    """Split the stderr of `save_stream` into the host's sha256, failed stages and messages."""
    digest = None
    failed: dict[str, int] = {}
    rest = []
    for line in stderr.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == STATUS_MARK and words[2].isdigit():
            failed[words[1]] = int(words[2])
        elif (
            len(words) == 2
            and words[1] == "-"
            and len(words[0]) == 64
            and all(c in "0123456789abcdef" for c in words[0])
        ):
            digest = words[0]
        elif line.strip():
            rest.append(line)
    return StreamReport(digest, failed, "\n".join(rest))


def remove_images(docker: Sequence[str], refs: Iterable[ImageRef | str]) -> str:
    """Untag (and delete when no other tag holds it) each ref; never forced."""
    return join([*docker, "rmi", "--", *map(str, refs)])


def tag(docker: Sequence[str], source: ImageRef | str, target: ImageRef | str) -> str:
    return join([*docker, "tag", str(source), str(target)])


def registry_probe(docker: Sequence[str], registry_host: str) -> str:
    """The engine's registry settings and the registry host's IPv4 addresses as the host
    resolves them (docker decides "insecure" by IP for names not configured explicitly)."""
    info = join([*docker, "info", "--format", "{{json .RegistryConfig}}"])
    return (
        f"printf 'config='; {info}; printf 'addresses='; "
        f"getent ahostsv4 {q(registry_host)} 2>/dev/null | awk '{{print $1}}' | sort -u | "
        "tr '\\n' ' '; echo"
    )


@dataclass(frozen=True)
class RegistrySettings:
    insecure_cidrs: tuple[str, ...]
    secure_by_name: dict[str, bool]  # IndexConfigs: registry name -> Secure
    addresses: tuple[str, ...]  # what the host resolves the registry's host name to


def parse_registry_probe(stdout: str) -> RegistrySettings:
    config: dict[str, object] = {}
    addresses: tuple[str, ...] = ()
    for line in stdout.splitlines():
        if line.startswith("config="):
            try:
                parsed = json.loads(line[len("config=") :])
            except ValueError:
                parsed = None
            config = parsed if isinstance(parsed, dict) else {}
        elif line.startswith("addresses="):
            addresses = tuple(line[len("addresses=") :].split())
    cidrs = config.get("InsecureRegistryCIDRs") or []
    index = config.get("IndexConfigs") or {}
    secure = {
        str(name): bool(value.get("Secure", True))
        for name, value in (index.items() if isinstance(index, dict) else [])
        if isinstance(value, dict)
    }
    return RegistrySettings(
        tuple(str(c) for c in cidrs if isinstance(c, str)) if isinstance(cidrs, list) else (),
        secure,
        addresses,
    )


def docker_allows_plain_http(registry: str, settings: RegistrySettings) -> bool:
    """Whether the engine treats `registry` (host[:port]) as insecure, as docker decides it
    (registry/config.go isSecureIndex): an explicit index config wins, else whether the host
    (an IP literal, or the addresses it resolves to) is in an insecure CIDR."""
    import ipaddress

    if registry in settings.secure_by_name:
        return not settings.secure_by_name[registry]
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    host = host.strip("[]")
    try:
        candidates = [ipaddress.ip_address(host)]
    except ValueError:
        candidates = []
        for text in settings.addresses:
            try:
                candidates.append(ipaddress.ip_address(text))
            except ValueError:
                continue
    for cidr in settings.insecure_cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if any(ip.version == network.version and ip in network for ip in candidates):
            return True
    return False


def registry_session(
    docker: Sequence[str],
    registry: str,
    remote_tmp: str,
    steps: Sequence[Sequence[str]],
    username: str | None = None,
) -> str:
    """Run docker `steps` (argv tails after `docker`, e.g. ["push", ref]) against a registry.

    With `username`, a `docker login --password-stdin` first, into a private client config
    dir (`docker --config DIR`): the password comes on stdin, never in argv, and the user's
    own ~/.docker/config.json is never touched. The dir is removed by a trap when the shell
    exits, whatever happened (also on a hang-up), so no credential stays on the host.
    """
    base = join(docker)
    if username is None:
        return " && ".join(f"{base} {join(step)}" for step in steps)
    template = f"{remote_tmp.rstrip('/')}/{STAGING_PREFIX}login-XXXXXX"
    cfg = f'{base} --config "$d"'
    login = f"{cfg} login --username {q(username)} --password-stdin {q(registry)} >/dev/null"
    body = " && ".join([login, *(f"{cfg} {join(step)}" for step in steps)])
    return (
        f"umask 077 && d=$(mktemp -d -- {q(template)}) || exit 1; "
        "trap 'rm -rf -- \"$d\"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; "
        f"trap 'exit 143' TERM; {body}"
    )


def parse_push(stdout: str) -> list[str]:
    """The manifest digest of each push, in push order, from `docker push` output
    (`1.0: digest: sha256:.. size: N`; the line names only the tag, so order is what maps a
    digest to its image)."""
    out: list[str] = []
    for line in stdout.splitlines():
        _, sep, rest = line.partition(": digest: ")
        if sep and rest.split():
            out.append(rest.split()[0])
    return out


# --- several read-only queries in one round trip (issue 16 item 2, issue 15 item 7) ---------
#
# Each remote command costs a shell, an engine CLI start and, on a WAN, a round trip: the probe,
# the identity of the wanted images and (for a delta) the host's layer listing go as ONE
# command, their outputs separated by a marker line and each parsed by its own parser.

PART_MARK = "distrib-part-8d1f"  # a line no probe, inspect or listing prints


def in_parts(scripts: Sequence[str]) -> str:
    """`scripts` run one after the other in one shell, each in a brace group (a single one
    as it is), a line PART_MARK between their outputs. Exit status: the last one's (a script
    that exits on a failure ends the command: its caller reports it, nothing is parsed)."""
    if not scripts:
        raise ValueError("no scripts")
    if len(scripts) == 1:
        return scripts[0]
    # the marker on a line of its own even after a part whose output ends without a newline
    return f"; printf '\\n%s\\n' {PART_MARK}; ".join(f"{{ {s}\n}}" for s in scripts)


def split_parts(stdout: str, count: int) -> list[str]:
    """The outputs of `in_parts`' `count` scripts (ValueError when the marker lines are not
    all there: the command was cut short)."""
    parts = stdout.split(f"\n{PART_MARK}\n")
    if len(parts) != count:
        raise ValueError(f"expected {count} parts, got {len(parts)}: {stdout[-300:]!r}")
    return parts


# --- layers a host holds (delta) ---------------------------------------------------------------


def host_layers(docker: Sequence[str], containerd_store: bool | None = False) -> str:
    """The diffID list of every image on the host, one JSON list per line; on docker's
    containerd image store (the probe's Facts.store) also `store=containerd` and a
    `blob=DIGEST` line per blob of its content store (`ctr`, at the address docker names;
    docker 26 names none: the default), which an OCI-layout delta may name instead of sending
    (layerstore; issue 14). Without ctr, or the right to use its socket, no blob lines: every
    layer is then sent. `containerd_store=None`: the store is not known yet (the listing goes
    with the probe, in one command): the host decides, by docker_store's rule."""
    listing = join([*docker, "images", "-q", "--no-trunc"])
    inspect = join([*docker, "image", "inspect", "--format", "{{json .RootFS.Layers}}"])
    script = f"{listing} | sort -u | xargs -r {inspect}"
    if containerd_store is False:
        return script
    address = join([*docker, "info", "--format", "{{.Containerd.Address}}"])
    blobs = (
        "echo store=containerd; "
        f'a=$({address} 2>/dev/null); [ -S "$a" ] || a=/run/containerd/containerd.sock; '
        "ctr -a \"$a\" -n moby content ls -q 2>/dev/null | sed 's/^/blob=/'; true"
    )
    if containerd_store:
        return f"{script}; {blobs}"
    driver = join([*docker, "info", "--format", "{{json .DriverStatus}}"])
    return (
        f'{script} && case "$({driver} 2>/dev/null)" in *io.containerd.snapshotter*) {blobs};; esac'
    )


def parse_host_blobs(stdout: str) -> frozenset[str] | None:
    """The content blobs of a containerd-store host from `host_layers` output (None: the
    classic store, where layer chains are all a delta needs)."""
    lines = [line.strip() for line in stdout.splitlines()]
    if "store=containerd" not in lines:
        return None
    return frozenset(line[5:] for line in lines if line.startswith("blob=sha256:"))


def parse_host_layers(stdout: str) -> set[tuple[str, ...]]:
    """Every layer chain the host holds: all prefixes of each image's diffID list."""
    chains: set[tuple[str, ...]] = set()
    for line in stdout.splitlines():
        try:
            layers = json.loads(line)
        except ValueError:
            continue
        if isinstance(layers, list):
            ids = tuple(str(x) for x in layers)
            chains.update(ids[: i + 1] for i in range(len(ids)))
    return chains


# --- relay fan-out (issue 9): hosts forward the stream to each other over SSH -------------------
#
# A relaying host runs `relay_receive`: `tee` writes its own `.part` and, through one fifo per
# child, feeds `ssh child` processes, so every level forwards while it is still receiving. The
# child end is a forced command in an authorized_keys entry made for the run (a one-time key,
# restricted to the parent's address), removed afterwards. Everything here is POSIX sh.

RELAY_MARK = "distrib-relay:"  # + run id: the comment of every authorized_keys entry we add
RELAY_KEY = "relay.key"
RELAY_KNOWN_HOSTS = "relay.known_hosts"
RELAY_TOOLS = ("ssh", "mkfifo", "tee", "tail", "sha256sum")


def relay_probe(remote_tmp: str) -> str:
    """Read-only: the address the workstation reached (sshd's SSH_CONNECTION), the login user,
    the relay tools present (GNU `tee -p`: keep writing when one child's pipe breaks) and the
    free space where archives are staged."""
    tools = " ".join(RELAY_TOOLS)
    return (
        "set -- $SSH_CONNECTION; printf 'address=%s\\n' \"$3\"; "
        "printf 'user=%s\\n' \"$(id -un)\"; "
        f'for t in {tools}; do command -v "$t" >/dev/null 2>&1 && echo "has_$t=1"; done; '
        "tee -p </dev/null >/dev/null 2>&1 && echo tee_p=1; "
        f'p={q(remote_tmp)}; while [ ! -d "$p" ]; do p=$(dirname -- "$p"); done; '
        'df -Pk -- "$p" 2>/dev/null | awk \'NR==2{print "tmp_avail_kb="$4}\'; true'
    )


@dataclass(frozen=True)
class RelayFacts:
    address: str  # this host's address as the workstation reached it (for from=)
    user: str
    tools: frozenset[str]
    tmp_avail: int | None = None

    @property
    def can_receive(self) -> bool:
        return "sha256sum" in self.tools

    @property
    def can_relay(self) -> bool:
        return self.can_receive and {"ssh", "mkfifo", "tee_p", "tail"} <= self.tools


def parse_relay_probe(stdout: str) -> RelayFacts:
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    tools = {k[4:] for k, v in values.items() if k.startswith("has_") and v == "1"}
    if values.get("tee_p") == "1":
        tools.add("tee_p")
    kb = values.get("tmp_avail_kb", "")
    return RelayFacts(
        values.get("address", ""),
        values.get("user", ""),
        frozenset(tools),
        int(kb) * 1024 if kb.isdigit() else None,
    )


def relay_ssh(
    address: str,
    port: int,
    user: str,
    key: str,
    known_hosts: str,
    connect_timeout: float = 10.0,
) -> list[str]:
    """The argv a relaying host uses to reach a child: only the run's key, only the child
    keys the workstation trusts (StrictHostKeyChecking=yes against the handed-over file), no
    user config, no agent, no forwarding; a dead child is given up after ~15 s."""
    for path in (key, known_hosts):
        if any(c.isspace() or c in "\"'\\%" for c in path):
            raise ValueError(f"unusable path for ssh -o: {path!r}")
    return [
        "ssh", "-F", "/dev/null", "-T", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i", key,
        "-o", "ForwardAgent=no", "-o", "ClearAllForwardings=yes",
        "-o", f"ConnectTimeout={max(1, int(connect_timeout))}",
        "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
        "-p", str(int(port)), "-l", user, "--", address, "distrib-relay",
    ]  # fmt: skip


def relay_receive(directory: str, part: str, children: Sequence[Sequence[str]]) -> str:
    """Receive the stream on stdin into `part` (truncated) and forward it, while receiving, to
    each child through a fifo and `children[i]` (an ssh argv). Markers in `directory`:
    relay.pid (this shell: its process group is the whole pipeline), relay.received (tee's exit
    status, written as soon as this host's own copy ended), relay.status.N (child N's ssh exit
    status). Exits with tee's status once every child is done."""
    fifos = [f"relay.fifo.{i}" for i in range(1, len(children) + 1)]
    # pid first, then the closed flag (relay_stop sets the flag, then reads the pid): a
    # receiver that starts late, after the workstation gave up on it, never writes a byte
    steps = [f"umask 077 && cd -- {q(directory)} || exit 3", "echo $$ > relay.pid"]
    steps.append("[ ! -e relay.closed ] || { rm -f relay.pid; exit 4; }; : > relay.started")
    steps.append("rm -f relay.received relay.status.* " + " ".join(fifos))
    if children:
        steps.append(f"mkfifo {' '.join(fifos)} || exit 3")
        # The redirection blocks until tee opens the fifo (fifo rendezvous), so ssh starts
        # only once tee is there, and a child that dies later is a broken pipe tee -p skips.
        for i, argv in enumerate(children, 1):
            steps.append(f"{join(argv)} < relay.fifo.{i} > /dev/null 2> relay.err.{i} & p{i}=$!")
        steps.append(f"tee -p {' '.join(fifos)} > {q(part)}; s=$?")
        # if tee never opened a fifo, its reader is still blocked in open(): release it
        steps.extend(f"exec 3<> {f}; exec 3>&-" for f in fifos)
    else:
        steps.append(f"cat > {q(part)}; s=$?")
    steps.append("echo $s > relay.received.tmp && mv -f relay.received.tmp relay.received")
    for i in range(1, len(children) + 1):
        steps.append(f"wait $p{i}; echo $? > relay.status.{i}")
    steps.append("rm -f relay.pid " + " ".join(fifos))
    steps.append("exit $s")
    return "; ".join(steps)


def relay_append(directory: str, part: str) -> str:
    """The child end of a re-parented feed: append stdin to the partial copy (the workstation
    checked its prefix first)."""
    return f"umask 077 && cd -- {q(directory)} && cat >> {q(part)}"


def relay_send(path: str, offset: int, child: Sequence[str]) -> str:
    """On a host with a complete copy: send it from byte `offset` to a child."""
    return f"tail -c +{int(offset) + 1} -- {q(path)} | {join(child)}"


def relay_watch(directory: str, part: str, seconds: float = 5.0) -> str:
    """Wait (at most `seconds`) until this host's own copy ended; report how far it got."""
    d = q(directory)
    rounds = max(1, int(seconds / 0.2))
    return (
        f"i=0; while [ ! -e {d}/relay.received ] && [ $i -lt {rounds} ]; do sleep 0.2; "
        "i=$((i+1)); done; "
        f"[ -e {d}/relay.started ] && echo started=1; "
        f"printf 'received=%s\\n' \"$(cat {d}/relay.received 2>/dev/null)\"; "
        f"printf 'size=%s\\n' \"$(stat -c %s -- {q(part)} 2>/dev/null || echo 0)\""
    )


@dataclass(frozen=True)
class RelayWatch:
    started: bool  # the receiving command ran (the parent connected)
    received: int | None  # tee's exit status once this host's copy ended, else None
    size: int  # bytes in the partial copy


def parse_relay_watch(stdout: str) -> RelayWatch:
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    received = values.get("received", "")
    size = values.get("size", "")
    return RelayWatch(
        values.get("started") == "1",
        int(received) if received.isdigit() else None,
        int(size) if size.isdigit() else 0,
    )


def relay_stop(directory: str) -> str:
    """Close `directory` to receivers and stop a pipeline still running there (its whole
    process group: sshd starts the receiving shell as a session leader), waiting until it is
    gone so nothing writes after this returns."""
    d = q(directory)
    return (
        f"[ -d {d} ] || exit 0; : > {d}/relay.closed; p=$(cat {d}/relay.pid 2>/dev/null); "
        # only a process still working in our dir is ours (a stale pid may have been reused)
        f'r=$(cd -- {d} && pwd -P); case "$p" in ""|*[!0-9]*) ;; *) '
        '[ "$(readlink /proc/$p/cwd 2>/dev/null)" = "$r" ] || exit 0; '
        'kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; i=0; '
        'while { kill -0 -- "-$p" || kill -0 "$p"; } 2>/dev/null && [ $i -lt 50 ]; '
        "do sleep 0.1; i=$((i+1)); done;; esac; true"
    )


def relay_reset(directory: str, part: str) -> str:
    """Before a stream: no copy and no markers left from an earlier, interrupted run."""
    return f"cd -- {q(directory)} && rm -f -- {q(part)} relay.*"


def relay_install(directory: str, name: str) -> str:
    """Write stdin to `directory/name`, private (the run's key, the children's host keys:
    secrets go over the channel's stdin, never in argv)."""
    if "/" in name:
        raise ValueError(name)
    return f"umask 077 && cat > {q(directory + '/' + name)}"


def relay_options(parent_address: str, command: str) -> str:
    """authorized_keys options of a child entry: only from the parent, nothing but `command`.

    sshd unquotes only `\\"` inside an option value: a command carrying that sequence or a
    newline cannot be represented and is refused."""
    if "\n" in command or '\\"' in command or "\\" in command[-1:]:
        raise ValueError("command cannot be an authorized_keys option")
    if not parent_address or any(c in parent_address for c in '",\n \\'):
        raise ValueError(f"bad parent address {parent_address!r}")
    escaped = command.replace('"', '\\"')
    return f'from="{parent_address}",restrict,command="{escaped}"'


_AK = 'f="$HOME/.ssh/authorized_keys"'
# Drops the lines of run `run`, and those of any run whose expiry-time has passed (a crashed
# workstation's leftovers): the file is rewritten through a temp file and renamed over it
# (same mode and owner), so sshd never reads a half-written file.
_AK_FILTER = (
    "now=$(date -u +%Y%m%d%H%M); "
    'awk -v run="$run" -v now="$now" -v mark={mark} '
    "'{{ if (index($0, run)) next; "
    'if (index($0, mark) && match($0, /expiry-time="[0-9]+/)) '
    "{{ if (substr($0, RSTART + 13, 12) < now) next }} print }}'"
)


def _ak_rewrite(run: str) -> str:
    awk = _AK_FILTER.format(mark=q(" " + RELAY_MARK))
    return (
        f'run={q(RELAY_MARK + run)}; {_AK}; [ -f "$f" ] || exit 0; '
        'f=$(readlink -f -- "$f"); '
        f'if grep -q -F -- {q(RELAY_MARK)} "$f"; then '
        't=$(mktemp -- "$f.distrib-XXXXXX") || exit 1; '
        f'{awk} "$f" > "$t" && chmod --reference="$f" -- "$t" && '
        'chown --reference="$f" -- "$t" && mv -f -- "$t" "$f" || { rm -f -- "$t"; exit 1; }; fi'
    )


def relay_authorize(options: str, public_key: str, run: str, hours: int = 2) -> str:
    """Append the run's key to this host's authorized_keys with `options` and an expiry
    (`hours` from the host's own clock, UTC), after dropping this run's earlier entry."""
    if "\n" in options or "\n" in public_key or not run.isalnum():
        raise ValueError("bad authorized_keys entry")
    rest = f"{options} {public_key.strip()} {RELAY_MARK}{run}"
    return (
        f'umask 077 && mkdir -p -- "$HOME/.ssh" && ( {_ak_rewrite(run)} ) && {_AK} && '
        'f=$(readlink -f -- "$f"); '
        '{ [ ! -s "$f" ] || [ -z "$(tail -c 1 -- "$f")" ] || echo >> "$f"; } && '
        f"printf 'expiry-time=\"%s\",%s\\n' \"$(date -u -d '+{int(hours)} hours' +%Y%m%d%H%MZ)\" "
        f'{q(rest)} >> "$f"'
    )


def relay_sweep() -> str:
    """Remove every authorized_keys line any relay run added (run under the exclusive flock
    on ~/.ssh, so no live run's: see host_lock)."""
    return _ak_rewrite("")


def relay_unauthorize(run: str) -> str:
    """Remove every authorized_keys line of run `run` (and expired ones of earlier runs)."""
    if not run.isalnum():
        raise ValueError("bad run id")
    return _ak_rewrite(run)
