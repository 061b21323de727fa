"""Small formatting helpers shared by the engine, progress and report."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """`4.1 MB`-style sizes in powers of 1000 (as docker and tqdm print them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover
