"""The benchmark of issue 8: re-rolling a small change over a large base.

    python bench/delta_bench.py [--hosts 4] [--uplink 200mbit] [--runs 3]

v1 = demo/big:1.0 (~517 MB of real files, from `distrib lab images --bench`) is first rolled out
to every host; v2 = v1 + a ~5 MB layer of real files. Then, side by side in one invocation,
`--runs` times each, interleaved, medians, every run starting from hosts that hold v1 but not v2:

1. distrib with the layer store (`delta: auto`, the default; the store is warmed once, untimed,
   as it is after any earlier rollout): each host is sent only the new layer;
2. distrib with `delta: off`: the whole v2 archive (gzip, cached) to every host;
3. the manual procedure: `docker save v2 | gzip -9` once, then `scp` + `docker load` host by host.

Bytes on the wire come from the lab bridge's tx counter (workstation -> hosts). Targets (issue 8):
wire bytes <= 1.1 x (compressed new layer) + 64 KiB per host, and time <= 10 % of a full
rollout. Reuses the lab driver and the measuring of bench/bench.py (same lab instance, default 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as b  # noqa: E402 - the shared lab driver and measuring

V1 = "demo/big:1.0"
V2 = "demo/big:2.0-bench"  # not the tests' demo/big:2.0: both may run at once
TARGET_WIRE_FACTOR = 1.1
TARGET_WIRE_SLACK = 64 * 1024  # per host
TARGET_TIME_RATIO = 0.10


def build_v2() -> None:
    """v2 = v1 + one ~5 MB layer of real files (the Python stdlib, not random bytes)."""
    with tempfile.TemporaryDirectory() as ctx:
        src = Path(os.__file__).parent
        # (plain sh: `head` closing the pipe early is expected, not a failure)
        script = f"tar -C {src} -cf - . 2>/dev/null | head -c 5000000 > {ctx}/payload.tar"
        b.run(["sh", "-c", script])
        Path(ctx, "Dockerfile").write_text(f"FROM {V1}\nCOPY payload.tar /opt/release-2/\n")
        b.run(["docker", "build", "-q", "-t", V2, ctx], env={**os.environ, "DOCKER_BUILDKIT": "0"})


def playbook(ctx: b.Ctx, name: str, image: str, delta: str) -> Path:
    path = ctx.work / f"{name}.yaml"
    path.write_text(
        f"- name: {name}\n  hosts: all\n  images: [{image}]\n  compression: gzip\n"
        f"  delta: '{delta}'\n"
    )
    return path


def distrib_run(ctx: b.Ctx, book: Path) -> dict[str, Any]:
    env = {**ctx.env, "DISTRIB_CACHE_DIR": str(b.cache_dir(ctx))}
    proc = b.run(
        b.distrib_cmd("run", str(book), "-i", ctx.lab.state.inventory, "--json"),
        env=env,
        check=False,
        timeout=b.RUN_TIMEOUT,
    )
    if proc.returncode != 0:
        raise b.BenchError(
            f"distrib run {book.name} exited {proc.returncode}: {proc.stderr[-500:]}"
        )
    hosts = json.loads(proc.stdout)["plays"][0]["hosts"]
    return {
        "hosts": {
            n: {k: h.get(k) for k in ("status", "bytes_sent", "layers_sent")}
            for n, h in hosts.items()
        },
        "archive_bytes_sent": sum(int(h["bytes_sent"]) for h in hosts.values()),
    }


def new_layer_blob(ctx: b.Ctx) -> int:
    """Compressed size of v2's new layer as the layer store holds it."""
    code = (
        "import sys; from distrib.archive import inspect_local; from distrib.refs import ImageRef;"
        "from distrib.layerstore import LayerStore; r=ImageRef.parse(sys.argv[1]);"
        "i=inspect_local([r])[0][r]; s=LayerStore(); s.ensure([i]);"
        "print(s.blob(i.diff_ids[-1]).size)"
    )
    env = {**ctx.env, "DISTRIB_CACHE_DIR": str(b.cache_dir(ctx))}
    return int(b.run([sys.executable, "-c", code, V2], env=env).stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="delta re-roll vs full archive vs manual (issue 8)"
    )
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--uplink", default="200mbit")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    return b.side_bench("delta-", lambda lab, work, env: measure_all(args, lab, work, env))


def measure_all(args: argparse.Namespace, lab: b.Lab, work: Path, env: dict[str, str]) -> int:
    lab.up(args.hosts, args.uplink)
    b.run(b.distrib_cmd("lab", "images", "--bench"), timeout=1800)
    build_v2()
    ctx = b.Ctx(lab, V2, b.local_image_id(V2), args.hosts, work, env)
    b.log("rolling out v1 to every host (untimed) and warming the layer store")
    distrib_run(ctx, playbook(ctx, "v1", V1, "auto"))
    blob = new_layer_blob(ctx)
    methods = {
        "distrib delta (layer store)": lambda: distrib_run(
            ctx, playbook(ctx, "v2-delta", V2, "auto")
        ),
        "distrib full archive": lambda: distrib_run(ctx, playbook(ctx, "v2-full", V2, "off")),
        "manual (save|gzip -9, scp, load)": lambda: b.manual(ctx),
    }
    distrib_run(ctx, playbook(ctx, "v2-full", V2, "off"))  # warm the whole-archive cache too
    samples: dict[str, list[b.Sample]] = {m: [] for m in methods}
    for index in range(1, args.runs + 1):
        for method, fn in methods.items():
            samples[method].append(b.measure(ctx, method, index, fn))
    rows = {m: b.summarise(s) for m, s in samples.items()}
    delta = rows["distrib delta (layer store)"]
    full = rows["distrib full archive"]
    budget = args.hosts * (TARGET_WIRE_FACTOR * blob + TARGET_WIRE_SLACK)
    verdict = {
        "new_layer_compressed_bytes": blob,
        "wire_budget_bytes": int(budget),
        "wire_ok": bool(delta.get("wire_tx_bytes", 1e18) <= budget),
        "time_ratio_delta_over_full": round(delta["median_s"] / full["median_s"], 3)
        if delta.get("median_s") and full.get("median_s")
        else None,
    }
    verdict["time_ok"] = bool(
        verdict["time_ratio_delta_over_full"] is not None
        and verdict["time_ratio_delta_over_full"] <= TARGET_TIME_RATIO
    )
    doc = {
        "hosts": args.hosts,
        "uplink": args.uplink,
        "runs": args.runs,
        "rows": rows,
        "verdict": verdict,
    }
    print(f"{'method':36} {'median s':>9} {'wire MB':>9}")
    for method, row in rows.items():
        wire = row.get("wire_tx_bytes", 0) / b.MB
        print(f"{method:36} {row.get('median_s', float('nan')):9.2f} {wire:9.2f}")
    print(
        f"new layer {blob / b.MB:.2f} MB compressed; wire budget {budget / b.MB:.2f} MB "
        f"({'met' if verdict['wire_ok'] else 'MISSED'}); delta/full time "
        f"{verdict['time_ratio_delta_over_full']} ({'met' if verdict['time_ok'] else 'MISSED'})"
    )
    b.save_results(doc, "delta")
    return 0


if __name__ == "__main__":
    sys.exit(main())
