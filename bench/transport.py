"""Transport microbenchmark: paramiko exec channel (distrib.transport) vs the OpenSSH client.

Both stream the same N MB into `cat > /dev/null` on one lab host, over the same link, one
fresh connection per trial (connect + stream + exit status), trials interleaved so machine
noise hits both alike. Issue 5 asks for paramiko >= 0.7x OpenSSH.

Standalone: DISTRIB_LAB_INSTANCE=2 python bench/transport.py [--host node1] [--mb 512] [--trials 5]
(needs a running lab of that instance; bench/bench.py calls `measure` on an unshaped lab).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

MB = 1024 * 1024
SINK = "cat > /dev/null"


def ssh_options(state: Any) -> list[str]:
    """OpenSSH client options for the lab: its key, its known_hosts, strict host key checks."""
    return [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={state.known_hosts}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-i",
        state.client_key,
    ]


def zero_file(workdir: Path, size_mb: int) -> Path:
    """A file of `size_mb` MiB of zeros (SSH does not compress by default, so zeros are fair)."""
    path = workdir / f"zeros-{size_mb}M.bin"
    if not path.exists() or path.stat().st_size != size_mb * MB:
        block = bytes(MB)
        with open(path, "wb") as fh:
            for _ in range(size_mb):
                fh.write(block)
    return path


def _paramiko_trial(target: Any, size_mb: int) -> dict[str, float]:
    from distrib import transport

    block = bytes(MB)

    def chunks() -> Any:
        for _ in range(size_mb):
            yield block

    t0 = time.monotonic()
    session = transport.connect(target)
    t1 = time.monotonic()
    try:
        result = session.upload(SINK, chunks())
    finally:
        session.close()
    t2 = time.monotonic()
    if result.exit_status != 0:
        raise RuntimeError(f"paramiko: remote `{SINK}` exited {result.exit_status}")
    return {"total_s": t2 - t0, "connect_s": t1 - t0, "stream_s": t2 - t1}


def _openssh_trial(argv: list[str], path: Path) -> dict[str, float]:
    t0 = time.monotonic()
    with open(path, "rb") as fh:
        proc = subprocess.run(argv, stdin=fh, capture_output=True, timeout=600)
    t1 = time.monotonic()
    if proc.returncode != 0:
        raise RuntimeError(f"ssh exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return {"total_s": t1 - t0}


def measure(
    state: Any, host_name: str, *, size_mb: int, trials: int, workdir: Path, link: str
) -> dict[str, Any]:
    """MB/s medians of both clients streaming `size_mb` MiB to `host_name`, and the ratio."""
    from distrib.transport import Target

    host = state.host(host_name)
    target = Target(
        name=host.name,
        address=host.address,
        user="root",
        key_file=state.client_key,
        known_hosts=state.known_hosts,
    )
    path = zero_file(workdir, size_mb)
    ssh = ["ssh", *ssh_options(state), f"root@{host.address}"]
    # Connection setup alone, to tell the stream rate from the handshake in the OpenSSH numbers.
    setup = [_openssh_trial([*ssh, "true"], Path("/dev/null"))["total_s"] for _ in range(3)]
    para: list[dict[str, float]] = []
    open_: list[dict[str, float]] = []
    for _ in range(trials):
        para.append(_paramiko_trial(target, size_mb))
        open_.append(_openssh_trial([*ssh, SINK], path))

    def rate(seconds: float) -> float:
        return size_mb * MB / 1e6 / seconds

    ssh_setup = statistics.median(setup)
    p_total = statistics.median(t["total_s"] for t in para)
    p_stream = statistics.median(t["stream_s"] for t in para)
    o_total = statistics.median(t["total_s"] for t in open_)
    o_stream = max(o_total - ssh_setup, 1e-6)
    out = {
        "host": host_name,
        "link": link,
        "size_mb": size_mb,
        "trials": trials,
        "paramiko_mb_s": round(rate(p_total), 1),
        "paramiko_stream_only_mb_s": round(rate(p_stream), 1),
        "paramiko_connect_s": round(statistics.median(t["connect_s"] for t in para), 3),
        "openssh_mb_s": round(rate(o_total), 1),
        "openssh_stream_only_mb_s": round(rate(o_stream), 1),
        "openssh_setup_s": round(ssh_setup, 3),
        "ratio": round(o_total / p_total, 3),  # paramiko MB/s / OpenSSH MB/s, end to end
        "ratio_stream_only": round(o_stream / p_stream, 3),
        "target_ratio": 0.7,
        "raw": {"paramiko": para, "openssh": open_},
    }
    out["meets_target"] = out["ratio"] >= 0.7
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="node1")
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("DISTRIB_LAB_INSTANCE", "2")
    sys.path.insert(0, str(ROOT))
    from distrib.lab import require_state

    state = require_state()
    workdir = ROOT / "bench" / ".work"
    workdir.mkdir(parents=True, exist_ok=True)
    link = f"shaped {state.uplink}" if state.uplink else "unshaped"
    result = measure(
        state, args.host, size_mb=args.mb, trials=args.trials, workdir=workdir, link=link
    )
    result.pop("raw")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
