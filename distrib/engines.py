"""Container engines (docker, podman, containerd) and privilege (become): pure command builders
and their parsers, side by side (STYLE: command and parser as a pair). Nothing here runs
anything; every remote argument goes through `shlex.quote`.

Engines differ in four ways that matter here (DESIGN.md, measured on Debian 12):
- what they read: docker 20.10 reads gzip/xz but not zstd; podman 4.3 reads plain and zstd
  docker-archives, not gzip; containerd 1.6 (`ctr images import`) reads a plain tar only. An
  archive the engine cannot read is decompressed on the host, in a pipe.
- the names they store: podman stores an unqualified `NAME:TAG` as `localhost/NAME:TAG`,
  containerd as `docker.io/NAME:TAG` (`docker.io/library/NAME:TAG` for one component).
- the identity they show: the config digest is what identifies an image (issue 14). docker's
  classic store and podman show it as the image ID; containerd lists the manifest digest, whose
  manifest names it; docker's containerd image store shows a manifest digest and the config
  digest nowhere, so there the config fingerprint stands in (imageinfo.config_fingerprint).
- how they are asked: `docker|podman image inspect`, `ctr images ls` + `ctr content get`.

Become (sudo): every command that talks to the engine runs as the become user through ONE
`sudo ... -- /bin/sh -c SCRIPT` (like Ansible), so a script that calls the engine several times
asks sudo once. Without a password: `sudo -n` (never prompts, fails at once). With a password:
`sudo -k -S -p ''`: the password is the FIRST LINE OF STDIN, never argv, a log or a file.
`-k` ignores any cached sudo timestamp, so sudo always reads that line when the rule needs a
password, and it reads exactly that line (byte by byte): the archive bytes that follow reach the
command untouched. Whether the rule needs a password is asked first (`become_check`): a NOPASSWD
rule gets `sudo -n` and never sees the password. Files stay with the SSH user: uploads go to its
private staging dir and the archive is opened by the SSH user's shell and piped into the engine,
so any become user can load it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from distrib import imageinfo, relaycmds
from distrib.hostfacts import (
    CONTAINERD,
    DECOMPRESSORS,
    DOCKER,
    KINDS,
    NATIVE_CODECS,
    PODMAN,
    decompressor,
    engine_reads,
    probe_script,
)
from distrib.refs import ImageRef
from distrib.shell import in_parts, join, q, split_parts

__all__ = [  # the codec table and kinds live in hostfacts (issue 15: one codec table)
    "CONTAINERD", "DECOMPRESSORS", "DOCKER", "KINDS", "NATIVE_CODECS", "PODMAN", "decompressor",
    "engine_reads",
]  # fmt: skip

DEFAULT_ARGV: dict[str, tuple[str, ...]] = {
    DOCKER: ("docker",),
    PODMAN: ("podman",),
    CONTAINERD: ("ctr",),
}
DEFAULT_NAMESPACE = "k8s.io"  # what the kubelet (CRI) sees
PINNED = "io.cri-containerd.pinned=pinned"  # the kubelet's image GC keeps these images
BECOME_METHODS = ("sudo",)
_MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
_INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)


class Secret:
    """A password held in memory only: its repr and str never show it (logs, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if "\n" in value or "\r" in value:
            raise ValueError("a password cannot contain a line break")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def line(self) -> bytes:
        """The password as sudo -S reads it: one line."""
        return (self._value + "\n").encode()

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True)
class Become:
    """Run engine commands as `user` through `method` (sudo only)."""

    user: str = "root"
    method: str = "sudo"
    # ansible_become_password from the inventory (or -e @file): wins over -K for this host
    password: Secret | None = field(default=None, compare=False, repr=False)


# --- become: is sudo there, does the rule need a password, is the password right -------------

NOPASSWD = "nopasswd"
NEEDS_PASSWORD = "password"
NO_SUDO = "nosudo"
DENIED = "denied"


def become_check(become: Become) -> str:
    """Does `sudo -n -u USER true` work (never prompts, never waits)? Prints `become=...`."""
    probe = join(["sudo", "-k", "-n", "-u", become.user, "--", "true"])
    return (
        "if ! command -v sudo >/dev/null 2>&1; then echo become=nosudo; exit 0; fi; "
        f"if e=$({probe} 2>&1 </dev/null); then echo become=nopasswd; exit 0; fi; "
        "printf 'become=%s\\n' \"$e\""
    )


