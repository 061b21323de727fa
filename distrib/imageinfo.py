"""What identifies an image (issue 14): docker's inspect format, the config fingerprint, and
the parsers of what a host holds under each tag. Pure: command builders and their parsers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from distrib.shell import join, q

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
