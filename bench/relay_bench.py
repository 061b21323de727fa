"""Relay fan-out benchmark (issue 9): time vs number of hosts for distrib direct, distrib relay,
the one-liner (`docker save | gzip | ssh host 'gunzip | docker load'`, every host at once) and
the manual procedure (save | gzip -9 once, then scp + docker load host by host), in one run,
on a lab whose workstation uplink is shaped (host<->host stays fast).

    DISTRIB_LAB_INSTANCE=5 python bench/relay_bench.py [--uplink 200mbit] \
        [--case 4:demo/big:1.0 --case 16:demo/web:1.0,demo/worker:1.0 ...] [--methods ...]

Writes bench/results/relay-<stamp>.json (+ .md table, + .png when bench/.venv has matplotlib).
Every host's image ID is checked against the workstation's after each method. distrib's runs
use its cache (archive / layer store built once beforehand): that is the product's behaviour,
the one-liner and the manual procedure compress every time, as people do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

SRC = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SRC))  # run from a checkout: distrib itself (state of the lab)
RESULTS = SRC / "bench" / "results"
METHODS = ("relay", "direct", "oneliner", "manual")
# HOSTS:IMAGES[@METHODS]: the big image for every method at 4 and 8 hosts; at 16 hosts the
# smaller images for every method, and the big one for distrib (relay's 16-vs-4 target).
DEFAULT_CASES = (
    "4:demo/big:1.0",
    "8:demo/big:1.0",
    "16:demo/big:1.0@relay,direct",
    "16:demo/web:1.0,demo/worker:1.0",
)
REMOTE_FILE = "/var/tmp/relay-bench.tar.gz"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def sh(
    argv: list[str], timeout: float = 3600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=SRC)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return proc


def distrib(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return sh([sys.executable, "-m", "distrib", *args], **kw)


class Lab:
    def __init__(self, hosts: int, uplink: str) -> None:
        distrib("lab", "up", "--hosts", str(hosts), "--uplink", uplink)
        from distrib.lab import require_state

        self.state = require_state()
        self.uplink = uplink

    def ssh_options(self) -> list[str]:
        return [
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.state.known_hosts}", "-o", "IdentitiesOnly=yes",
            "-i", self.state.client_key,
        ]  # fmt: skip

    def hosts(self, n: int) -> list[Any]:
        return list(self.state.hosts[:n])

    def tx_bytes(self) -> int:
        return int(Path(f"/sys/class/net/{self.state.bridge}/statistics/tx_bytes").read_text())

    def exec(self, host: str, *argv: str) -> str:
        return distrib("lab", "exec", host, "--", *argv, check=False).stdout

    def reset(self, n: int, images: list[str]) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda h: self.exec(h.name, "docker", "rmi", "-f", *images),
                          self.hosts(n)))  # fmt: skip

    def image_ids(self, n: int, image: str) -> list[str]:
        with ThreadPoolExecutor(8) as pool:
            inspect = ("docker", "image", "inspect", "-f", "{{.Id}}", image)
            return [out.strip() for out in pool.map(
                lambda h: self.exec(h.name, *inspect), self.hosts(n)
            )]  # fmt: skip

    def inventory(self, n: int, directory: Path) -> Path:
        data = yaml.safe_load(Path(self.state.inventory).read_text())
        data["all"]["vars"]["relay_group"] = "site"  # one site behind the shaped uplink
        hosts = data["all"]["children"]["lab"]["hosts"]
        data["all"]["children"]["lab"]["hosts"] = {h: hosts[h] for h in list(hosts)[:n]}
        path = directory / f"inventory-{n}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def playbook(directory: Path, images: list[str], fanout: str) -> Path:
    path = directory / f"{fanout}.yaml"
    path.write_text(
        f"- name: bench {fanout}\n  hosts: lab\n  images: {json.dumps(images)}\n"
        f"  compression: gzip\n  fanout: {fanout}\n  relay_width: 3\n  forks: 32\n"
    )
    return path


def run_distrib(lab: Lab, n: int, images: list[str], fanout: str, work: Path) -> dict[str, Any]:
    proc = distrib(
        "run", str(playbook(work, images, fanout)), "-i", str(lab.inventory(n, work)), "--json",
        check=False,
    )  # fmt: skip
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if proc.returncode != 0:
        raise RuntimeError(f"distrib {fanout} exit {proc.returncode}: {proc.stderr[-1500:]}")
    hosts = doc["plays"][0]["hosts"]
    loads = sorted(h["timings"].get("load", 0.0) for h in hosts.values())
    phase = "relay" if fanout == "relay" else "upload"
    moving = [h["timings"].get(phase, 0.0) for h in hosts.values()]
    return {
        "payload_bytes": max(h["bytes_sent"] for h in hosts.values()),
        "load_s_median": loads[len(loads) // 2],
        "load_s_max": loads[-1],
        # until the last host's own copy is complete (relay: the whole pipelined stream)
        "transfer_s_max": max(moving),
        "fed_by": {name: h.get("fed_by") for name, h in hosts.items()},
    }


def oneliner(lab: Lab, n: int, images: list[str], work: Path) -> dict[str, Any]:
    opts = shlex.join(lab.ssh_options())
    names = " ".join(shlex.quote(i) for i in images)
    procs = [
        subprocess.Popen(
            [
                "bash",
                "-o",
                "pipefail",
                "-c",
                f"docker save {names} | gzip | ssh {opts} root@{h.address} 'gunzip | docker load'",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for h in lab.hosts(n)
    ]
    errors = [p.communicate()[1][-300:] for p in procs if p.wait() != 0]
    if errors:
        raise RuntimeError("; ".join(errors))
    return {}


def manual(lab: Lab, n: int, images: list[str], work: Path) -> dict[str, Any]:
    archive = work / "manual.tar.gz"
    names = " ".join(shlex.quote(i) for i in images)
    t = time.monotonic()
    sh(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"docker save {names} | gzip -9 > {shlex.quote(str(archive))}",
        ]
    )
    compress = time.monotonic() - t
    opts = lab.ssh_options()
    for h in lab.hosts(n):
        sh(["scp", "-q", *opts, str(archive), f"root@{h.address}:{REMOTE_FILE}"])
        sh(
            [
                "ssh",
                *opts,
                f"root@{h.address}",
                f"docker load < {REMOTE_FILE} && rm -f {REMOTE_FILE}",
            ]
        )
    return {"compress_s": round(compress, 2), "archive_bytes": archive.stat().st_size}


def measure(lab: Lab, method: str, n: int, images: list[str], work: Path) -> dict[str, Any]:
    lab.reset(n, images)
    before = lab.tx_bytes()
    t = time.monotonic()
    if method in ("relay", "direct"):
        extra = run_distrib(lab, n, images, method, work)
    else:
        extra = (oneliner if method == "oneliner" else manual)(lab, n, images, work)
    seconds = time.monotonic() - t
    wire = lab.tx_bytes() - before
    want = sh(["docker", "image", "inspect", "-f", "{{.Id}}", images[0]]).stdout.strip()
    ids = lab.image_ids(n, images[0])
    if any(i != want for i in ids):
        raise RuntimeError(f"{method} x{n}: not every host holds {images[0]} ({ids})")
    return {
        "seconds": round(seconds, 2),
        "uplink_bytes": wire,
        "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0]),  # others' work too
        **extra,
    }


def table(rows: list[dict[str, Any]], methods: list[str]) -> str:
    head = "| hosts | images | " + " | ".join(methods) + " | relay uplink bytes / payload |"
    lines = [head, "|" + "---|" * (len(methods) + 3)]
    cases: dict[tuple[int, str], dict[str, Any]] = {}
    for r in rows:
        cases.setdefault((r["hosts"], r["images"]), {})[r["method"]] = r
    for (n, images), found in cases.items():
        cells = [
            f"{found[m]['seconds']:.1f} s" if "seconds" in found.get(m, {}) else
            ("error" if m in found else "–")
            for m in methods
        ]  # fmt: skip
        relay = found.get("relay", {})
        ratio = (
            f"{relay['uplink_bytes'] / relay['payload_bytes']:.3f}"
            if relay.get("payload_bytes") else "–"
        )  # fmt: skip
        lines.append(f"| {n} | {images} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def chart(doc: dict[str, Any], path: Path) -> bool:
    venv = SRC / "bench" / ".venv" / "bin" / "python"
    if not venv.exists():
        return False
    script = """