def parse_become_check(stdout: str) -> tuple[str, str]:
    """(NOPASSWD | NEEDS_PASSWORD | NO_SUDO | DENIED, sudo's own words)."""
    text = stdout.strip()
    value = text.split("become=", 1)[1].strip() if "become=" in text else text
    if value == NOPASSWD:
        return NOPASSWD, ""
    if value == NO_SUDO:
        return NO_SUDO, "sudo is not installed"
    if "password is required" in value:
        return NEEDS_PASSWORD, value
    return DENIED, value or "sudo failed"


def become_validate(become: Become) -> str:
    """Check the password (first line of stdin) with sudo itself; prints nothing on success."""
    return join(["sudo", "-k", "-S", "-p", "", "-u", become.user, "--", "true"])


def password_rejected(stderr: str) -> bool:
    """Whether sudo's stderr says the password was wrong (vs. the user may not sudo)."""
    words = stderr.lower()
    return (
        "incorrect password" in words
        or "sorry, try again" in words
        or ("no password was provided" in words)
    )


def wrap(script: str, become: Become | None, password: bool) -> str:
    """`script` run as the become user: one sudo for the whole script (see module doc)."""
    if become is None:
        return script
    if password:
        sudo = ["sudo", "-k", "-S", "-p", "", "-u", become.user, "--", "/bin/sh", "-c", script]
    else:
        sudo = ["sudo", "-n", "-u", become.user, "--", "/bin/sh", "-c", script]
    return join(sudo)


# --- names ---------------------------------------------------------------------------------


def has_domain(ref: ImageRef) -> bool:
    first, sep, _ = ref.name.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def stored_name(kind: str, ref: ImageRef) -> str:
    """The name under which `kind` lists an image loaded from a docker-archive."""
    if kind == PODMAN:
        familiar = ref.familiar
        return familiar if has_domain(ImageRef.parse(familiar)) else f"localhost/{familiar}"
    if kind == CONTAINERD:
        if has_domain(ref):
            return str(ref)
        name = ref.name if "/" in ref.name else f"library/{ref.name}"
        return str(ImageRef(f"docker.io/{name}", ref.tag, ref.digest))
    return ref.familiar


# --- the engine ------------------------------------------------------------------------------

Runner = Callable[[str], str]  # runs an engine command (as the engine user), returns stdout


