"""Fifty hosts (issue 16): distrib against the parallel one-liner and Ansible as hosts grow.

    python bench/scale.py [--hosts 8,16,32,64] [--medium|--medium-only] [--runs 3]
                          [--uplink 200mbit] [--only oneliner,cold,...]

For each N (default 8: about 5 minutes on a quiet 2-core machine) it brings up N lab hosts
(instance $DISTRIB_LAB_INSTANCE, default 1) behind a shaped workstation uplink and measures,
`--runs` times with the rows interleaved round-robin, medians:

- oneliner: `docker save | gzip | ssh host 'gunzip | docker load'`, N at once (the baseline:
  every ratio is against it, same invocation);
- cold: `distrib run` (forks N, compression auto), its layer store emptied first;
- noop: the same play again, nothing changed;
- verify: `distrib verify` of that play;
- warm: `distrib run` with the layer store warm, hosts fresh;
- relay: the same with `fanout: relay` (no relay_group: one root), store warm;
- ansible: `docker save | gzip > f` once, then ansible-playbook (copy + command: docker load,
  forks N).

Each row starts from hosts without the image (except noop and verify, which follow a run) and
counts only when every host then holds the workstation's image ID. Per row: seconds, bytes on
the uplink (the lab bridge's tx counter, checked against a raw TCP transfer first), for distrib
the remote commands per host (from -vv: each `[host] $ command` line is one command sent). The
image is small (`demo/web:1.0`, a few MB); `--medium` adds `demo/medium:1.0` (~100 MB of real
files, built here). Helpers (lab, methods, counters, run_distrib) are bench/bench.py's.

Writes bench/results/<stamp>-scale.json and scale-latest.json, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as b  # noqa: E402  (bench/bench.py: the shared helpers)

ROWS = ("oneliner", "cold", "noop", "verify", "warm", "relay", "ansible")
SMALL = "demo/web:1.0"
MEDIUM = "demo/medium:1.0"
LABELS = {
    "oneliner": "one-liner (save \\| gzip \\| ssh gunzip \\| load), N at once",
    "cold": "distrib, layer store cold",
    "noop": "distrib re-run, nothing changed",
    "verify": "distrib verify",
    "warm": "distrib, layer store warm",
    "relay": "distrib fanout: relay (one root), store warm",
    "ansible": "Ansible (copy + docker load, forks N)",
}

PLAY = """\
- name: scale {fanout}
  hosts: all
  images: [{image}]
  compression: auto
  forks: {forks}
  fanout: {fanout}
"""


def playbook(ctx: b.Ctx, fanout: str) -> Path:
    path = ctx.work / f"scale-{fanout}.yaml"
    path.write_text(PLAY.format(image=ctx.image, forks=ctx.hosts, fanout=fanout))
    return path


def build_medium() -> None:
    """demo/medium:1.0: ~100 MB of the machine's own libraries (real, compressible bytes) on the
    lab's busybox base, two layers."""
    if b.run(["docker", "image", "inspect", MEDIUM], check=False).returncode == 0:
        return
    with tempfile.TemporaryDirectory(dir=b.WORK) as tmp:
        ctx = Path(tmp)
        for part, size in (("a", 70), ("b", 30)):
            target = ctx / part
            target.mkdir()
            total = 0
            for f in sorted(Path("/usr/lib/x86_64-linux-gnu").rglob("*")):
                if total >= size * b.MB:
                    break
                if f.is_file() and not f.is_symlink() and f.stat().st_size < 20 * b.MB:
                    dest = target / f"{total}-{f.name}"
                    dest.write_bytes(f.read_bytes())
                    total += dest.stat().st_size
        (ctx / "Dockerfile").write_text("FROM distrib/busybox:latest\nCOPY a /a\nCOPY b /b\n")
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        b.run(["docker", "build", "-q", "-t", MEDIUM, str(ctx)], env=env)


def distrib_row(ctx: b.Ctx, fanout: str, clear: bool) -> dict[str, Any]:
    phases = b.run_distrib(
        ctx, "auto", clear_cache=clear, playbook=playbook(ctx, fanout), extra=("-vv",)
    )
    sent = [int(h.get("bytes_sent") or 0) for h in phases["hosts"].values()]
    phases["bytes_sent_median"] = int(statistics.median(sent)) if sent else 0
    return phases


def verify_row(ctx: b.Ctx) -> dict[str, Any]:
    inventory = ctx.lab.state.inventory
    cmd = b.distrib_cmd("verify", "-i", inventory, "-f", str(ctx.hosts), "-vv", ctx.image)
    proc = b.run(cmd, env={**ctx.env, "DISTRIB_CACHE_DIR": str(b.cache_dir(ctx))})
    counts: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        if line.startswith("[") and "] $ " in line:
            host = line[1 : line.index("]")]
            counts[host] = counts.get(host, 0) + 1
    rest = [line for line in proc.stderr.splitlines() if "] $ " not in line]
    return {"remote_commands": counts, "timeline": [(0, line[:200]) for line in rest[-25:]]}


