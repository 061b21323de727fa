"""What the CLI prints at the end of a run, off a terminal (capsys is not a tty), with a
fake host task run through the API: no hosts, no docker."""

from __future__ import annotations

import argparse
import io
import threading
from typing import Any

import pytest

from distrib import api, cli, cli_args
from distrib.engine import CHANGED, FAILED, HostResult
from distrib.playbook import Playbook, adhoc_play
from distrib.progress import LineProgress


def _args(**over: Any) -> argparse.Namespace:
    base = {"json": False, "verbose": 0, "retry_file": None, "inventory": ["n1,n2,n3,"]}
    return argparse.Namespace(**{**base, **over})


class _Task:
    """n2 fails, the others change; nothing is contacted."""

    def run_on(
        self, host: Any, connect: Any, progress: Any, cancel: threading.Event
    ) -> HostResult:
        status = FAILED if host.name == "n2" else CHANGED
        result = HostResult(host.name, status, "loaded and verified 1 image(s)")
        progress.finished(result)
        return result


class _Never:
    def run_on(self, *_: Any) -> HostResult:
        raise AssertionError("a host was contacted")


def _execute(args: argparse.Namespace, task: Any = None) -> int:
    book = Playbook("<test>", (adhoc_play("all", ["demo:1"], name="demo"),))
    run = api.TaskRun(cli_args.options(args), book, {0: task or _Task()})
    return cli.run_and_report(args, run)


@pytest.mark.parametrize("as_json", [False, True])
def test_each_outcome_line_is_printed_once_off_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    monkeypatch.setattr(api, "keep_cache_in_bounds", lambda: None)  # no cache on the host
    code = _execute(_args(json=as_json))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 2
    for host, word in (("n1", "changed"), ("n2", "fatal"), ("n3", "changed")):
        assert text.count(f"{word}: [{host}] =>") == 1, text
    assert text.index("PLAY [demo]") < text.index("[n1] =>") < text.index("PLAY RECAP")


def test_results_the_progress_never_saw_are_printed_at_the_end() -> None:
    out = io.StringIO()
    progress = LineProgress(io.StringIO(), outcomes=out)
    seen = HostResult("n1", CHANGED, "loaded")
    progress.finished(seen)
    assert out.getvalue() == "changed: [n1] => loaded\n"
    assert progress.shown(seen)
    assert not progress.shown(seen)  # once: a second identical result is printed again
    assert not progress.shown(HostResult("n2", "skipped", "not started: interrupted"))


def test_junit_and_html_files_are_written_from_the_run(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xml.etree.ElementTree as ET

    monkeypatch.setattr(api, "keep_cache_in_bounds", lambda: None)
    junit, page = tmp_path / "r.xml", tmp_path / "r.html"
    args = _args(junit=str(junit), html=str(page), images=["demo:1"])
    code = _execute(args)
    assert code == 2
    root = ET.parse(junit).getroot()
    assert [c.get("classname") for c in root.iter("testcase")] == ["demo.n1", "demo.n2", "demo.n3"]
    assert root.get("failures") == "1"
    text = page.read_text()
    assert "distrib verify demo:1" in text and "demo:1" in text and "<svg" not in text  # no timings


def test_an_unwritable_report_file_is_refused_before_any_host(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distrib.errors import ConfigError

    args = _args(junit=str(tmp_path / "missing-dir" / "r.xml"))
    with pytest.raises(ConfigError, match=r"--junit .*r\.xml cannot be written"):
        _execute(args, _Never())
