"""Smoke test of the benchmark harness (bench/bench.py --quick): it runs end to end on a lab.

Opt-in with DISTRIB_BENCH_SMOKE=1: it brings up its own lab instance (DISTRIB_LAB_INSTANCE,
default 2) for about a minute, which CI should not spend. It checks that every method ran and
landed, never how fast (performance is measured by the benchmark, not asserted in tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        os.environ.get("DISTRIB_BENCH_SMOKE") != "1", reason="set DISTRIB_BENCH_SMOKE=1 to run"
    ),
]


def test_quick_benchmark_runs_every_method_and_writes_results() -> None:
    env = {**os.environ, "DISTRIB_LAB_INSTANCE": os.environ.get("DISTRIB_LAB_INSTANCE", "2")}
    before = set((ROOT / "bench" / "results").glob("*-quick.json"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "| distrib (gzip) |" in proc.stdout
    written = set((ROOT / "bench" / "results").glob("*-quick.json")) - before
    assert len(written) == 1
    doc = json.loads(written.pop().read_text())
    assert all(row["runs_ok"] == row["runs"] for row in doc["rows"].values()), doc["rows"]
    assert doc["targets"]["rerun_archive_bytes_sent"] == [0]
    # every timed run has each host's CPU seconds (sshd and engine trees), a run that loads
    # an image spends some on every host
    hosts = {f"node{i}" for i in range(1, doc["config"]["hosts"] + 1)}
    for name, samples in doc["samples"].items():
        for sample in samples:
            assert set(sample["host_cpu"]) == hosts, (name, sample["host_cpu"])
            assert all(v >= 0 for v in sample["host_cpu"].values()), (name, sample["host_cpu"])
    assert all(v > 0 for v in doc["samples"]["distrib (gzip)"][0]["host_cpu"].values())