def measure_case(lab: b.Lab, n: int, image: str, runs: int, rows: list[str]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=b.WORK))
    env = {**os.environ}
    ctx = b.Ctx(lab, image, b.local_image_id(image), n, work, env)
    methods = {
        "oneliner": (lambda: b.oneliner(ctx), True),
        "cold": (lambda: distrib_row(ctx, "direct", clear=True), True),
        "noop": (lambda: distrib_row(ctx, "direct", clear=False), False),
        "verify": (lambda: verify_row(ctx), False),
        "warm": (lambda: distrib_row(ctx, "direct", clear=False), True),
        "relay": (lambda: distrib_row(ctx, "relay", clear=False), True),
        "ansible": (lambda: b.ansible(ctx), True),
    }
    load = {"start": os.getloadavg()}
    samples: dict[str, list[b.Sample]] = {r: [] for r in rows}
    seeded = "cold" in rows and rows.index("cold") < min(
        (rows.index(r) for r in ("noop", "verify", "warm", "relay") if r in rows), default=99
    )
    for index in range(1, runs + 1):
        for row in rows:
            fn, clean = methods[row]
            if row in ("noop", "verify", "warm", "relay") and not seeded:
                # these need the layer store (and noop/verify a landed image): one cold run first
                b.measure(ctx, "cold (setup)", index, methods["cold"][0])
                seeded = True
            sample = b.measure(ctx, row if row != "noop" else b.RERUN, index, fn, clean=clean)
            sample.method = row
            samples[row].append(sample)
    load["end"] = os.getloadavg()
    out: dict[str, Any] = {"hosts": n, "image": image, "load_average": load, "rows": {}}
    for row, got in samples.items():
        summary = b.summarise(got)
        ok = [s for s in got if s.ok]
        per_host = [c for s in ok for c in (s.phases.get("remote_commands") or {}).values()]
        if per_host:
            summary["remote_commands_per_host"] = {
                "median": statistics.median(per_host),
                "max": max(per_host),
            }
        timings: dict[str, list[float]] = {}  # distrib's per-host phase seconds (--json)
        for s in ok:
            for h in (s.phases.get("hosts") or {}).values():
                for phase, sec in (h.get("timings") or {}).items():
                    timings.setdefault(phase, []).append(float(sec))
        if timings:
            summary["host_phase_s_median"] = {
                k: round(statistics.median(v), 2) for k, v in timings.items()
            }
        cpu = [
            s.phases["cpu_user_s"] + s.phases["cpu_sys_s"] for s in ok if "cpu_user_s" in s.phases
        ]
        if cpu:  # the distrib process itself (wait4: it and its children, e.g. docker save)
            summary["distrib_process_cpu_s"] = round(statistics.median(cpu), 2)
        payload = [s.phases["bytes_sent_median"] for s in ok if s.phases.get("bytes_sent_median")]
        if payload:
            summary["payload_bytes"] = int(statistics.median(payload))
        summary["samples"] = [
            {"run": s.run, "ok": s.ok, "s": s.seconds, "wire_tx": s.wire_tx, "error": s.error,
             "load_1m": round(s.load_1m, 2), "host_cpu_s": s.host_cpu,
             "workstation_cpu_s": s.workstation_cpu,
             "timeline": s.phases.get("timeline", [])[:25]}
            for s in got
        ]  # fmt: skip
        out["rows"][row] = summary
    direct = out["rows"].get("warm", out["rows"].get("cold", {})).get("payload_bytes")
    relay = out["rows"].get("relay", {})
    if direct and relay.get("wire_tx_bytes"):
        relay["uplink_over_payload"] = round(relay["wire_tx_bytes"] / direct, 3)
    return out