@dataclass(frozen=True)
class Engine:
    """One host's engine: kind, client argv, containerd namespace, and how to become."""

    kind: str = DOCKER
    argv: tuple[str, ...] = ("docker",)
    namespace: str = DEFAULT_NAMESPACE
    become: Become | None = None
    password: bool = False  # sudo reads a password line first on stdin

    @property
    def ctr(self) -> list[str]:
        return [*self.argv, "-n", self.namespace]

    def wrap(self, script: str) -> str:
        return wrap(script, self.become, self.password)

    # -- probe ----------------------------------------------------------------------------

    def probe(self, remote_tmp: str) -> str:
        """One read-only round trip, as the engine user (hostfacts.probe_script)."""
        return self.wrap(self.probe_script(remote_tmp))

    def probe_script(self, remote_tmp: str) -> str:
        """`probe`, unwrapped (to go in one command with other queries: shell.in_parts)."""
        return probe_script(self.kind, self.argv, remote_tmp)

    def version_command(self) -> str:
        """The engine's own version command (its error output says why it does not answer)."""
        return self.wrap(join([*self.argv, "version"]))

    # -- identity -------------------------------------------------------------------------

    def identity(self, run: Runner, refs: Sequence[ImageRef]) -> dict[str, imageinfo.Inspected]:
        """`familiar ref -> what the host holds under it`, for the refs it holds, in one round
        trip (`identity_script`, as the engine user)."""
        if not refs:
            return {}
        return self.parse_identity(run(self.wrap(self.identity_script(refs))), refs)

    def identity_script(self, refs: Sequence[ImageRef]) -> str:
        """What the host holds under `refs`, read-only, unwrapped (so that it can go in one
        command with the probe: shell.in_parts). docker: INSPECT_FORMAT (the config digest
        as `.Id` on the classic store; on the containerd store a manifest digest, a descriptor
        and the fingerprint); podman: `.Id` is the config digest; containerd: `ctr images ls`,
        then the blob of each wanted image's target and, for an index, of its manifests (the
        manifest names the config digest): `ctr_identity`."""
        if self.kind in (DOCKER, PODMAN):
            names = [stored_name(self.kind, r) for r in refs]
            fmt = imageinfo.INSPECT_FORMAT if self.kind == DOCKER else PODMAN_INSPECT_FORMAT
            return imageinfo.inspect_images(list(self.argv), names, fmt) if names else "true"
        return ctr_identity(self.ctr, [stored_name(CONTAINERD, r) for r in refs])

    def parse_identity(
        self, stdout: str, refs: Sequence[ImageRef]
    ) -> dict[str, imageinfo.Inspected]:
        """`identity_script`'s output -> `familiar ref -> Inspected` (imageinfo.InspectError
        when the engine could not say)."""
        if not refs:
            return {}
        if self.kind in (DOCKER, PODMAN):
            names = [stored_name(self.kind, r) for r in refs]
            by_name = imageinfo.parse_inspect_images(stdout)
            return {r.familiar: by_name[n] for r, n in zip(refs, names) if n in by_name}
        configs = parse_ctr_identity(stdout, {stored_name(CONTAINERD, r): r.familiar for r in refs})
        return {ref: imageinfo.Inspected(digest, (), 0) for ref, digest in configs.items()}

    # -- load -------------------------------------------------------------------------------

    def load_from_stdin(self) -> str:
        """The engine's load of an archive on stdin, as a shell command."""
        if self.kind == CONTAINERD:
            return self._containerd_pinned(join([*self.ctr, "images", "import", "-"]))
        if self.kind == PODMAN:
            return self._podman_named(join([*self.argv, "load"]))
        return join([*self.argv, "load"])

    def _podman_named(self, load: str) -> str:
        """`load`, then each image podman named `docker.io/NAME:TAG` also tagged
        `localhost/NAME:TAG`, the name distrib verifies (`stored_name`). podman 5 reads a
        docker 25+ archive of ONE image as an OCI archive and takes its docker.io name;
        other docker-archives (several images, docker 20.10's) get `localhost/` (measured,
        podman 5.4.2 and 4.3.1). Both names then point at the loaded image."""
        podman = join(self.argv)
        return (
            f"out=$({load}) || {{ s=$?; printf '%s\\n' \"$out\" >&2; exit $s; }}; "
            "printf '%s\\n' \"$out\"; "
            "printf '%s\\n' \"$out\" | sed -n 's/^Loaded image[^:]*: *//p' | tr ',' '\\n' | "
            'while IFS= read -r n; do n=${n# }; case "$n" in docker.io/*) '
            "f=${n#docker.io/}; f=${f#library/}; "
            f'{podman} tag "$n" "localhost/$f" || exit 1;; esac; done'
        )

    def _containerd_pinned(self, load: str) -> str:
        """`load` (ctr images import), then each image it names labelled
        io.cri-containerd.pinned=pinned, so the kubelet's image GC never removes what distrib
        verified (issue 18). Names as measured: containerd 1.6 prints `unpacking NAME
        (sha256:..)`, containerd 2.1 `NAME<spaces><TAB>saved<TAB>`."""
        label = join([*self.ctr, "images", "label"])
        return (
            f"out=$({load}) || {{ s=$?; printf '%s\\n' \"$out\" >&2; exit $s; }}; "
            "printf '%s\\n' \"$out\"; "
            "printf '%s\\n' \"$out\" | sed -n -e 's/^unpacking \\([^ ]*\\) (.*/\\1/p' "
            "-e 's/^\\([^[:space:]]*\\)[[:space:]]*saved[[:space:]]*$/\\1/p' | "
            f'while IFS= read -r n; do {label} "$n" {q(PINNED)} >/dev/null || exit 1; done'
        )

    def load(self, path: str, codec: str, native: bool, tools: Iterable[str]) -> str:
        """Load the staged archive at `path` (see the module doc for who opens what)."""
        decompress = None if native else self._decompressor(codec, tools)
        if self.become is None:
            if decompress is None:
                if self.kind == CONTAINERD:
                    return self._containerd_pinned(
                        join([*self.ctr, "images", "import", "--", path])
                    )
                if self.kind == PODMAN:
                    return self._podman_named(join([*self.argv, "load", "-i", path]))
                return join([*self.argv, "load", "-i", path])
            return f"{join([*decompress, '--', path])} | {self._piped_load()}"
        engine = self.wrap(self.load_from_stdin())
        source = join([*(decompress or ["cat"]), "--", path])
        if self.password:
            # The first `cat` passes the password line (all of the channel's stdin) to sudo;
            # the archive follows, opened by the SSH user who owns it.
            return f"{{ cat; {source}; }} | {engine}"
        return f"{source} | {engine}"

    def remove_images(self, image_ids: Sequence[str]) -> str:
        """Remove images by ID (docker and podman; the loading steps' stand-ins)."""
        return self.wrap(join([*self.argv, "rmi", *image_ids]))

    def stream_load(self, codec: str, native: bool, tools: Iterable[str]) -> str:
        """Load from stdin (after the password line, when sudo needs one)."""
        decompress = None if native else self._decompressor(codec, tools)
        script = self.load_from_stdin()
        if decompress is not None:
            script = f"{join(decompress)} | {self._piped_load()}"
        return self.wrap(script)

    # relay members (issue 15)

    def member_probe(self, remote_tmp: str) -> str:
        """A relay tree member's read-only probe, as the SSH user (who owns the staging dir and
        the authorized_keys entries), in one round trip: the relay facts
        (commands.relay_probe) and, with become, whether sudo needs a password (become_check;
        the password itself was checked by the engine's own check). `parse_member_probe`."""
        scripts = [relaycmds.relay_probe(remote_tmp)]
        if self.become is not None:
            scripts.append(become_check(self.become))
        return in_parts(scripts)

    def parse_member_probe(self, stdout: str) -> tuple[relaycmds.RelayFacts, str]:
        """`member_probe`'s output -> (relay facts, NOPASSWD | NEEDS_PASSWORD | NO_SUDO |
        DENIED; NOPASSWD without become). ValueError when its output was cut short."""
        if self.become is None:
            return relaycmds.parse_relay_probe(stdout), NOPASSWD
        relay, sudo = split_parts(stdout, 2)
        return relaycmds.parse_relay_probe(relay), parse_become_check(sudo)[0]

    def member_layers(self, containerd_store: bool) -> str | None:
        """The host's layer listing (commands.host_layers) as the engine user, for a relayed
        delta; None: not docker (podman and containerd are sent whole archives, as in direct
        mode)."""
        if self.kind != DOCKER:
            return None
        from distrib import commands  # commands imports engines: the layer listing is its own

        return self.wrap(commands.host_layers(list(self.argv), containerd_store))

    def member_load(
        self, part: str, final: str, sha256: str, codec: str, native: bool, tools: Iterable[str]
    ) -> str:
        """A relayed copy checked, renamed and loaded in one command (commands.checked_load)
        with this engine's own load (podman's names, containerd's namespace and pin label,
        sudo: the password line, if any, is the command's stdin, read by the load only)."""
        from distrib import commands  # commands imports engines: the checked script is its own

        return commands.checked_load(part, final, sha256, self.load(final, codec, native, tools))

    def _piped_load(self) -> str:
        """`load_from_stdin` as the right side of a pipe (podman's is several commands)."""
        script = self.load_from_stdin()
        return f"{{ {script}; }}" if self.kind in (PODMAN, CONTAINERD) else script

    def _decompressor(self, codec: str, tools: Iterable[str]) -> list[str]:
        argv = decompressor(codec, tools)
        if argv is None:
            raise ValueError(
                f"{self.kind} cannot read a {codec} archive and the host has no "
                f"{'/'.join(a[0] for a in DECOMPRESSORS.get(codec, ())) or codec} to unpack it"
            )
        return argv


