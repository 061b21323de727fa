"""Test helpers: one lab shared by a whole pytest session (a lab's names are machine-wide per
instance: pick the instance with $DISTRIB_LAB_INSTANCE or `instance=`)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from distrib import local
from distrib.lab import core, images
from distrib.lab.state import LabState


def unavailable_reason() -> str | None:
    """Why the lab cannot run here (for pytest.skip), or None when it can."""
    if sys.platform != "linux":
        return "the lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the lab needs root"
    for prog in ("dockerd", "sshd", "ip", "nsenter", "iptables", "busybox"):
        if local.which(prog) is None:
            return f"{prog} is not installed"
    return None


@contextlib.contextmanager
def session_lab(
    n_hosts: int = 3,
    *,
    build_images: bool = True,
    directory: str | None = None,
    instance: int | None = None,
) -> Iterator[LabState]:
    """Bring a lab of `n_hosts` up once (and the demo images), yield its state, take it down.

    Call it from a session-scoped fixture: every `up` replaces the previous lab of the instance.
    """
    state = core.up(n_hosts, directory=directory, instance=instance)
    try:
        if build_images:
            images.build_images()
        yield state
    finally:
        core.down(directory, instance=instance)