def table(doc: dict[str, Any]) -> str:
    lines = [
        "| hosts | image | row | median s (min–max) | × one-liner | uplink MB | "
        "uplink ÷ payload | remote commands per host (median/max) | host CPU s per host "
        "(median/max) | workstation CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in doc["cases"]:
        base = case["rows"].get("oneliner", {}).get("median_s")
        payload = (case["rows"].get("warm") or case["rows"].get("cold") or {}).get("payload_bytes")
        for row, r in case["rows"].items():
            if not r.get("median_s"):
                lines.append(
                    f"| {case['hosts']} | {case['image']} | {LABELS[row]} | failed "
                    f"({r['runs_ok']}/{r['runs']}) | | | | | | |"
                )
                continue
            ratio = f"{r['median_s'] / base:.2f}×" if base else ""
            tx = r.get("wire_tx_bytes", 0)
            over = f"{tx / payload:.2f}×" if payload and row not in ("noop", "verify") else ""
            cmds = r.get("remote_commands_per_host")
            cmd_text = f"{cmds['median']:g} / {cmds['max']}" if cmds else ""
            cpu = r.get("host_cpu_s")
            cpu_text = f"{cpu:.2f} / {r['host_cpu_s_max_host']:.2f}" if cpu is not None else ""
            lines.append(
                f"| {case['hosts']} | {case['image']} | {LABELS[row]} | {r['median_s']:.1f} "
                f"({r['min_s']:.1f}–{r['max_s']:.1f}) | {ratio} | {tx / b.MB:.1f} | {over} | "
                f"{cmd_text} | {cpu_text} | {r.get('workstation_cpu_s', '')} |"
            )
        load = case.get("load_average", {})
        start, end = load.get("start"), load.get("end")
        if start and end:
            lines.append(
                f"| {case['hosts']} | {case['image']} | *load average (1 min) at start → end* | "
                f"{start[0]:.1f} → {end[0]:.1f} | | | | | | |"
            )
    return "\n".join(lines)


def targets(doc: dict[str, Any]) -> list[str]:
    """Issue 16's targets at 32 hosts, small image, where this doc has that case."""
    out = []
    for case in doc["cases"]:
        if case["hosts"] != 32 or case["image"] != SMALL:
            continue
        rows = case["rows"]
        base = rows.get("oneliner", {}).get("median_s")

        def check(name: str, value: float | None, goal: float, unit: str = "") -> None:
            if value is None:
                out.append(f"- {name}: not measured (goal ≤ {goal:g}{unit})")
                return
            verdict = "met" if value <= goal else "MISSED"
            out.append(f"- {name}: {value:.2f}{unit} (goal ≤ {goal:g}{unit}): {verdict}")

        cold = rows.get("cold", {}).get("median_s")
        check("cold ÷ one-liner", cold / base if cold and base else None, 1.0, "×")
        check("no-op re-run", rows.get("noop", {}).get("median_s"), 3.0, " s")
        check("verify", rows.get("verify", {}).get("median_s"), 3.0, " s")
        for row, goal in (("noop", 1.0), ("cold", 5.0)):
            cmds = rows.get(row, {}).get("remote_commands_per_host", {}).get("max")
            check(f"remote commands per host, {row} (max)", cmds, goal)
    return out


def report(paths: list[str]) -> str:
    """The merged table (and the 32-host targets) of several result files, later files
    winning for a (hosts, image) case both have."""
    cases: dict[tuple[int, str], Any] = {}
    for path in paths:
        for case in json.loads(Path(path).read_text())["cases"]:
            cases[(case["hosts"], case["image"])] = case
    doc = {"cases": [cases[k] for k in sorted(cases)]}
    return "\n".join([table(doc), "", *targets(doc)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="distrib at 8-64 hosts (issue 16)")
    parser.add_argument(
        "--hosts", default="8", help="comma list of N from 4,8,16,32,64 (default 8)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--uplink", default="200mbit", help="tc rate of the workstation uplink")
    parser.add_argument("--medium", action="store_true", help=f"also {MEDIUM} (~100 MB)")
    parser.add_argument("--medium-only", action="store_true", help=f"only {MEDIUM}")
    parser.add_argument("--only", metavar="R1,R2", help=f"rows: {','.join(ROWS)}")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    parser.add_argument(
        "--report", nargs="+", metavar="JSON", help="print the merged table of result files"
    )
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    sizes = [int(x) for x in args.hosts.split(",")]
    if any(n not in (4, 8, 16, 32, 64) for n in sizes):  # 4: the relay uplink target's
        parser.error("--hosts takes N from 4, 8, 16, 32, 64")
    rows = [r for r in ROWS if not args.only or r in args.only.split(",")]
    if "ansible" in rows and b.ansible_available() is None:
        b.log("ansible-playbook not found: no Ansible row")
        rows.remove("ansible")
    instance = os.environ.setdefault("DISTRIB_LAB_INSTANCE", "1")
    b.WORK.mkdir(parents=True, exist_ok=True)
    b.compile_distrib()
    lab = b.Lab(instance)
    args.medium = args.medium or args.medium_only
    images = [*([] if args.medium_only else [SMALL]), *([MEDIUM] if args.medium else [])]
    doc: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "uplink": args.uplink,
        "runs": args.runs,
        "distrib": b.run(["git", "rev-parse", "--short", "HEAD"], check=False).stdout.strip(),
        "load_average_start": os.getloadavg(),
        "cases": [],
    }
    try:
        b.run(b.distrib_cmd("lab", "images"), timeout=1800)
        if args.medium:
            build_medium()
        for n in sizes:
            lab.up(n, args.uplink)
            doc.setdefault("counter_checks", []).append(b.check_counter(lab))
            for image in images:
                b.log(f"{n} hosts, {image}: rows {', '.join(rows)}, {args.runs} runs")
                doc["cases"].append(measure_case(lab, n, image, args.runs, rows))
                b.save_results(doc, "scale")
    except (b.BenchError, OSError) as exc:
        b.log(f"benchmark failed: {exc}")
        b.save_results(doc, "scale")
        return 1
    finally:
        if not args.keep_lab:
            lab.down()
    doc["load_average_end"] = os.getloadavg()
    b.save_results(doc, "scale")
    print(table(doc))
    print("\n".join(targets(doc)))
    print(f"\nuplink {args.uplink}; {shlex.join(sys.argv)}; load average "
          f"{doc['load_average_start'][0]:.1f} → {doc['load_average_end'][0]:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
