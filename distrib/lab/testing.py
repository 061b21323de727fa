"""Test helpers: whether the lab can run here (the lab tests skip, with the reason, when not)."""

from __future__ import annotations

import os
import sys

from distrib import local


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