# --- podman ------------------------------------------------------------------------------------

# podman's `.Id` is the config digest (bare hex): no fingerprint needed. Its inspect template
# runs on a typed struct, so docker's `index . "Descriptor"` (a map lookup) would fail there.
PODMAN_INSPECT_FORMAT = "{{.Id}}\t{{json .RootFS.Layers}}\t{{.Size}}"


# --- containerd listing ------------------------------------------------------------------------


def ctr_images(ctr: Sequence[str]) -> str:
    """`ctr images ls`: REF TYPE DIGEST SIZE PLATFORMS LABELS, one image per line."""
    return join([*ctr, "images", "ls"])


def parse_ctr_images(stdout: str) -> dict[str, tuple[str, str]]:
    """`name -> (target digest, media type)` from `ctr images ls` output."""
    out = {}
    for line in stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2].startswith("sha256:"):
            out[fields[0]] = (fields[2], fields[1])
    return out


def ctr_blobs(ctr: Sequence[str], digests: Sequence[str]) -> str:
    """Each blob as `digest<TAB>base64` on one line (`digest<TAB>` when missing)."""
    get = join([*ctr, "content", "get"])
    return "; ".join(
        f"printf '%s\\t' {q(d)}; {get} {q(d)} 2>/dev/null | base64 -w0; echo" for d in digests
    )


