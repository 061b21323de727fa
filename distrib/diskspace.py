"""The workstation's free disk, for what distrib writes there from hosts (backup downloads).

A host decides how many bytes a download sends; the workstation's disk must not be filled by
one (issue 19). `DiskGuard` refuses a download that cannot fit before it starts, and stops one
that would eat into a reserve while it runs (the partial file is then removed by the caller).
"""

from __future__ import annotations

import shutil
from typing import Callable

from distrib.errors import TransferError
from distrib.units import human_bytes

RESERVE_MAX = 1000**3  # 1 GB is kept free ...
RESERVE_FRACTION = 0.05  # ... or 5% of the filesystem, whichever is smaller
CHECK_EVERY = 64 * 1024 * 1024  # bytes written between two looks at the free space
# A backup's size is known only at the end; the image's unpacked size bounds it. Archives
# measured here are about a third of that (DESIGN.md: ratios 0.34): refuse when even a 4:1
# compression could not fit.
BEST_RATIO = 0.25


def usage(path: str) -> tuple[int, int]:
    """(free bytes, filesystem size) of the filesystem holding `path`."""
    du = shutil.disk_usage(path)
    return du.free, du.total


class DiskGuard:
    """Watches the free space of `directory` while `host` writes into it."""

    def __init__(
        self, host: str, directory: str, usage: Callable[[str], tuple[int, int]] = usage
    ) -> None:
        self.host = host
        self.directory = directory
        self._usage = usage
        free, total = usage(directory)
        self.reserve = min(RESERVE_MAX, int(total * RESERVE_FRACTION))
        self._since_check = 0

    def preflight(self, estimate: int) -> None:
        """Refuse before a byte is sent when `estimate` (an upper bound) cannot fit."""
        free, _ = self._usage(self.directory)
        room = free - self.reserve
        if room < estimate * BEST_RATIO or room <= 0:
            raise self._full(free, f"about {human_bytes(estimate * BEST_RATIO)} or more needed")

    def wrote(self, nbytes: int) -> None:
        """Count written bytes; every CHECK_EVERY, stop when the reserve is reached."""
        self._since_check += nbytes
        if self._since_check < CHECK_EVERY:
            return
        self._since_check = 0
        free, _ = self._usage(self.directory)
        if free < self.reserve:
            raise self._full(free, "the download was stopped, nothing kept")

    def _full(self, free: int, what: str) -> TransferError:
        return TransferError(
            self.host,
            f"not enough free disk on the workstation in {self.directory}: "
            f"{human_bytes(free)} free, {human_bytes(self.reserve)} kept in reserve; {what}",
            hint="free space there, or pass another --dest",
        )
