"""The orchestrator's memory while distributing a ~2 GB image (issue 5: peak RSS < 200 MB).

    python bench/rss.py [--hosts 2] [--runs 1] [--codecs zstd,gzip]

Builds demo/huge:1.0 (`distrib lab images --huge`: ~2 GB of real files in three layers), then
rolls it out with each codec from an empty cache (save + compress + send + load: the whole
pipeline), hosts cleaned between runs. zstd is the whole-archive path (one archive followed by
every upload while it grows); gzip the layer-store path (layers compressed into the store, then
per-host archives assembled from it, loaded in steps). Peak RSS is the distrib process's own
VmHWM (polled) and wait4's ru_maxrss (its largest child too: docker save, zstd, pigz).
Uses bench/bench.py's lab driver on its own lab instance (default 2), link unshaped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as b  # noqa: E402 - the shared lab driver and measuring

IMAGE = "demo/huge:1.0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="peak RSS distributing a 2 GB image (issue 5)")
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--codecs", default="zstd,gzip")
    args = parser.parse_args(argv)
    return b.side_bench("rss-", lambda lab, work, env: measure_all(args, lab, work, env))


def measure_all(args: argparse.Namespace, lab: b.Lab, work: Path, env: dict[str, str]) -> int:
    rows: list[dict[str, Any]] = []
    lab.up(args.hosts, None)
    b.run(b.distrib_cmd("lab", "images", "--huge"), timeout=3600)
    size = int(b.run(["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE]).stdout)
    ctx = b.Ctx(lab, IMAGE, b.local_image_id(IMAGE), args.hosts, work, env)
    for index in range(1, args.runs + 1):
        for codec in args.codecs.split(","):
            lab.clean(IMAGE)
            phases = b.run_distrib(ctx, codec, clear_cache=True)
            row = {
                "run": index,
                "codec": codec,
                "seconds": phases["process_s"],
                "peak_rss_mb": phases["peak_rss_mb"],
                "wait4_maxrss_mb": phases["wait4_maxrss_mb"],
                "exit_code": phases["exit_code"],
            }
            rows.append(row)
            b.log(f"{codec}: {row}")
    doc = {
        "image": IMAGE,
        "image_bytes": size,
        "hosts": args.hosts,
        "rows": rows,
        "target_rss_mb": b.TARGET_RSS_MB,
        "met": all(r["peak_rss_mb"] < b.TARGET_RSS_MB for r in rows),
    }
    print(f"{IMAGE}: {size / b.MB:.0f} MB, {args.hosts} hosts")
    print(f"{'codec':6} {'seconds':>8} {'peak RSS MB':>12} {'wait4 max MB':>13}")
    for r in rows:
        print(
            f"{r['codec']:6} {r['seconds']:8.1f} {r['peak_rss_mb']:12.1f} "
            f"{r['wait4_maxrss_mb']:13.1f}"
        )
    b.save_results(doc, "rss")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
