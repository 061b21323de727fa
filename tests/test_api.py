"""distrib.api driven as a program would: Options and Secrets in, a RunResult out. Hosts are
the fake transport (tests/fakes.py); no argument parsing, nothing printed by the CLI."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from distrib import api, report
from distrib.api.tasks import run_task, shipped_job, shipped_variants
from distrib.archive import Archive
from distrib.engine import CHANGED, OK, UNREACHABLE, HostResult, Job
from distrib.engines import Secret
from distrib.errors import EXIT_HOST_UNREACHABLE, EXIT_OK, ConfigError
from distrib.playbook import Playbook, adhoc_play
from distrib.progress import Progress
from distrib.tidy_tasks import KeepTask
from distrib.workflows.steps import Noted
from tests.fakes import FakeFleet
from tests.test_engine import WEB, WORKER, archive, fake  # noqa: F401 - fixture

__all__ = ["archive"]


def _book(name: str = "demo") -> Playbook:
    return Playbook("<test>", (adhoc_play("all", ["demo/web:1.0"], name=name),))


def _quiet(plan: Any) -> Progress:
    return Progress()


@dataclass(frozen=True)
class _Recording:
    """A host task that records what reached it (its become password, its host)."""

    seen: dict[str, Any] = field(default_factory=dict)
    become_password: Secret | None = field(default=None, repr=False)

    def run_on(
        self, host: Any, connect: Any, progress: Progress, cancel: threading.Event
    ) -> HostResult:
        connect(host.target).close()
        self.seen[host.name] = self.become_password
        result = HostResult(host.name, OK, "looked")
        progress.finished(result)
        return result


def test_a_prepared_job_runs_on_every_planned_host_and_the_result_says_how(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = (
        fake("a"),
        fake("b", images={"demo/web:1.0": WEB, "demo/worker:1.0": WORKER}),
        fake("c"),
    )
    c.reachable = False
    out = io.StringIO()
    options = api.Options(inventory=["a,b,c,"], connect=FakeFleet(a, b, c), out=out)
    run = api.TaskRun(options, _book(), {0: Job.deploy(archive)})
    assert [h.name for h in run.plan().hosts] == ["a", "b", "c"]  # no connection yet
    assert not a.log and not b.log
    result = run.run(_quiet)
    assert {h.host: h.status for h in result.hosts} == {"a": CHANGED, "b": OK, "c": UNREACHABLE}
    assert result.exit_code == EXIT_HOST_UNREACHABLE and not result.interrupted
    assert "PLAY [demo]" in out.getvalue()
    assert len(result.notes[0]) == 1  # what was shipped, for the report after the hosts
    assert result.notes[0][0].startswith("archive for play 'demo': 2 image(s), gzip")
    assert f"sha256 {archive.sha256[:12]}" in result.notes[0][0]
    # the progress showed nothing: each result is left for the caller to report
    assert [[h.host for h in play] for play in result.unshown] == [["a", "b", "c"]]
    assert capsys.readouterr().out == ""  # the API writes only to options.out
    document = report.to_json(result.executed)  # type: ignore[arg-type]
    assert document["plays"][0]["hosts"]["a"]["status"] == CHANGED


def test_secrets_take_one_route_from_the_caller_to_the_hosts(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    a: {}\n    b: {ansible_password: own-login}\n", encoding="utf-8"
    )
    fleet = FakeFleet(fake("a"), fake("b"))
    targets: dict[str, Any] = {}

    def connect(target: Any) -> Any:
        targets[target.name] = target
        return fleet(target)

    read: list[int] = []

    def secrets() -> api.Secrets:
        read.append(1)
        return api.Secrets(become=Secret("sudo-pw"), ssh_password=Secret("login-pw"))

    task = _Recording()
    options = api.Options(
        inventory=[str(inventory)], connect=connect, secrets=secrets, out=io.StringIO()
    )
    run = api.TaskRun(options, _book(), {0: task})
    result = run.run(_quiet)
    assert result.exit_code == EXIT_OK and read == [1]  # read once
    # the login password goes to the hosts whose inventory gives none; sudo's to each task
    assert targets["a"].password.reveal() == "login-pw"
    assert targets["b"].password.reveal() == "own-login"
    assert {h: s.reveal() for h, s in task.seen.items()} == {"a": "sudo-pw", "b": "sudo-pw"}
    shown = repr(api.Secrets(Secret("sudo-pw"), Secret("login-pw"))) + repr(targets["a"])
    shown += json.dumps(report.to_json(result.executed))  # type: ignore[arg-type]
    assert "sudo-pw" not in shown and "login-pw" not in shown


def test_secrets_are_read_after_the_plan_and_not_to_list_hosts() -> None:
    read: list[int] = []

    def secrets() -> api.Secrets:
        read.append(1)
        return api.Secrets()

    listing = api.Options(inventory=["a,b,"], list_hosts=True, secrets=secrets, connect=FakeFleet())
    assert [h.name for h in api.TaskRun(listing, _book(), {}).plan().hosts] == ["a", "b"]
    assert read == []
    wrong = api.Options(inventory=["a,b,"], limit="nosuch", secrets=secrets, connect=FakeFleet())
    with pytest.raises(ConfigError):  # an input error comes before any prompt
        api.TaskRun(wrong, _book(), {}).plan()
    assert read == []
    api.TaskRun(api.Options(inventory=["a,"], secrets=secrets), _book(), {}).plan()
    assert read == [1]


def test_each_task_kind_runs_through_one_typed_step(archive: Archive) -> None:
    from distrib.plan import HostPlan
    from distrib.target import Target

    h = HostPlan("a", Target("a", "a.lab"), ("docker",), "/var/tmp")
    fleet = FakeFleet(fake("a"))
    job = Job.deploy(archive)
    assert run_task(h, job, fleet, None, threading.Event()).status == CHANGED  # engine.deploy
    noted = Noted(CHANGED, "would be committed")
    assert run_task(h, noted, fleet, None, threading.Event()).message == "would be committed"
    keep = KeepTask(job, 2)
    assert shipped_job(job) is job and shipped_job(keep) is job and shipped_job(noted) is None
    assert shipped_variants({0: keep, 1: noted}) == [job]


def test_several_plays_each_with_its_task_and_the_reports_written_after(
    archive: Archive, tmp_path: Path
) -> None:
    book = Playbook(
        "<test>",
        (
            adhoc_play("all", ["demo/web:1.0"], name="ship"),
            adhoc_play("a", ["demo/web:1.0"], name="note"),
        ),
    )
    retry = tmp_path / "retry"
    fleet = FakeFleet(fake("a"), fake("b", reachable=False))
    options = api.Options(
        inventory=["a,b,"], connect=fleet, out=io.StringIO(), retry_file=str(retry)
    )
    tasks: api.Tasks = {0: Job.deploy(archive), 1: Noted(CHANGED, "noted")}
    result = api.TaskRun(options, book, tasks, lambda: {"extra": True}).run(_quiet)
    assert [p.name for p in result.executed.plays] == ["ship", "note"]  # type: ignore[union-attr]
    assert [h.message for h in result.executed.plays[1].hosts] == ["noted"]  # type: ignore[union-attr]
    assert result.extra() == {"extra": True}
    assert len(result.play_times) == 2
    assert not retry.exists()  # the caller hands the result to the report files when it wants
    assert api.write_reports(options, result) == 0
    assert retry.read_text().split() == ["b"]  # the unreachable host, for --limit @retry
