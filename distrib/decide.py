"""What to do on a host, decided from what it told us (issue 15 item 3): PURE, no I/O, no
fabric, tested from tables (tests/test_decide.py). The deploy path asks twice:

1. `what_to_send(mode, images, facts, delta)`: from the wanted images' states on the host
   (`image_state`) and its facts: OK (nothing to do), REFUSE (drift in verify mode, another
   platform), RELAY_CHILD (a relay tree feeds it) or a payload: DELTA (the layers whose chain
   the host lacks, from the layer store) or FULL.
2. `how_to_send(action, facts, codec, size, unpacked, transfer)`, once the payload's codec and
   size are known: REFUSE (no room in the engine's data root, a codec the host cannot read,
   a staging area too small for `transfer: staged`) or the transfer: staged, else STREAM.

A delta the engine refused when loading it (confirmed only on first use: no fact says it
up front) becomes the full archive through `after_refused_delta`, decided here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from distrib import platforms
from distrib.commands import Facts, Inspected
from distrib.units import human_bytes as _human

# what a deploy does on a host
OK = "ok"
DELTA = "delta"
FULL = "full"
STREAM = "stream"  # a payload streamed straight into the engine's load (no staging)
RELAY_CHILD = "relay-child"
REFUSE = "refuse"

# how a payload travels (a host's `transfer:`)
AUTO = "auto"
STAGED = "staged"

# deploy modes
DEPLOY = "deploy"  # ship what is missing, load, verify
CHECK = "check"  # read-only: report what would be shipped
VERIFY = "verify"  # read-only: report drift (present / missing / different per image)

PRESENT = "present"
MISSING = "missing"
DIFFERENT = "different"
# how a drifted image is named in a host's message (the state names stay in the JSON)
DRIFT_WORDS = {MISSING: "missing", DIFFERENT: "different config", PRESENT: "present"}
DISK_MARGIN = 1.1  # free space asked for beyond the bytes themselves


Found = dict[str, Inspected]  # familiar ref -> what the host holds under it


@dataclass(frozen=True)
class Loading:
    """How a payload is loaded: its codec, whether the engine reads it itself (`native`),
    the host's tools (to decompress it when not)."""

    codec: str
    native: bool
    tools: frozenset[str] = frozenset()


