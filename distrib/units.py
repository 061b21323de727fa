"""Small formatting helpers shared by the engine, progress and report."""

from __future__ import annotations

import re

from distrib.errors import ConfigError


def human_bytes(n: float) -> str:
    """`4.1 MB`-style sizes in powers of 1000 (as docker and tqdm print them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover


_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def parse_size(text: str) -> int:
    """`20G`, `500M`, `1.5T`, `1000` (bytes) -> bytes (powers of 1000, as docker prints)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ConfigError(f"not a size: {text!r} (use e.g. 500M, 20G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])
