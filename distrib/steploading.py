"""Loading steps while the next is sent (issue 8, LayerStore.steps): the host loads step k
while step k+1 is on the wire, each checked (sha256) before it is loaded, over a HostSession.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from distrib import commands
from distrib.decide import Found, Loading
from distrib.errors import ConnectError
from distrib.outcome import Cancelled, Progress
from distrib.plan import HostPlan
from distrib.refs import ImageRef


class StepHost(Protocol):
    """What loading steps needs of a host (hostsession.HostSession)."""

    name: str
    cancel: threading.Event

    @property
    def host(self) -> HostPlan: ...
    @property
    def progress(self) -> Progress: ...
    def phase(self, name: str) -> None: ...
    def timed(self, name: str, started: float) -> None: ...
    def make_staging(self, key: str, part: str) -> int: ...
    def upload(self, payload: Any, part: str, offset: int, announce: bool) -> None: ...
    def checked_load(
        self,
        payload: Any,
        part: str,
        final: str,
        loading: Loading,
        remove_after: bool = ...,
        quiet: bool = ...,
    ) -> None: ...
    def cleanup(
        self, tempdir: str, verify: Sequence[ImageRef] | None = ..., stand_ins: Sequence[str] = ...
    ) -> Found | None: ...


def load_steps(
    hs: StepHost,
    key: str,
    steps: Iterable[Any],
    loading: Loading,
    verify: Sequence[ImageRef] | None,
) -> tuple[Found | None, int]:
    """Staged, one loading step at a time (LayerStore.steps): the host loads step k while
    step k+1 is on the wire, each checked (sha256) before it is loaded; the last holds
    the real config and tag, so the image appears only when everything arrived. The
    untagged stand-ins of the steps are removed in every outcome but a lost link (the
    next run then finds their layers, sends only the rest, and removes them). Returns
    (the identity of `verify` read with the cleanup, the number of steps loaded)."""
    tempdir = commands.staging_dir(hs.host.remote_tmp, key)
    hs.phase("upload")
    hs.make_staging(key, f"{tempdir}/-")
    loader = _StepLoader(hs, loading)
    keep, loaded, sent = False, False, []
    started = time.monotonic()
    try:
        for index, step in enumerate(steps):
            sent.append(step)
            if index == 0:
                hs.progress.transfer_started(hs.name, step.size)
            else:
                hs.progress.transfer_more(hs.name, step.size)
            final = f"{tempdir}/{commands.ARCHIVE_NAME}.{index}{step.extension}"
            hs.upload(step, final + ".part", 0, announce=False)
            loader.put(step, final + ".part", final)
        hs.timed("upload", started)
        hs.phase("load")
        waited = time.monotonic()
        loader.finish()
        hs.timed("load", waited)  # what loading added after the last byte
        loaded = True
    except ConnectError:
        keep = True  # the link is gone: loaded steps and the partial upload stay
        raise
    finally:
        loader.stop()
        stand_ins = [s.stand_in for s in sent if s.stand_in]
        found = None if keep else hs.cleanup(tempdir, verify if loaded else None, stand_ins)
    return found, len(sent)


class _StepLoader:
    """Loads checked steps in order on one worker thread while the next are uploaded. After
    a failure nothing more is loaded; `put` and `finish` re-raise it in the deploying thread."""

    def __init__(self, host: StepHost, loading: Loading) -> None:
        self._host, self._loading = host, loading
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"load-{host.name}")
        self._loads: list[Future[None]] = []
        self._stopped = threading.Event()  # a failure, or stop(): load nothing more

    def put(self, step: Any, part: str, final: str) -> None:
        for load in self._loads:
            if load.done() and load.exception() is not None:
                load.result()
        self._loads.append(self._pool.submit(self._load, step, part, final))

    def finish(self) -> None:
        """Wait until every step is loaded; raise the first failure."""
        for load in self._loads:
            load.result()

    def stop(self) -> None:
        """Load nothing more; wait for a load in progress (it must not outlive cleanup)."""
        self._stopped.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _load(self, step: Any, part: str, final: str) -> None:
        if self._stopped.is_set():
            return
        try:
            if self._host.cancel.is_set():
                raise Cancelled("interrupted")
            self._host.checked_load(step, part, final, self._loading, True, quiet=True)
        except BaseException:
            self._stopped.set()
            raise