import json, sys
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
doc = json.load(open(sys.argv[1]))
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
for ax, small in zip(axes, (False, True)):
    rows = [r for r in doc["rows"] if ("web" in r["images"]) == small and "seconds" in r]
    for method in doc["methods"]:
        pts = sorted((r["hosts"], r["seconds"]) for r in rows if r["method"] == method)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xlabel("hosts"); ax.set_ylabel("seconds (wall)")
    ax.set_title(("small images" if small else "demo/big:1.0") + f", uplink {doc['uplink']}")
    ax.set_xticks(sorted({r["hosts"] for r in rows}) or [4]); ax.grid(alpha=.3); ax.legend()
fig.tight_layout(); fig.savefig(sys.argv[2], dpi=110)
"""
    proc = subprocess.run([str(venv), "-c", script, str(path.with_suffix(".json")), str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        log(f"chart: {proc.stderr.strip()[-300:]}")
    return proc.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uplink", default="200mbit")
    parser.add_argument("--case", action="append", help="HOSTS:IMAGE[,IMAGE...]")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    cases = []
    for case in args.case or DEFAULT_CASES:
        spec, _, only = case.partition("@")
        count, _, images = spec.partition(":")
        chosen = [m for m in methods if not only or m in only.split(",")]
        cases.append((int(count), images.split(","), chosen))
    lab = Lab(max(n for n, _, _ in cases), args.uplink)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rows: list[dict[str, Any]] = []
    start = sh(["git", "rev-parse", "HEAD"]).stdout.strip()
    try:
        with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
            work = Path(tmp)
            for _, images, _ in cases:  # distrib's cache first: archive / layer store built once
                lab.reset(1, images)
                distrib("run", str(playbook(work, images, "direct")), "-i",
                        str(lab.inventory(1, work)))  # fmt: skip
            for n, images, chosen in cases:
                for method in chosen:
                    log(f"{method} x{n} {','.join(images)}")
                    row: dict[str, Any] = {"method": method, "hosts": n, "images": ",".join(images)}
                    try:
                        row.update(measure(lab, method, n, images, work))
                    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                        row["error"] = str(exc)[-500:]
                    log(f"  -> {row.get('seconds', row.get('error'))}")
                    rows.append(row)
    finally:
        if not args.keep_lab:
            distrib("lab", "down", check=False)
    doc = {
        "uplink": args.uplink, "methods": methods, "rows": rows, "commit": start,
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"relay-{stamp}.json"
    out.write_text(json.dumps(doc, indent=2))
    text = table(rows, methods)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    if chart(doc, out.with_suffix(".png")):
        print(f"chart: {out.with_suffix('.png')}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
