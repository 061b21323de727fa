"""Draw the benchmark chart: median seconds per method (min–max whiskers), link limits as lines.

Run with bench/.venv's python (matplotlib lives there, not in distrib's dependencies):
    bench/.venv/bin/python bench/chart.py bench/results/latest.json bench/chart.png
"""

from __future__ import annotations

import json
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> int:
    with open(src, encoding="utf-8") as fh:
        doc = json.load(fh)
    rows = [(n, r) for n, r in doc["rows"].items() if "median_s" in r]
    names = [textwrap.fill(n, 18) for n, _ in rows]
    medians = [r["median_s"] for _, r in rows]
    low = [r["median_s"] - r["min_s"] for _, r in rows]
    high = [r["max_s"] - r["median_s"] for _, r in rows]
    colours = ["#3b7dd8" if n.startswith("distrib") else "#9a9a9a" for n, _ in rows]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    bars = ax.bar(range(len(rows)), medians, yerr=[low, high], capsize=3, color=colours)
    for bar, value in zip(bars, medians):
        ax.annotate(
            f"{value:.1f}s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    styles = {"gzip": ("#d62728", "--"), "zstd": ("#2ca02c", ":")}
    for codec, (colour, style) in styles.items():
        limit = doc.get("link_limits_s", {}).get(codec)
        if limit:
            ax.axhline(
                limit, color=colour, linestyle=style, label=f"link limit, {codec} ({limit:.1f}s)"
            )
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, fontsize=7)
    ax.set_ylabel("seconds (median, whiskers min–max)")
    cfg = doc["config"]
    ax.set_title(
        f"{cfg['image']} to {cfg['hosts']} lab hosts over a {cfg['uplink']} uplink "
        f"({cfg['runs']} runs each; {doc['machine']['cpus']}-core shared machine)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
