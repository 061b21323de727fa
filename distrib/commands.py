"""Remote commands and their parsers, side by side (STYLE: command and parser as a pair).

Pure: nothing here runs anything. Every argument that reaches a remote shell goes through
`shlex.quote`, even ones already validated (image references, paths we generated).

Here: staging (private dir, resumable upload, the checked load script, cleanup), the host
lock and the host's layer listing. By concern, elsewhere and named here too: shell quoting
and in_parts (`shell`), the probe and the codec table (`hostfacts`), image identity
(`imageinfo`), the workflows' commands (`workflowcmds`) and relay's (`relaycmds`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from distrib.engines import Engine
from distrib.hostfacts import (
    ARCH_LINE,
    CLASSIC_STORE,
    CONTAINERD_STORE,
    DOCKER,
    DOCKER_INFO_FORMAT,
    TOOLS,
    Facts,
    docker_store,
    parse_probe,
    probe,
    probe_script,
)
from distrib.imageinfo import (
    FINGERPRINT_KEYS,
    INSPECT_FORMAT,
    NO_SUCH_IMAGE,
    UNRENDERABLE,
    Inspected,
    InspectError,
    config_fingerprint,
    config_fingerprint_of,
    inspect_images,
    parse_inspect,
    parse_inspect_images,
    parse_inspect_line,
)
from distrib.relaycmds import (
    RELAY_KEY,
    RELAY_KNOWN_HOSTS,
    RELAY_MARK,
    RELAY_TOOLS,
    RelayFacts,
    RelayWatch,
    parse_relay_probe,
    parse_relay_watch,
    relay_append,
    relay_authorize,
    relay_install,
    relay_options,
    relay_probe,
    relay_receive,
    relay_reset,
    relay_send,
    relay_ssh,
    relay_stop,
    relay_sweep,
    relay_unauthorize,
    relay_watch,
)
from distrib.shell import (
    PART_MARK,
    STAGING_PREFIX,
    in_parts,
    join,
    q,
    split_parts,
)
from distrib.workflowcmds import (
    STATUS_MARK,
    RegistrySettings,
    StreamReport,
    commit_argv,
    container_inspect,
    docker_allows_plain_http,
    host_compressor,
    inspect_image,
    parse_commit,
    parse_container_inspect,
    parse_push,
    parse_registry_probe,
    parse_save_stream,
    registry_probe,
    registry_session,
    remove_images,
    save_stream,
    tag,
)

# named here too (issue 15: the modules split by concern; callers keep distrib.commands.X)
__all__ = [
    "ARCH_LINE",
    "CLASSIC_STORE",
    "CONTAINERD_STORE",
    "DOCKER_INFO_FORMAT",
    "FINGERPRINT_KEYS",
    "Facts",
    "INSPECT_FORMAT",
    "InspectError",
    "Inspected",
    "NO_SUCH_IMAGE",
    "PART_MARK",
    "RELAY_KEY",
    "RELAY_KNOWN_HOSTS",
    "RELAY_MARK",
    "RELAY_TOOLS",
    "RegistrySettings",
    "RelayFacts",
    "RelayWatch",
    "STAGING_PREFIX",
    "STATUS_MARK",
    "StreamReport",
    "TOOLS",
    "UNRENDERABLE",
    "commit_argv",
    "config_fingerprint",
    "config_fingerprint_of",
    "container_inspect",
    "docker_allows_plain_http",
    "docker_store",
    "host_compressor",
    "in_parts",
    "inspect_image",
    "inspect_images",
    "join",
    "parse_commit",
    "parse_container_inspect",
    "parse_inspect",
    "parse_inspect_images",
    "parse_inspect_line",
    "parse_probe",
    "parse_push",
    "parse_registry_probe",
    "parse_relay_probe",
    "parse_relay_watch",
    "parse_save_stream",
    "probe",
    "probe_script",
    "q",
    "registry_probe",
    "registry_session",
    "relay_append",
    "relay_authorize",
    "relay_install",
    "relay_options",
    "relay_probe",
    "relay_receive",
    "relay_reset",
    "relay_send",
    "relay_ssh",
    "relay_stop",
    "relay_sweep",
    "relay_unauthorize",
    "relay_watch",
    "remove_images",
    "save_stream",
    "split_parts",
    "tag",
]

ARCHIVE_NAME = "images"

# --- staging: private temp dir, upload (resumable), checksum, load, cleanup -------------------
#
# The staging dir is named after the archive's identity (images + codec), so that an upload
# cut off by a lost connection (when nothing can be cleaned up) is found and resumed by the
# next run. It is private: created 0700 by us; an existing one is used only if it is ours, not
# a symlink, and not accessible to others. Stale ones (a day old) are removed when a new one
# is made.

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
        'printf \'tmp=%s %s %s\\n\' "$1" "$2" "$u" && '
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
    """A docker host's load from stdin (engines.Engine.stream_load, the one load builder):
    docker reads every codec but zstd before 23 (`native`), which is piped through `zstd`."""
    return Engine(DOCKER, tuple(docker)).stream_load(codec, native or codec != "zstd", {codec})


def load(docker: Sequence[str], path: str, codec: str, native: bool = False) -> str:
    """A docker host's load of a staged archive (engines.Engine.load, the one load builder)."""
    return Engine(DOCKER, tuple(docker)).load(path, codec, native or codec != "zstd", {codec})


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
