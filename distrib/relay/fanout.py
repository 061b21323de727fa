"""`fanout: auto` (issue 16): relay when a tree pays for itself, else direct. Pure, no I/O.

Direct mode puts the payload on the workstation's uplink once per host; a relay tree puts it
there once, but first costs a fixed setup (a relay probe, a one-time key and authorized_keys
entry per host, one SSH handshake per tree level before the first byte flows, the sweep). The
tree pays when the uplink time it saves is larger than that setup:

    payload × (hosts − 1) ÷ uplink  >  RELAY_SETUP_SECONDS (5 s)  →  relay, else direct

`hosts` counts the batch's hosts (before probing: hosts found up to date receive nothing either
way), `payload` the images' size × COMPRESSED_RATIO (unless sent plain). The uplink is the
play's `uplink` (e.g. `200mbit`); without one, DEFAULT_UPLINK is
assumed (a LAN-class link: small payloads then go direct).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from distrib.units import human_bytes

DIRECT = "direct"
RELAY = "relay"
AUTO = "auto"

# Measured on the lab (README, "Fifty hosts"): with a payload too small to matter (2.2 MB, 200
# mbit/s), relay minus direct plus the uplink time direct spent was 2.0 s at 4 hosts (quiet
# machine), 4.6 s at 8, 4.5 s at 16 and 8.2 s at 32 (load average 15-50, every host's setup on
# the same 2 cores): 5 s, about their median, is the rule's threshold.
RELAY_SETUP_SECONDS = 5.0
DEFAULT_UPLINK = "1gbit"
# gzip and zstd of real files here (DESIGN.md: 0.344 / 0.338; demo/web 6.2 MB -> 2.16 MB sent,
# demo/medium 103 MB -> 33.9 MB): the rule's estimate of an archive from its images' size
COMPRESSED_RATIO = 0.35

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(bit|bps)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_rate(text: str) -> float:
    """A link rate as tc writes it (`200mbit`, `1gbit`, `500kbit`) → bytes per second."""
    match = _RATE.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a link rate: {text!r} (e.g. 200mbit, 1gbit)")
    return float(match.group(1)) * _SCALE[match.group(2).lower()] / 8


@dataclass(frozen=True)
class Choice:
    fanout: str  # direct | relay
    reason: str  # one line for --check, plan and the run's report


def choose(
    payload_bytes: int,
    hosts: int,
    uplink_bytes_per_s: float,
    setup_seconds: float = RELAY_SETUP_SECONDS,
) -> Choice:
    """The documented rule (module docstring): relay when the uplink time saved exceeds the
    tree's setup cost."""
    if hosts < 2:
        return Choice(DIRECT, f"{hosts} host: nothing to relay")
    saved = payload_bytes * (hosts - 1) / uplink_bytes_per_s
    numbers = (
        f"{human_bytes(payload_bytes)} × {hosts - 1} more hosts ÷ "
        f"{_rate_text(uplink_bytes_per_s)} = {saved:.1f}s of uplink saved"
    )
    if saved > setup_seconds:
        return Choice(RELAY, f"{numbers} > {setup_seconds:g}s relay setup")
    return Choice(DIRECT, f"{numbers} ≤ {setup_seconds:g}s relay setup: the tree cannot pay")


def _rate_text(bytes_per_s: float) -> str:
    bits = bytes_per_s * 8
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bits >= scale:
            return f"{bits / scale:g}{unit}"
    return f"{bits:g}bit"


def payload_bytes(job: object) -> int:
    """What a job would put on the uplink per host, as the rule estimates it: its images' size
    as the engine reports it (uncompressed), times COMPRESSED_RATIO unless the play sends them
    plain. Not the archive's own size: that is known only once built, and `--check`, the run
    and its report must all reach the same choice."""
    size = sum(int(getattr(i, "size", 0) or 0) for i in getattr(job, "images", ()))
    archive = getattr(job, "archive", None)
    if not size and archive is not None:
        return int(archive.size_hint)
    if getattr(job, "codec", "gzip") == "none":
        return size
    return int(size * COMPRESSED_RATIO)


def for_play(play: object, hosts: int, payload: int) -> Choice:
    """The play's fanout for a batch of `hosts`: `direct`/`relay` as written; `auto` by the
    rule, with the play's `uplink` (else DEFAULT_UPLINK, said so in the reason)."""
    fanout = str(getattr(play, "fanout", DIRECT) or DIRECT)
    if fanout != AUTO:
        return Choice(fanout, "as the play says")
    uplink = getattr(play, "uplink", None)
    choice = choose(payload, hosts, parse_rate(uplink or DEFAULT_UPLINK))
    if uplink:
        return choice
    return Choice(choice.fanout, f"{choice.reason} (uplink assumed; set the play's uplink)")
