"""Runs planned tasks on hosts: the executor in a worker thread, SIGINT/SIGTERM turned into a
cancel that gives hosts time to clean up, archive builds stopped with the run, secrets handed
to the hosts, and the run's result handed to reporting (`RunResult`)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from distrib.api.options import Connector, Options, Secrets
from distrib.api.tasks import Task, Tasks, run_task, shipped_job, shipped_variants
from distrib.engine import HostResult
from distrib.errors import EXIT_ERROR, EXIT_INTERRUPTED
from distrib.executor import RunResult as Executed
from distrib.plan import Plan, PlayPlan

if TYPE_CHECKING:  # the terminal display (tqdm) is imported only when a run shows it
    from distrib.progress import Progress

CLEANUP_GRACE_SECONDS = 30.0
# (plan) -> the progress display of the run; None: bars on a terminal, lines elsewhere
ProgressFactory = Callable[[Plan], "Progress"]


def no_extra() -> dict[str, Any]:
    return {}


@dataclass
class RunResult:
    """One run's outcome: every host's result, what the report prints after them, and how it
    ended. `executed` is None when the run was interrupted before any host finished."""

    plan: Plan
    executed: Executed | None
    interrupted: bool = False
    unshown: list[list[HostResult]] = field(default_factory=list)  # per play: not yet printed
    notes: list[list[str]] = field(default_factory=list)  # per play: archive, fanout, relay tree
    play_times: list[float] = field(default_factory=list)  # when each play started
    extra: Callable[[], dict[str, Any]] = no_extra  # keys the --json document adds

    @property
    def exit_code(self) -> int:
        if self.executed is None or self.interrupted:
            return EXIT_INTERRUPTED
        return self.executed.exit_code

    @property
    def hosts(self) -> list[HostResult]:
        plays = self.executed.plays if self.executed is not None else []
        return [h for p in plays for h in p.hosts]


def check_report_files(options: Options) -> None:
    """--retry-file, --junit and --html are found unwritable now, not after hosts changed."""
    from distrib import report

    if options.retry_file:
        report.check_retry_file(options.retry_file)
    for option, path in (("junit", options.junit), ("html", options.html)):
        if path:
            report.check_retry_file(path, f"--{option}")


def make_connector(options: Options, secrets: Secrets, kept: Any = None) -> Connector:
    """The run's connector: SSH (or `options.connect`), with the login password, through the
    sessions a probing pass kept open (`kept`: engine.KeptSessions)."""
    if options.connect is not None:
        base = options.connect
    else:
        from distrib import transport

        base = transport.connect
    base = secrets.connector(base)
    return base if kept is None else kept.connector(base)


def execute(
    options: Options,
    plan: Plan,
    tasks: Tasks,
    secrets: Secrets,
    progress: ProgressFactory | None = None,
    extra: Callable[[], dict[str, Any]] = no_extra,
    kept: Any = None,
) -> RunResult:
    """Run each play's task on its hosts and collect every outcome."""
    from distrib import report
    from distrib.executor import run_plan
    from distrib.progress import logged, make_progress
    from distrib.relay import run as relay_run

    check_report_files(options)
    tasks = {k: secrets.with_become(t) for k, t in tasks.items()}  # in memory only
    unchecked = [h.name for h in plan.hosts if h.target.host_key_checking == "off"]
    if unchecked:
        print(
            f"WARNING: host key checking is OFF for {', '.join(unchecked)}: a man in the middle "
            "would not be detected (host_key_checking: off)",
            file=sys.stderr,
        )
    out = options.out or sys.stdout
    if progress is not None:
        shown = progress(plan)
    else:
        shown = make_progress(
            [h.name for h in plan.hosts],
            runs=sum(len(p.hosts) for p in plan.plays),
            verbose=options.verbose,
            outcomes=out,
        )
    base = make_connector(options, secrets, kept)
    connect = logged(base, shown.log) if options.verbose >= 2 else base
    if options.verbose >= 3:
        _enable_ssh_debug_log()
    cancel = threading.Event()
    variants = shipped_variants(tasks)
    for job in variants:  # a layer store filling in the background stops with the run
        if job.store is not None:
            job.store.cancel_with(cancel)
    holder: dict[str, Executed] = {}
    finished = threading.Event()
    play_times: list[float] = []

    def on_play(play_plan: PlayPlan) -> None:
        play_times.append(time.time())
        banner = report.play_banner(play_plan.play.name, play_plan.hosts)
        if not play_plan.hosts:  # as ansible-playbook (the pattern matched nothing)
            banner += "\nskipping: no hosts matched"
        shown.write(banner, out)

    def work() -> None:
        try:
            holder["run"] = run_plan(
                plan,
                tasks,
                connect,
                shown,
                cancel,
                on_play=on_play,
                step=run_task,
                batch_step=relay_run.batch_step,  # `fanout: relay` plays (issue 9)
            )
        finally:
            finished.set()

    worker = threading.Thread(target=work, name="executor", daemon=True)
    interrupted = run_interruptibly(worker, cancel, finished)
    if interrupted:  # stop archive builds too: no partial file left on the workstation
        for job in variants:
            if job.archive is not None:
                job.archive.abort()
            if job.store is not None:
                job.store.abort_fill()
    shown.close()
    executed = holder.get("run")
    result = RunResult(plan, executed, interrupted, play_times=play_times, extra=extra)
    if executed is None:
        return result
    if interrupted:
        executed.interrupted = True
    result.interrupted = executed.interrupted
    for index, play_result in enumerate(executed.plays):
        result.unshown.append([h for h in play_result.hosts if not shown.shown(h)])
        result.notes.append(_play_notes(plan.plays[index], play_result, tasks.get(index)))
    return result