BLOBS_MARK = "distrib-blobs"


def ctr_identity(ctr: Sequence[str], names: Sequence[str]) -> str:
    """One read-only script: `ctr images ls` (`error=WORDS` when it fails), a line
    BLOBS_MARK, then `digest<TAB>base64` of each wanted image's target (its manifest) and,
    when that is an index, of every manifest it names (ctr_blobs' format). Layers and
    configs are never read."""
    get = join([*ctr, "content", "get"])
    blob = f'printf \'%s\\t\' "$d"; {get} "$d" 2>/dev/null | base64 -w0; echo'
    wanted = " ".join(q(n) for n in names) or "''"
    return (
        f"if ! l=$({ctr_images(ctr)} 2>&1); then "
        "printf 'error=%s\\n' \"$(printf '%s' \"$l\" | tr '\\t\\n\\r' '   ')\"; else "
        "printf '%s\\n' \"$l\"; "
        f"echo {BLOBS_MARK}; "
        f"for n in {wanted}; do "
        "set -- $(printf '%s\\n' \"$l\" | awk -v n=\"$n\" 'NR>1 && $1==n {print $3, $2; exit}'); "
        '[ -n "$1" ] || continue; d=$1; t=$2; '
        f"{blob}; "
        'case "$t" in *manifest.list*|*image.index*) '
        f"for d in $({get} \"$1\" 2>/dev/null | grep -o 'sha256:[0-9a-f]\\{{64\\}}' | sort -u); "
        f"do {blob}; done;; esac; "
        "done; fi; true"
    )


def parse_ctr_identity(stdout: str, names: dict[str, str]) -> dict[str, str]:
    """`ctr_identity` output -> `familiar ref -> config digest` for the wanted stored `names`
    (stored name -> familiar ref) the host holds; InspectError when ctr could not list."""
    for line in stdout.splitlines():
        if line.startswith("error="):
            raise imageinfo.InspectError("the image list", line[len("error=") :].strip())
    listing, _, blob_lines = stdout.partition(f"\n{BLOBS_MARK}\n")
    if not blob_lines and stdout.startswith(f"{BLOBS_MARK}\n"):
        listing, blob_lines = "", stdout[len(BLOBS_MARK) + 1 :]
    targets = parse_ctr_images(listing)
    blobs = parse_blobs(blob_lines)
    out: dict[str, str] = {}
    for name, familiar in names.items():
        if name not in targets:
            continue
        digest, media_type = targets[name]
        manifest = index_manifest(blobs.get(digest)) if media_type in _INDEX_TYPES else digest
        config = manifest_config(blobs.get(manifest or ""))
        if config:
            out[familiar] = config
    return out


def parse_blobs(stdout: str) -> dict[str, bytes]:
    out = {}
    for line in stdout.splitlines():
        digest, sep, data = line.partition("\t")
        if not sep or not data.strip():
            continue
        try:
            out[digest.strip()] = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            continue
    return out


def _json(blob: bytes | None) -> dict[str, object]:
    if not blob:
        return {}
    try:
        parsed = json.loads(blob)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def manifest_config(blob: bytes | None) -> str | None:
    """The config digest a manifest names (docker's image ID for a docker-archive)."""
    config = _json(blob).get("config")
    digest = config.get("digest") if isinstance(config, dict) else None
    return digest if isinstance(digest, str) else None


def index_manifest(blob: bytes | None, arch: str = "amd64") -> str | None:
    """The linux/`arch` manifest of an index (else its first manifest)."""
    manifests = _json(blob).get("manifests")
    if not isinstance(manifests, list) or not manifests:
        return None
    chosen = manifests[0]
    for entry in manifests:
        platform = entry.get("platform") if isinstance(entry, dict) else None
        if (
            isinstance(platform, dict)
            and platform.get("os") == "linux"
            and (platform.get("architecture") == arch)
        ):
            chosen = entry
            break
    digest = chosen.get("digest") if isinstance(chosen, dict) else None
    return digest if isinstance(digest, str) else None
