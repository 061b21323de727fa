"""The lines a run's report prints after a play's host lines (what was shipped, and how)."""

from __future__ import annotations

from typing import Any

from distrib.plan import PlayPlan


def archive_line(name: str, archive: Any) -> str:
    from distrib.units import human_bytes

    if archive is None:
        return ""
    how = (
        "cached"
        if archive.cached
        else (f"built in {archive.build_seconds:g}s" if archive.build_seconds else "not needed")
    )
    if not archive.complete:
        return f"archive for play {name!r}: {archive.codec}, {how}"
    return (
        f"archive for play {name!r}: {len(archive.images)} image(s), {archive.codec}, "
        f"{human_bytes(archive.size)}, sha256 {archive.sha256[:12]} ({how})"
    )


def store_line(name: str, deltas: list[Any], store: Any) -> str:
    """A delta play: the layers sent, and what the layer store compressed while sending."""
    from distrib import units

    sent = sum(h.layers_sent for h in deltas)
    line = (
        f"layer store for play {name!r}: {sent} layer(s) sent to "
        f"{len(deltas)} host(s), only what each lacked"
    )
    if store.fill_added:
        line += (
            f"; {units.human_bytes(store.fill_added)} of new layers compressed in "
            f"{store.fill_seconds:.1f}s while sending (once, reused from now on)"
        )
    return line


def fanout_line(play_plan: PlayPlan, task: Any) -> str:
    """`fanout: auto`: which one the rule chose for the play's hosts, and why (issue 16)."""
    from distrib.relay import fanout

    payload = fanout.payload_bytes(task)
    sizes = sorted({len(b) for b in play_plan.batches} or {0}, reverse=True)
    choices = [fanout.for_play(play_plan.play, n, payload) for n in sizes]
    head = f"FANOUT [{play_plan.play.name}]: auto → "
    if len(sizes) == 1:
        return f"{head}{choices[0].fanout}: {choices[0].reason}"
    return head + "; ".join(  # serial: the rule is applied per batch
        f"batches of {n}: {c.fanout}: {c.reason}" for n, c in zip(sizes, choices)
    )
