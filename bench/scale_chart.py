"""Draw bench/scale.py's chart: wall seconds vs hosts per row, and host CPU seconds per host.

Run with bench/.venv's python (matplotlib lives there, not in distrib's dependencies); several
result files are merged (e.g. 8/16/32 hosts in one invocation, 64 in another), the later file
winning for a (hosts, image) case both have:
    bench/.venv/bin/python bench/scale_chart.py bench/scale.png bench/results/A-scale.json ...
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {  # row: (label, colour, line style)
    "oneliner": ("one-liner, N at once", "#7f7f7f", "--"),
    "ansible": ("Ansible, forks N", "#bcbd22", "--"),
    "cold": ("distrib, store cold", "#1f77b4", "-"),
    "warm": ("distrib, store warm", "#17becf", "-"),
    "relay": ("distrib relay, one root", "#9467bd", "-"),
    "noop": ("distrib re-run (no-op)", "#2ca02c", "-"),
    "verify": ("distrib verify", "#d62728", "-"),
}


def cases(paths: list[str]) -> tuple[dict[tuple[int, str], dict[str, Any]], list[str]]:
    found: dict[tuple[int, str], dict[str, Any]] = {}
    notes = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        for case in doc.get("cases", []):
            found[(case["hosts"], case["image"])] = case
            load = case.get("load_average", {})
            if load.get("start") and load.get("end"):
                notes.append(f"{case['hosts']}: {load['start'][0]:.1f}→{load['end'][0]:.1f}")
    return found, notes


def main(dst: str, *paths: str) -> int:
    found, notes = cases(list(paths))
    images = sorted({image for _, image in found})
    fig, axes = plt.subplots(len(images), 2, figsize=(12, 4.8 * len(images)), squeeze=False)
    for (wall, cpu), image in zip(axes, images):
        sizes = sorted(n for n, i in found if i == image)
        for row, (label, colour, style) in STYLE.items():
            for ax, key in ((wall, "median_s"), (cpu, "host_cpu_s")):
                pts = [
                    (n, found[(n, image)]["rows"][row][key])
                    for n in sizes
                    if found[(n, image)]["rows"].get(row, {}).get(key) is not None
                ]
                if pts:
                    ax.plot(*zip(*pts), marker="o", color=colour, linestyle=style, label=label)
        wall.set_title(f"{image}: wall seconds (median of the runs)", fontsize=10)
        wall.set_ylabel("seconds")
        cpu.set_title(f"{image}: CPU seconds per host (sshd + engine, median host)", fontsize=10)
        cpu.set_ylabel("CPU seconds per host")
        for ax in (wall, cpu):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.set_xlabel("hosts")
            ax.grid(alpha=0.3)
        wall.legend(fontsize=8)
    fig.suptitle(
        "bench/scale.py on the lab (2-core machine shared with other work; 1-min load average "
        f"start→end per N: {', '.join(notes)})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], *sys.argv[2:]))