def _play_notes(play_plan: PlayPlan, play_result: Any, task: Task | None) -> list[str]:
    """What the report says after a play's host lines: its archive or layer store, the
    `fanout: auto` choice, the relay tree."""
    from distrib.api import summary
    from distrib.relay import run as relay_run

    notes = []
    job = shipped_job(task)
    deltas = [h for h in play_result.hosts if getattr(h, "layers_total", 0)]
    if deltas and job is not None and job.store is not None:
        line = summary.store_line(play_result.name, deltas, job.store)
    else:
        line = summary.archive_line(play_result.name, job.archive if job else None)
    if line:
        notes.append(line)
    if task is not None and getattr(play_plan.play, "fanout", None) == "auto":
        notes.append(summary.fanout_line(play_plan, task))
    if any(getattr(h, "fed_by", None) for h in play_result.hosts):
        notes.append(f"RELAY TREE [{play_result.name}] (who fed whom)")
        notes.append(relay_run.tree_text(play_result.hosts))
    return notes


def write_reports(options: Options, result: RunResult, err: IO[str] | None = None) -> int:
    """--junit, --html, then --retry-file, after the run (and after --json): a file that
    cannot be written is an error line and EXIT_ERROR, never a lost run; 0 when all went."""
    from distrib import report, report_files

    err = err or sys.stderr
    executed = result.executed
    if executed is None:
        return 0
    code = 0
    planned = [[str(s.ref) for s in p.play.images] for p in result.plan.plays]
    for option, path in (("junit", options.junit), ("html", options.html)):
        if not path:
            continue
        if option == "junit":
            text = report_files.junit(executed, planned)
        else:
            text = report_files.html_page(executed, planned, title=options.report_title)
        try:
            report_files.write(path, text)
        except OSError as exc:
            print(f"ERROR: cannot write --{option} {path}: {exc}", file=err)
            code = EXIT_ERROR
    if options.retry_file:  # after the JSON: a failure here must not lose the run's result
        try:
            report.write_retry_file(executed, options.retry_file)
        except OSError as exc:
            print(f"ERROR: cannot write --retry-file {options.retry_file}: {exc}", file=err)
            code = code or EXIT_ERROR
    return code


def _enable_ssh_debug_log() -> None:
    """-vvv: paramiko's debug log to stderr (handshake, auth methods, channels; no secrets)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger = logging.getLogger("paramiko")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def run_interruptibly(
    worker: threading.Thread, cancel: threading.Event, finished: threading.Event | None = None
) -> bool:
    """Run `worker`; on SIGINT/SIGTERM ask it to stop and give hosts time to clean up.

    `finished` (set by the worker at its end) is what is waited on when given: a
    Thread.join() cut by KeyboardInterrupt can leave is_alive() False while the thread still
    runs (CPython gh-90882), and the process would exit before hosts are cleaned up."""
    done = finished or threading.Event()

    def alive() -> bool:
        return not done.is_set() if finished is not None else worker.is_alive()

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        worker.start()
        while alive():
            try:
                done.wait(0.2) if finished is not None else worker.join(0.2)
            except KeyboardInterrupt:
                if interrupted:
                    break
                interrupted = True
                cancel.set()
                print("\ninterrupted: stopping and cleaning up hosts...", file=sys.stderr)
                if finished is not None:
                    done.wait(CLEANUP_GRACE_SECONDS)
                else:
                    worker.join(CLEANUP_GRACE_SECONDS)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    return interrupted