class Image(Protocol):
    """What the decision reads of a wanted image (archive.LocalImage)."""

    @property
    def id(self) -> str: ...
    @property
    def engine_id(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def platform(self) -> platforms.Platform | None: ...
    @property
    def offered(self) -> tuple[platforms.Platform, ...]: ...


@dataclass(frozen=True)
class Action:
    """The decision: `kind` (OK, DELTA, FULL, STREAM, RELAY_CHILD, REFUSE), the refs to send
    (`missing`), why (`reason`, and a `hint` that fixes a refusal), and once `how_to_send`
    decided: `payload` (DELTA or FULL), `transfer` (STAGED or STREAM), whether the engine
    reads the codec itself (`native`)."""

    kind: str
    reason: str = ""
    hint: str = ""
    missing: tuple[str, ...] = ()
    payload: str = ""
    transfer: str = ""
    native: bool = False
    drift: bool = False  # a REFUSE in verify mode: the host drifted (a VerifyError)
    fallback: bool = False  # the full archive after the engine refused a delta

    @property
    def refused(self) -> bool:
        return self.kind == REFUSE


def image_state(image: Image, seen: Inspected | None) -> str:
    """present | missing | different: what a host holds under `image`'s tag (issue 14).

    The same content means the same config. Where the host shows a config digest (docker's
    classic store and podman as the image ID, containerd through the manifest) it must be
    ours. docker's containerd store shows none (a manifest digest, and a descriptor): there
    the same manifest digest, or else the same config fingerprint, decides. Equal layer
    diffIDs never do: a CMD, ENV, USER, LABEL or ENTRYPOINT change adds no layer."""
    if seen is None:
        return MISSING
    if seen.containerd_store:
        same = (bool(image.engine_id) and seen.id == image.engine_id) or (
            bool(image.fingerprint) and seen.fingerprint == image.fingerprint
        )
    else:
        same = bool(seen.id) and seen.id == image.id
    return PRESENT if same else DIFFERENT


def what_to_send(
    mode: str,
    images: Mapping[str, Image],
    states: Mapping[str, str],
    facts: Facts,
    delta: bool = False,
    relayed: bool = False,
) -> Action:
    """The first decision (module doc). `images`/`states`: ref -> image, ref -> its state
    on the host; `delta`: a layer store can assemble per-host archives; `relayed`: a relay
    tree feeds this host (it receives from its parent, never from here)."""
    missing = tuple(ref for ref in images if states[ref] != PRESENT)
    if mode == VERIFY:
        if missing:
            words = ", ".join(f"{ref} {DRIFT_WORDS[states[ref]]}" for ref in missing)
            return Action(REFUSE, f"drift: {words}", missing=missing, drift=True)
        return Action(OK, f"all {len(images)} image(s) present with the same content")
    if not missing:
        return Action(OK, "all images already present")
    host = platforms.Platform.of_host(facts.arch)
    refused = platforms.refusals(
        [(ref, images[ref].platform, images[ref].offered) for ref in missing], host
    )
    if refused:
        return Action(
            REFUSE,
            "; ".join(refused) + "; nothing was sent",
            hint=f"build or pull the images for {host} (play key platform: with "
            "local_pull), or leave this host out of the play",
            missing=missing,
        )
    if relayed:
        return Action(RELAY_CHILD, missing=missing)
    # a delta needs the host's layer chains: docker's (podman and containerd get the archive)
    payload = DELTA if delta and facts.engine == "docker" else FULL
    return Action(payload, missing=missing, payload=payload)


def how_to_send(
    action: Action,
    facts: Facts,
    codec: str,
    size: int,
    unpacked: int,
    transfer: str = AUTO,
    remote_tmp: str = "",
) -> Action:
    """The second decision (module doc): `size` the payload's bytes (or its estimate),
    `unpacked` the wanted images' size once loaded, `transfer` the host's setting."""
    if not facts.can_decode(codec):
        return replace(
            action,
            kind=REFUSE,
            reason=f"archive is {codec}-compressed but the host has no {codec} "
            f"and its engine ({facts.engine} {facts.engine_version}) cannot read it; "
            "nothing was sent",
            hint="use compression: auto or gzip for this play, or install it on the host",
        )
    need = int(unpacked * DISK_MARGIN)
    if facts.root_avail is not None and facts.root_avail < need:
        return replace(
            action,
            kind=REFUSE,
            reason=f"not enough space in the engine's data root {facts.docker_root or '?'}: "
            f"the images need about {_human(need)}, {_human(facts.root_avail)} free; "
            "nothing was sent",
            hint="free space on the host (docker image prune) and run again",
        )
    fits = facts.tmp_avail is None or facts.tmp_avail >= size * DISK_MARGIN
    if transfer == STAGED and not fits:
        return replace(
            action,
            kind=REFUSE,
            reason=f"not enough space in {remote_tmp} for the archive: need "
            f"{_human(size * DISK_MARGIN)}, {_human(facts.tmp_avail or 0)} free; "
            "nothing was sent",
            hint="use transfer: stream (or auto), or another remote_tmp",
        )
    how = (STAGED if fits else STREAM) if transfer == AUTO else transfer
    kind = STREAM if how == STREAM and action.payload == FULL else action.kind
    return replace(action, kind=kind, transfer=how, native=facts.engine_reads(codec))


def after_refused_delta(action: Action, cancelled: bool = False) -> Action | None:
    """A load failed: the full archive when it was a delta (an engine that refuses a
    partial archive, e.g. docker's containerd image store), else None (the failure stands)."""
    if action.payload != DELTA or cancelled:
        return None
    kind = STREAM if action.transfer == STREAM else FULL
    return replace(action, kind=kind, payload=FULL, fallback=True)


def choose_codec(facts: Iterable[Facts | None]) -> str:
    """`compression: auto` for a whole play (a relay tree: one stream): zstd when every
    reachable host can load it, else gzip (which every docker engine reads)."""
    known = [f for f in facts if f is not None]
    if known and all(f.can_decode("zstd") for f in known):
        return "zstd"
    return "gzip"


def host_codecs(facts: Mapping[str, Facts]) -> dict[str, str]:
    """`compression: auto` per host (issue 14): zstd where the host can load it (its engine
    reads it, or a `zstd` is there to pipe through), else gzip."""
    return {name: "zstd" if f.can_decode("zstd") else "gzip" for name, f in facts.items()}


def drifted(states: Mapping[str, str]) -> list[str]:
    """`ref words` for each image not present after a load (the verify step's complaint)."""
    return [f"{ref} {DRIFT_WORDS[s]}" for ref, s in states.items() if s != PRESENT]
