"""The benchmark of issue 5: distrib against the ways people ship images by hand, on the lab.

    python bench/bench.py [--hosts 4] [--uplink 200mbit] [--runs 3] [--image demo/big:1.0] [--quick]

One invocation brings up its own lab (DISTRIB_LAB_INSTANCE, default 2, so the default lab of the
test suite is never touched), builds the bench image, and measures side by side, `--runs` times
each with the methods interleaved round-robin (machine noise hits every method alike), medians:

1. manual: `docker save | gzip -9 > f` once, then host by host `scp f` + `ssh docker load < f`;
2. one-liner, all hosts at once: `docker save | gzip | ssh host 'gunzip | docker load'`;
3. Ansible (ansible-core from bench/.venv): `docker save | gzip > f`, then a playbook with
   `copy` + `command: docker load -i`, forks = hosts;
4. `distrib run` with each codec, its archive cache emptied before every run (so each run
   includes save + compress), plus a re-run with nothing changed (must send 0 archive bytes);
5. the link limit: hosts x compressed bytes / uplink rate.

Every run starts with the image removed from every host and ends with a check that each host
has the workstation's image ID: a method that did not land is a failed row, never a fast one.
Bytes on the wire are the lab bridge's tx counter (workstation -> hosts), checked against a
known raw TCP transfer first. The orchestrator's peak RSS comes from /proc/<pid>/status VmHWM
polling and wait4's ru_maxrss. Before the shaped lab, a transport microbenchmark (paramiko exec
channel vs OpenSSH) runs on the same hosts unshaped (bench/transport.py).

Writes bench/results/<timestamp>.json; a full run also bench/results/latest.json and
bench/chart.png (drawn by bench/chart.py with bench/.venv's matplotlib). Timing here is the
only place performance is measured: tests never assert it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
RESULTS = BENCH / "results"
WORK = BENCH / ".work"  # archives, playbooks, cache: gitignored (bench/.gitignore)
sys.path.insert(0, str(BENCH))
# The distrib that is measured: the checkout as it is (default), or with --distrib-ref a
# snapshot of a commit (`git archive`), for when others' uncommitted edits are mid-way.
SRC = ROOT

MB = 1_000_000
# The identity the landing check compares (distrib.commands.INSPECT_FORMAT; copied so that an
# older snapshot measured with --distrib-ref need not have it).
INSPECT_FORMAT = (
    "{{.Id}}\t{{json .RootFS.Layers}}\t{{.Size}}"
    '\t{{with index . "Descriptor"}}{{.digest}}{{end}}'
    '\t{{json .Config}}\t{{.Architecture}}\t{{.Os}}\t{{index . "Variant"}}'
    "\t{{.Created}}\t{{.Author}}"
)
RUN_TIMEOUT = 3600.0
REMOTE_FILE = "/var/tmp/bench-archive.tar.gz"  # /var/tmp is private per lab host; /root is not
RERUN = "distrib re-run (nothing changed)"
ENGINES: dict[str, str | None] = {"hosts": None, "workstation": None}  # --engine/--workstation
# The product's steady state: layer store already filled (an earlier rollout), hosts fresh.
STORE_CODECS = ("gzip", "zstd")  # codecs whose plays use the layer store (a warm row each)


def warm(codec: str) -> str:
    return f"distrib ({codec}, layer store warm; hosts fresh)"


# Issue 5 targets.
TARGET_LINK = 1.25
TARGET_VS_MANUAL = 3.5
TARGET_VS_ONELINER = 2.0
TARGET_VS_ANSIBLE = 2.5
TARGET_RSS_MB = 200.0
TARGET_RERUN_S_PER_HOST = 2.0


def log(text: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {text}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A method or a setup step failed; the message says which and shows its output."""


def run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = RUN_TIMEOUT,
    check: bool = True,
    stdin: Any = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, env=env, cwd=SRC, stdin=stdin, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise BenchError(f"{shlex.join(cmd)[:200]} exited {proc.returncode}:\n{tail}")
    return proc


def bash(script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """A pipeline, with pipefail: a failed `docker save` must fail the method, not hide."""
    return run(["bash", "-o", "pipefail", "-c", script], **kw)


def side_bench(prefix: str, body: Callable[[Lab, Path, dict[str, str]], int]) -> int:
    """Run a side benchmark (delta_bench.py, rss.py) measuring this checkout on its own lab
    instance ($DISTRIB_LAB_INSTANCE, default 2): `body(lab, work dir, env)`; a failure is one
    logged line and exit 1; the lab is taken down in every outcome."""
    instance = os.environ.setdefault("DISTRIB_LAB_INSTANCE", "2")
    sys.path.insert(0, str(SRC))
    lab = Lab(instance)
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=WORK))
    try:
        return body(lab, work, {**os.environ, "DISTRIB_LAB_INSTANCE": instance})
    except (BenchError, subprocess.SubprocessError) as exc:
        log(f"benchmark failed: {exc}")
        return 1
    finally:
        lab.down()


def save_results(doc: dict[str, Any], kind: str) -> None:
    """`results/<stamp>-<kind>.json` and `results/<kind>-latest.json` (the stamp: the doc's
    own, so that saving a run's progress rewrites one file)."""
    stamp = doc.setdefault("stamp", dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, default=str)
    (RESULTS / f"{stamp}-{kind}.json").write_text(text)
    (RESULTS / f"{kind}-latest.json").write_text(text)


def compile_distrib() -> None:
    """Byte-compile the measured distrib once: with $PYTHONDONTWRITEBYTECODE set (as in this
    machine's shells) every `distrib` child would otherwise compile its sources again, ~0.5 s
    of CPU per run that an installed distrib never pays."""
    run([sys.executable, "-m", "compileall", "-q", str(SRC / "distrib")], check=False)


def distrib_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "distrib", *args]


# --------------------------------------------------------------------------------- the lab


class Lab:
    """The bench's own lab instance, reached with the CLI (as a user would) and its state."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.state: Any = None

    def up(self, hosts: int, uplink: str | None) -> None:
        cmd = distrib_cmd("lab", "up", "--hosts", str(hosts))
        if uplink:
            cmd += ["--uplink", uplink]
        if ENGINES["hosts"]:
            cmd += ["--kinds", ENGINES["hosts"]]
        if ENGINES["workstation"]:
            cmd += ["--workstation", ENGINES["workstation"]]
        t0 = time.monotonic()
        run(cmd, timeout=600)
        from distrib.lab import require_state

        self.state = require_state()
        # every docker command of the bench (and distrib) then talks to the lab's
        # workstation engine, when it has one (--workstation)
        os.environ.update(self.state.workstation_env())
        if not Path(f"/sys/class/net/{self.state.bridge}").exists():
            raise BenchError(f"lab bridge {self.state.bridge} is missing after lab up")
        shaped = f", uplink {uplink}" if uplink else ", unshaped"
        log(
            f"lab instance {self.instance} up: {hosts} hosts on {self.state.bridge}{shaped} "
            f"({time.monotonic() - t0:.1f}s)"
        )

    def down(self) -> None:
        run(distrib_cmd("lab", "down"), timeout=600, check=False)
        log(f"lab instance {self.instance} down")

    @property
    def hosts(self) -> list[Any]:
        return list(self.state.hosts)

    def counters(self) -> tuple[int, int]:
        """(tx, rx) bytes of the bridge device: tx is what the workstation sent to the hosts."""
        base = Path(f"/sys/class/net/{self.state.bridge}/statistics")
        return int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())

    def exec(
        self, host: str, argv: list[str], check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """What `distrib lab exec HOST -- ARGV` runs, without a Python start-up per call."""
        from distrib.lab import exec_argv

        return run(exec_argv(self.state.host(host), argv), check=check, timeout=600)

    def each(self, fn: Callable[[Any], Any]) -> list[Any]:
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            return list(pool.map(fn, self.hosts))

    def clean(self, image: str) -> None:
        """Remove `image` and every staged file from every host, then check it is gone."""
        script = (
            f"docker rmi -f {shlex.quote(image)} >/dev/null 2>&1; "
            "docker image prune -f >/dev/null; "
            f"rm -rf /var/tmp/bench-* /var/tmp/.ansible-bench"
        )
        self.each(lambda h: self.exec(h.name, ["sh", "-c", script]))
        left = [h for h, i in zip(self.hosts, self.image_ids(image)) if i is not None]
        if left:
            raise BenchError(f"{image} still on {', '.join(h.name for h in left)} after clean")

    def image_ids(self, image: str) -> list[str | None]:
        """Each host's identity of `image` (None: missing): its config fingerprint, the same
        on every engine and store (a containerd-store ID is a manifest digest)."""

        def one(h: Any) -> str | None:
            out = self.exec(h.name, ["docker", "image", "inspect", "-f", INSPECT_FORMAT, image])
            return identity(out.stdout) if out.returncode == 0 else None

        return self.each(one)

    def host_cpu(self) -> dict[str, float]:
        """Each host's CPU seconds so far (its sshd with the sessions it reaped, its dockerd
        with containerd: distrib.lab's process accounting); {} on a lab without it."""
        from distrib.lab import core

        accounting = getattr(core, "cpu_seconds", None)
        return accounting(self.state) if accounting else {}

    def workstation_cpu(self) -> float:
        """CPU seconds so far of this bench's reaped children (distrib, ssh, gzip, docker CLI,
        ansible) and of the workstation's engine daemon (its docker save work)."""
        from distrib.lab import procs

        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        pid = getattr(self.state, "workstation_engine_pid", None)
        if not pid:
            with contextlib.suppress(OSError, ValueError):
                pid = int(Path("/var/run/docker.pid").read_text().strip())
        daemon = procs.tree_cpu_seconds([pid], procs.cpu_table()) if pid else 0.0
        return usage.ru_utime + usage.ru_stime + daemon

    def ssh_options(self) -> list[str]:
        from transport import ssh_options

        return ssh_options(self.state)


def identity(inspect_output: str) -> str:
    from distrib.commands import parse_inspect

    return parse_inspect(inspect_output.strip("\n").splitlines()[0]).fingerprint


def local_image_id(image: str) -> str:
    return identity(run(["docker", "image", "inspect", "-f", INSPECT_FORMAT, image]).stdout)


def check_counter(lab: Lab, size: int = 32 * 1024 * 1024) -> dict[str, Any]:
    """Send `size` raw TCP bytes to node1 and compare with the bridge's tx counter delta."""
    host = lab.hosts[0]
    port = 5555
    server = (
        "import socket,sys\n"
        f"s=socket.create_server(({host.address!r},{port}));print('ready',flush=True)\n"
        "c,_=s.accept();n=0\n"
        "while True:\n"
        "  b=c.recv(1<<20)\n"
        "  if not b: break\n"
        "  n+=len(b)\n"
        "print(n,flush=True)\n"
    )
    proc = subprocess.Popen(
        distrib_cmd("lab", "exec", host.name, "--", "python3", "-c", server),
        cwd=SRC,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise BenchError(f"counter check: receiver in {host.name} did not start")
        payload = os.urandom(1024 * 1024)
        tx0, rx0 = lab.counters()
        t0 = time.monotonic()
        with socket.create_connection((host.address, port), timeout=30) as sock:
            for _ in range(size // len(payload)):
                sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # wait for the receiver to close: every byte is through
        seconds = time.monotonic() - t0
        received = int(proc.stdout.readline().strip() or 0)
        tx1, rx1 = lab.counters()
    finally:
        proc.wait(timeout=30)
    ratio = (tx1 - tx0) / size
    result = {
        "payload_bytes": size,
        "received_bytes": received,
        "bridge_tx_delta": tx1 - tx0,
        "bridge_rx_delta": rx1 - rx0,
        "tx_over_payload": round(ratio, 4),
        "measured_rate_mb_s": round(size / MB / seconds, 1),
    }
    # Frames carry Ethernet/IP/TCP headers (~2-5 % with segmentation offload); anything far
    # from 1.0 means the counter does not see workstation -> host traffic as we think.
    if received != size or not 1.0 <= ratio <= 1.10:
        raise BenchError(f"bridge counter check failed: {result}")
    log(
        f"bridge tx counter: {ratio:.4f} x payload on a known {size // 1024 // 1024} MiB "
        f"transfer ({result['measured_rate_mb_s']} MB/s)"
    )
    return result


# --------------------------------------------------------------------------------- methods


@dataclass
class Sample:
    method: str
    run: int
    ok: bool
    seconds: float
    wire_tx: int
    wire_rx: int
    error: str | None = None
    phases: dict[str, Any] = field(default_factory=dict)
    host_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds each host spent
    load_1m: float = 0.0  # the machine's 1-minute load average at the end (others' work too)
    workstation_cpu: float = 0.0  # the bench's children and the workstation's dockerd


@dataclass
class Ctx:
    lab: Lab
    image: str
    local_id: str
    hosts: int
    work: Path
    env: dict[str, str]


def manual(ctx: Ctx) -> dict[str, Any]:
    """save | gzip -9 once, then host by host scp + ssh docker load."""
    archive = ctx.work / "manual.tar.gz"
    t0 = time.monotonic()
    bash(f"docker save {shlex.quote(ctx.image)} | gzip -9 > {shlex.quote(str(archive))}")
    phases: dict[str, Any] = {
        "compress_s": round(time.monotonic() - t0, 2),
        "archive_bytes": archive.stat().st_size,
        "hosts": {},
    }
    opts = ctx.lab.ssh_options()
    for h in ctx.lab.hosts:
        t1 = time.monotonic()
        run(["scp", "-q", *opts, str(archive), f"root@{h.address}:{REMOTE_FILE}"])
        t2 = time.monotonic()
        run(["ssh", *opts, f"root@{h.address}", f"docker load < {REMOTE_FILE}"])
        t3 = time.monotonic()
        phases["hosts"][h.name] = {"scp_s": round(t2 - t1, 2), "load_s": round(t3 - t2, 2)}
    return phases


def oneliner(ctx: Ctx) -> dict[str, Any]:
    """docker save | gzip | ssh host 'gunzip | docker load', every host at once."""
    opts = shlex.join(ctx.lab.ssh_options())
    procs = []
    for h in ctx.lab.hosts:
        script = (
            f"docker save {shlex.quote(ctx.image)} | gzip | "
            f"ssh {opts} root@{h.address} 'gunzip | docker load'"
        )
        procs.append(
            (
                h.name,
                time.monotonic(),
                subprocess.Popen(
                    ["bash", "-o", "pipefail", "-c", script],
                    cwd=SRC,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    phases: dict[str, Any] = {"hosts": {}}
    errors = []
    for name, start, proc in procs:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
        phases["hosts"][name] = {"total_s": round(time.monotonic() - start, 2)}
        if proc.returncode != 0:
            errors.append(f"{name}: exit {proc.returncode}: {err.strip()[-300:]}")
    if errors:
        raise BenchError("; ".join(errors))
    return phases


ANSIBLE_PLAYBOOK = """\
- name: distribute {image} (bench)
  hosts: all
  gather_facts: false
  tasks:
    - name: copy the archive
      ansible.builtin.copy:
        src: {archive}
        dest: {dest}
        mode: "0600"
    - name: load it
      ansible.builtin.command: docker load -i {dest}
"""


def ansible_available() -> str | None:
    """Path of ansible-playbook in bench/.venv (else the venv running the bench), or None when
    ansible-core is not installed."""
    for path in (
        VENV / "bin" / "ansible-playbook",
        Path(sys.executable).parent / "ansible-playbook",
    ):
        if path.exists():
            return str(path)
    return None


def ansible(ctx: Ctx) -> dict[str, Any]:
    """save | gzip > f once, then ansible-playbook copy + command: docker load, forks = hosts."""
    archive = ctx.work / "ansible.tar.gz"
    t0 = time.monotonic()
    bash(f"docker save {shlex.quote(ctx.image)} | gzip > {shlex.quote(str(archive))}")
    t1 = time.monotonic()
    playbook = ctx.work / "ansible-playbook.yaml"
    playbook.write_text(ANSIBLE_PLAYBOOK.format(image=ctx.image, archive=archive, dest=REMOTE_FILE))
    lab = ctx.lab
    env = {
        **ctx.env,
        "ANSIBLE_FORKS": str(ctx.hosts),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # Ansible's default ssh_args (-C, ControlMaster/Persist) plus the lab's known_hosts.
        "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=30s "
        f"-o UserKnownHostsFile={lab.state.known_hosts} -o StrictHostKeyChecking=yes "
        "-o IdentitiesOnly=yes",
        "ANSIBLE_CONTROL_PATH_DIR": str(ctx.work / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(ctx.work / "ansible-local"),
        "ANSIBLE_REMOTE_TMP": "/var/tmp/.ansible-bench",  # private per host (/root is shared)
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
    }
    ansible_playbook = ansible_available()
    assert ansible_playbook
    run([ansible_playbook, "-i", lab.state.inventory, str(playbook)], env=env)
    return {
        "compress_s": round(t1 - t0, 2),
        "playbook_s": round(time.monotonic() - t1, 2),
        "archive_bytes": archive.stat().st_size,
    }


DISTRIB_PLAYBOOK = """\
- name: bench {codec}
  hosts: all
  images: [{image}]
  compression: {codec}
  forks: {forks}
"""


def distrib_playbook(ctx: Ctx, codec: str) -> Path:
    path = ctx.work / f"distrib-{codec}.yaml"
    path.write_text(DISTRIB_PLAYBOOK.format(codec=codec, image=ctx.image, forks=ctx.hosts))
    return path


def accepts_codec(ctx: Ctx, codec: str) -> bool:
    """Whether this distrib's playbook accepts `compression: codec` (checked with `plan`)."""
    proc = run(
        distrib_cmd("plan", str(distrib_playbook(ctx, codec)), "-i", ctx.lab.state.inventory),
        env=ctx.env,
        check=False,
    )
    if proc.returncode == 0:
        return True
    if proc.returncode == 5 and "compression" in proc.stderr + proc.stdout:
        return False  # a playbook error about the codec: this distrib does not know it
    # Anything else is a broken distrib: stop now, not after an hour of baselines.
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
    raise BenchError(f"distrib plan failed (exit {proc.returncode}) for codec {codec}:\n{tail}")


def cache_dir(ctx: Ctx) -> Path:
    return ctx.work / "distrib-cache"


def run_distrib(
    ctx: Ctx,
    codec: str,
    *,
    clear_cache: bool,
    playbook: Path | None = None,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`distrib run --json` as a child; its peak RSS, stderr timeline and per-host results.
    `playbook`: another play than the codec's; `extra`: more flags (with -vv the remote
    commands sent to each host are counted: phases["remote_commands"])."""
    cache = cache_dir(ctx)
    if clear_cache:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    env = {**ctx.env, "DISTRIB_CACHE_DIR": str(cache)}
    book = playbook or distrib_playbook(ctx, codec)
    cmd = distrib_cmd("run", str(book), "-i", ctx.lab.state.inventory, "--json", *extra)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=SRC,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = bytearray()
    timeline: list[tuple[float, str]] = []
    commands: dict[str, int] = {}  # -vv: `[host] $ command` lines per host
    hwm = [0]
    done = threading.Event()

    def read_out() -> None:
        assert proc.stdout is not None
        out.extend(proc.stdout.read())

    def read_err() -> None:
        assert proc.stderr is not None
        # Progress bars redraw with \r: keep only lines, stamped with when they appeared.
        for raw in proc.stderr:
            for part in raw.decode("utf-8", "replace").split("\r"):
                text = part.strip()
                sent = re.match(r"\[(\S+)\] \$ ", text)
                if sent:
                    commands[sent.group(1)] = commands.get(sent.group(1), 0) + 1
                    continue
                if text and ("%" not in text or "archive" in text):
                    timeline.append((round(time.monotonic() - t0, 2), text[:200]))

    def poll_rss() -> None:
        path = f"/proc/{proc.pid}/status"
        while not done.is_set():
            try:
                for line in Path(path).read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm[0] = max(hwm[0], int(line.split()[1]))
            except OSError:
                pass
            done.wait(0.05)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err, poll_rss)]
    for t in threads:
        t.start()
    threads[0].join(RUN_TIMEOUT)
    threads[1].join(RUN_TIMEOUT)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (and its reaped children)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - t0
    done.set()
    threads[2].join()
    phases: dict[str, Any] = {
        "exit_code": proc.returncode,
        "peak_rss_mb": round(hwm[0] / 1024, 1),  # VmHWM of the distrib process itself
        "wait4_maxrss_mb": round(usage.ru_maxrss / 1024, 1),  # max over it and its children
        "cpu_user_s": round(usage.ru_utime, 2),
        "cpu_sys_s": round(usage.ru_stime, 2),
        "process_s": round(seconds, 2),
        "timeline": timeline[-40:],
        "remote_commands": commands,
    }
    try:
        doc = json.loads(out.decode())
    except ValueError:
        tail = "\n".join(t for _, t in timeline[-8:])
        raise BenchError(f"distrib run exited {proc.returncode} without JSON:\n{tail}") from None
    hosts = {}
    for play in doc.get("plays", []):
        for name, h in play.get("hosts", {}).items():
            hosts[name] = {k: h.get(k) for k in ("status", "bytes_sent", "timings", "message")}
    phases["hosts"] = hosts
    phases["archive_bytes_sent"] = sum(int(h.get("bytes_sent") or 0) for h in hosts.values())
    for _, text in timeline:
        picked = re.match(r"compression auto for play .*: (gzip|zstd|xz|none)$", text)
        if picked:
            phases["codec_used"] = picked.group(1)
        if text.startswith("archive for play"):
            phases["archive_line"] = text
            m = re.search(r",\s*(gzip|zstd|xz|none)\b", text)
            if m and "codec_used" not in phases:
                phases["codec_used"] = m.group(1)
    if proc.returncode != 0:
        bad = {
            n: h.get("message")
            for n, h in hosts.items()
            if h.get("status") not in ("ok", "changed")
        }
        raise BenchError(f"distrib run exited {proc.returncode}: {bad}")
    return phases


# --------------------------------------------------------------------------------- stages


def stages(ctx: Ctx) -> dict[str, Any]:
    """Local save / compress rates and sizes (one sample each): where a method's time goes."""
    img = shlex.quote(ctx.image)
    out: dict[str, Any] = {}
    for name, pipeline in (
        ("save", f"docker save {img} | wc -c"),
        ("save|pigz -6", f"docker save {img} | pigz -6 -c | wc -c"),
        ("save|zstd -3 -T0", f"docker save {img} | zstd -3 -T0 -q -c | wc -c"),
        ("save|gzip -6", f"docker save {img} | gzip -6 | wc -c"),
    ):
        t0 = time.monotonic()
        size = int(bash(pipeline).stdout.strip())
        seconds = time.monotonic() - t0
        out[name] = {"seconds": round(seconds, 2), "bytes": size}
        log(f"stage {name}: {seconds:.1f}s, {size / MB:.1f} MB")
    return out


# --------------------------------------------------------------------------------- driver


def measure(
    ctx: Ctx, method: str, index: int, fn: Callable[[], dict[str, Any]], *, clean: bool = True
) -> Sample:
    """One timed run: clean hosts (untimed), run, then check every host has the image ID."""
    lab = ctx.lab
    if clean:
        lab.clean(ctx.image)
    cpu0 = lab.host_cpu()
    ws0 = lab.workstation_cpu()
    tx0, rx0 = lab.counters()
    t0 = time.monotonic()
    error = None
    phases: dict[str, Any] = {}
    try:
        phases = fn()
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        error = str(exc)
    seconds = time.monotonic() - t0
    tx1, rx1 = lab.counters()
    cpu1 = lab.host_cpu()
    ws = round(lab.workstation_cpu() - ws0, 2)
    host_cpu = {h: round(cpu1[h] - cpu0[h], 2) for h in cpu0 if h in cpu1}
    ids = lab.image_ids(ctx.image)
    wrong = [f"{h.name}={i or 'missing'}" for h, i in zip(lab.hosts, ids) if i != ctx.local_id]
    if wrong and error is None:
        error = f"image not landed: {', '.join(wrong)} (local {ctx.local_id[:19]})"
    if method == RERUN and error is None and phases.get("archive_bytes_sent"):
        error = f"re-run sent {phases['archive_bytes_sent']} archive bytes (expected 0)"
    sample = Sample(
        method, index, error is None, round(seconds, 2), tx1 - tx0, rx1 - rx0, error, phases,
        host_cpu, os.getloadavg()[0], ws,
    )  # fmt: skip
    state = "ok" if sample.ok else f"FAILED: {error}"
    cpu = f", {statistics.median(host_cpu.values()):.2f} CPU s per host" if host_cpu else ""
    log(
        f"run {index} {method}: {seconds:.1f}s, {sample.wire_tx / MB:.1f} MB on the wire{cpu}, "
        f"load {sample.load_1m:.1f}, {state}"
    )
    return sample


def summarise(samples: list[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    row: dict[str, Any] = {"runs": len(samples), "runs_ok": len(ok)}
    if ok:
        secs = [s.seconds for s in ok]
        row.update(
            median_s=round(statistics.median(secs), 2),
            min_s=min(secs),
            max_s=max(secs),
            wire_tx_bytes=int(statistics.median(s.wire_tx for s in ok)),
        )
        rss = [s.phases.get("peak_rss_mb") for s in ok if s.phases.get("peak_rss_mb")]
        if rss:
            row["peak_rss_mb"] = max(rss)
            row["wait4_maxrss_mb"] = max(s.phases.get("wait4_maxrss_mb", 0) for s in ok)
        row["workstation_cpu_s"] = round(statistics.median(s.workstation_cpu for s in ok), 2)
        cpu = [statistics.median(s.host_cpu.values()) for s in ok if s.host_cpu]
        if cpu:  # per run the median host's CPU seconds; the row: the median run's
            row["host_cpu_s"] = round(statistics.median(cpu), 2)
            row["host_cpu_s_max_host"] = max(max(s.host_cpu.values()) for s in ok if s.host_cpu)
        codecs = {s.phases.get("codec_used") for s in ok} - {None}
        if codecs:
            row["codec_used"] = ",".join(sorted(codecs))
    row["errors"] = [s.error for s in samples if s.error]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="distrib vs manual / one-liner / Ansible (issue 5)"
    )
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--uplink", default="200mbit", help="tc rate of the workstation uplink")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", default="demo/big:1.0")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: demo/web:1.0, 1 run, 2 hosts, no Ansible"
    )
    parser.add_argument("--no-ansible", action="store_true")
    parser.add_argument("--transport-mb", type=int, default=512)
    parser.add_argument(
        "--distrib-ref",
        metavar="REF",
        help="measure the distrib of this commit (a git archive snapshot) instead of the checkout",
    )
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    parser.add_argument(
        "--engine",
        metavar="ENGINE",
        help="the hosts' engine (`distrib lab engines`: docker-20.10, docker-28, "
        "docker-28-containerd, ...; a comma list gives each host its own, the last repeats)",
    )
    parser.add_argument(
        "--workstation",
        metavar="ENGINE",
        help="the workstation's engine, a lab-managed dockerd (docker-20.10, docker-26, "
        "docker-28, docker-28-containerd; default: the system's docker)",
    )
    parser.add_argument(
        "--only",
        metavar="M1,M2",
        help="measure only these methods: manual, one-liner, ansible, gzip, zstd, none, auto "
        "(the re-run and warm rows follow their codec)",
    )
    args = parser.parse_args(argv)
    ENGINES.update(hosts=args.engine, workstation=args.workstation)
    only = set(args.only.split(",")) if args.only else None
    if args.quick:
        args.image, args.runs, args.hosts, args.no_ansible = "demo/web:1.0", 1, 2, True
        args.transport_mb = 16

    # The bench owns a lab instance of its own: never the default lab the tests use.
    instance = os.environ.setdefault("DISTRIB_LAB_INSTANCE", "2")
    global SRC
    if args.distrib_ref:
        SRC = snapshot(args.distrib_ref)
    sys.path.insert(0, str(SRC))
    signal.signal(signal.SIGTERM, _terminate)  # a killed bench still takes its lab down
    lab_sources = "".join(p.read_text() for p in (SRC / "distrib" / "lab").glob("*.py"))
    if "DISTRIB_LAB_INSTANCE" not in lab_sources:
        print(
            "bench: this distrib lab has no DISTRIB_LAB_INSTANCE support; refusing to replace "
            "the default lab",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, "DISTRIB_LAB_INSTANCE": instance}
    compile_distrib()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now()
    lab = Lab(instance)
    doc: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "git_commit": run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=False
        ).stdout.strip(),
        "distrib_measured": "checkout"
        if SRC == ROOT
        else f"snapshot of {args.distrib_ref}: {SRC.name}",
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": os.uname().release,
            "note": "shared, noisy machine: compare ratios within one invocation",
        },
        "config": {
            "hosts": args.hosts,
            "uplink": args.uplink,
            "runs": args.runs,
            "image": args.image,
            "quick": args.quick,
            "lab_instance": instance,
            "host_engine": args.engine or "docker (system)",
            "workstation_engine": args.workstation or "docker (system)",
            "only": args.only,
        },
    }
    try:
        # 1. the transport microbenchmark on the unshaped link (the quick mode skips the
        #    second lab up and measures on the shaped one, labelled so).
        from transport import measure as transport_measure

        if not args.quick:
            lab.up(args.hosts, None)
            link = "unshaped"
        else:
            lab.up(args.hosts, args.uplink)
            link = f"shaped {args.uplink}"
        trials = 1 if args.quick else 5
        doc["transport"] = transport_measure(
            lab.state,
            lab.hosts[0].name,
            size_mb=args.transport_mb,
            trials=trials,
            workdir=WORK,
            link=link,
        )
        t = doc["transport"]
        log(
            f"transport ({link}): paramiko {t['paramiko_mb_s']} MB/s, OpenSSH "
            f"{t['openssh_mb_s']} MB/s, ratio {t['ratio']}"
        )
        if not args.quick:
            lab.up(args.hosts, args.uplink)
        env.update(lab.state.workstation_env())  # distrib too uses the lab's workstation engine
        doc["wire_counter_check"] = check_counter(
            lab, 8 * 1024 * 1024 if args.quick else 32 * 1024 * 1024
        )

        # 2. the image, its identity, and local stage rates
        run(distrib_cmd("lab", "images", *([] if args.quick else ["--bench"])), timeout=1800)
        ctx = Ctx(lab, args.image, local_image_id(args.image), args.hosts, WORK, env)
        doc["local_image_id"] = ctx.local_id
        all_codecs = ("gzip", "zstd", "none", "auto")
        with ThreadPoolExecutor(len(all_codecs)) as pool:
            accepted = list(pool.map(lambda c: accepts_codec(ctx, c), all_codecs))
        codecs = [c for c, ok in zip(all_codecs, accepted) if ok]
        doc["distrib_codecs"] = codecs
        # Preflight: distrib works end to end (small image, untimed) before the long baselines.
        small = Ctx(lab, "demo/web:1.0", local_image_id("demo/web:1.0"), args.hosts, WORK, env)
        run_distrib(small, codecs[0], clear_cache=True)
        lab.clean(small.image)
        log(f"preflight: distrib run works; codecs {', '.join(codecs)}")
        doc["stages"] = stages(ctx)
        rate = _rate_bytes_per_s(args.uplink)

        # 3. the methods, round-robin
        methods: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("manual (save, gzip -9, then scp + load host by host)", lambda: manual(ctx)),
            ("one-liner (save, gzip, ssh gunzip, load; hosts in parallel)", lambda: oneliner(ctx)),
        ]
        baseline_names = [name for name, _ in methods]
        if only is not None:
            methods = [m for m, key in zip(methods, ("manual", "one-liner")) if key in only]
            codecs = [c for c in codecs if c in only]
            args.no_ansible = args.no_ansible or "ansible" not in only
        ansible_name = f"Ansible (copy + command: docker load, forks={args.hosts})"
        if args.no_ansible:
            doc["ansible"] = "skipped (--no-ansible / --quick)"
        elif ansible_available():
            methods.append((ansible_name, lambda: ansible(ctx)))
            doc["ansible"] = run([str(VENV / "bin" / "ansible"), "--version"]).stdout.splitlines()[
                0
            ]
        else:
            doc["ansible"] = "not installed"
        rerun_codec = "auto" if "auto" in codecs else "zstd"
        for codec in codecs:
            methods.append(
                (f"distrib ({codec})", lambda c=codec: run_distrib(ctx, c, clear_cache=True))
            )
        samples: dict[str, list[Sample]] = {name: [] for name, _ in methods}
        samples[RERUN] = []
        warm_codecs = [c for c in STORE_CODECS if c in codecs]
        for codec in warm_codecs:
            samples[warm(codec)] = []
        for index in range(1, args.runs + 1):
            for name, fn in methods:
                samples[name].append(measure(ctx, name, index, fn))
                for codec in warm_codecs:
                    if name == f"distrib ({codec})":
                        # Right after it: the store it filled, the image removed from the hosts.
                        samples[warm(codec)].append(
                            measure(
                                ctx,
                                warm(codec),
                                index,
                                lambda c=codec: run_distrib(ctx, c, clear_cache=False),
                            )
                        )
                if name == f"distrib ({rerun_codec})":
                    # Right after it: same cache, images in place, nothing changed.
                    samples[RERUN].append(
                        measure(
                            ctx,
                            RERUN,
                            index,
                            lambda: run_distrib(ctx, rerun_codec, clear_cache=False),
                            clean=False,
                        )
                    )
        lab.clean(ctx.image)

        # 4. rows, link limits, speed-ups, targets
        manual_samples = samples.get(baseline_names[0], [])
        sizes = {
            "gzip -9": statistics.median(s.phases["archive_bytes"] for s in manual_samples if s.ok)
            if any(s.ok for s in manual_samples)
            else None,
            "gzip": doc["stages"]["save|pigz -6"]["bytes"],
            "zstd": doc["stages"]["save|zstd -3 -T0"]["bytes"],
            "none": doc["stages"]["save"]["bytes"],
        }
        limits = {k: (args.hosts * v / rate if v else None) for k, v in sizes.items()}
        rows: dict[str, Any] = {}
        for name, group in samples.items():
            rows[name] = summarise(group)
        codec_of = {
            baseline_names[0]: "gzip -9",
            baseline_names[1]: "gzip",
            ansible_name: "gzip",
            **{warm(c): c for c in STORE_CODECS},
        }
        for codec in codecs:
            used = rows[f"distrib ({codec})"].get("codec_used") or (
                "gzip" if codec == "auto" else codec
            )
            codec_of[f"distrib ({codec})"] = used if used in limits else "gzip"
        for name, row in rows.items():
            limit = limits.get(codec_of.get(name, ""))
            row["link_limit_codec"] = codec_of.get(name)
            if limit and "median_s" in row:
                row["x_link_limit"] = round(row["median_s"] / limit, 2)
        baselines = {
            "manual": baseline_names[0],
            "one-liner": baseline_names[1],
            "ansible": ansible_name,
        }
        for name, row in rows.items():
            if name.startswith("distrib (") and "median_s" in row:
                for label, base in baselines.items():
                    b = rows.get(base, {})
                    if "median_s" in b:
                        row[f"speedup_vs_{label}"] = round(b["median_s"] / row["median_s"], 2)
        doc["archive_sizes"] = sizes
        doc["uplink_bytes_per_s"] = rate
        doc["link_limits_s"] = {k: round(v, 2) for k, v in limits.items() if v}
        doc["rows"] = rows
        doc["samples"] = {k: [asdict(s) for s in v] for k, v in samples.items()}
        doc["targets"] = targets(doc, rows, codecs, args.hosts)
        doc["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        # Others change distrib while this runs: record what was measured at the end too.
        doc["git_commit_end"] = run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=False
        ).stdout.strip()
        if SRC == ROOT:
            doc["distrib_uncommitted"] = run(
                ["git", "-C", str(ROOT), "status", "--short", "--", "distrib"], check=False
            ).stdout.splitlines()
    finally:
        if not args.keep_lab:
            lab.down()

    stamp = started.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))
    print(f"\nresults: {out.relative_to(ROOT)}")
    engines = args.engine or args.workstation or args.only
    if not args.quick and engines:  # an engine or --only run keeps its own latest file
        tag = f"{args.workstation or 'docker'}-to-{(args.engine or 'docker').replace(',', '+')}"
        shutil.copyfile(out, RESULTS / f"latest-{tag}.json")
        chart = RESULTS / f"{stamp}.png"
    elif not args.quick:
        shutil.copyfile(out, RESULTS / "latest.json")
        chart = BENCH / "chart.png"
    else:
        chart = RESULTS / f"{stamp}.png"
    python = VENV / "bin" / "python"
    if python.exists():
        proc = run([str(python), str(BENCH / "chart.py"), str(out), str(chart)], check=False)
        print(
            f"chart: {chart.relative_to(ROOT)}"
            if proc.returncode == 0
            else f"chart failed: {proc.stderr.strip()[-300:]}"
        )
    else:
        print("chart: skipped (no bench/.venv with matplotlib)")
    return 0 if all(r["runs_ok"] == r["runs"] for r in doc["rows"].values()) else 1


def snapshot(ref: str) -> Path:
    """distrib as committed at `ref`, unpacked under bench/.work (the checkout is untouched)."""
    sha = run(["git", "-C", str(ROOT), "rev-parse", f"{ref}^{{commit}}"]).stdout.strip()
    WORK.mkdir(parents=True, exist_ok=True)
    dest = WORK / f"src-{sha[:12]}"
    if not (dest / "distrib").is_dir():
        tmp = WORK / f".src-{sha[:12]}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        bash(
            f"git -C {shlex.quote(str(ROOT))} archive {sha} distrib pyproject.toml "
            f"| tar -x -C {shlex.quote(str(tmp))}"
        )
        tmp.rename(dest)
    log(f"measuring distrib at {sha[:12]} ({dest})")
    return dest


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _rate_bytes_per_s(rate: str) -> float:
    from distrib.lab.config import parse_rate

    return parse_rate(rate)


def targets(
    doc: dict[str, Any], rows: dict[str, Any], codecs: list[str], hosts: int
) -> dict[str, Any]:
    """Issue 5's targets against distrib's best codec row (auto when it is accepted)."""
    candidates = {
        f"distrib ({c})": rows[f"distrib ({c})"]
        for c in codecs
        if "median_s" in rows[f"distrib ({c})"] and c != "none"
    }
    if not candidates:
        return {"error": "no distrib row succeeded"}
    best = (
        "distrib (auto)"
        if "distrib (auto)" in candidates
        else min(candidates, key=lambda n: candidates[n]["median_s"])
    )
    row = rows[best]
    out: dict[str, Any] = {"row": best}

    def check(name: str, value: float | None, goal: float, higher_is_better: bool) -> None:
        if value is None:
            out[name] = {"value": None, "goal": goal, "met": None}
            return
        met = value >= goal if higher_is_better else value <= goal
        # By how much: the factor the measured value is off the goal.
        miss = None if met else round(goal / value if higher_is_better else value / goal, 2)
        out[name] = {"value": value, "goal": goal, "met": met, "off_by_x": miss}

    check("x_link_limit", row.get("x_link_limit"), TARGET_LINK, False)
    check("speedup_vs_manual", row.get("speedup_vs_manual"), TARGET_VS_MANUAL, True)
    check("speedup_vs_one-liner", row.get("speedup_vs_one-liner"), TARGET_VS_ONELINER, True)
    check("speedup_vs_ansible", row.get("speedup_vs_ansible"), TARGET_VS_ANSIBLE, True)
    rss = [
        r["peak_rss_mb"] for n, r in rows.items() if n.startswith("distrib") and "peak_rss_mb" in r
    ]
    check("peak_rss_mb", max(rss) if rss else None, TARGET_RSS_MB, False)
    rerun = rows.get(RERUN, {})
    per_host = round(rerun["median_s"] / hosts, 2) if "median_s" in rerun else None
    check("rerun_s_per_host", per_host, TARGET_RERUN_S_PER_HOST, False)
    sent = [s["phases"].get("archive_bytes_sent") for s in doc.get("samples", {}).get(RERUN, [])]
    out["rerun_archive_bytes_sent"] = sent
    t = doc.get("transport", {})
    check("paramiko_vs_openssh", t.get("ratio"), 0.7, True)
    return out


def _fmt(value: Any, spec: str = ".1f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def table(doc: dict[str, Any]) -> str:
    """The results as a Markdown table (readable on a terminal, pasted as is in the README)."""
    cfg = doc["config"]
    lines = [
        f"\n{cfg['image']} ({doc['archive_sizes']['none'] / MB:.0f} MB tar), {cfg['hosts']} hosts, "
        f"uplink {cfg['uplink']}, {cfg['runs']} run(s) each, medians; "
        f"{doc['machine']['cpus']} cores, shared machine",
        "",
        "| method | ok runs | median s (min–max) | MB on the wire | × link limit | "
        "distrib speed-up vs manual / one-liner / Ansible | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in doc["rows"].items():
        if "median_s" in row:
            secs = f"{row['median_s']:.1f} ({row['min_s']:.1f}–{row['max_s']:.1f})"
            wire = f"{row['wire_tx_bytes'] / MB:.1f}"
        else:
            secs, wire = "FAILED", "—"
        link = _fmt(row.get("x_link_limit"), ".2f", "×")
        if row.get("link_limit_codec") and "x_link_limit" in row:
            link += f" ({row['link_limit_codec']})"
        speed = ""
        if name.startswith("distrib ("):
            speed = " / ".join(
                _fmt(row.get(f"speedup_vs_{k}"), ".2f", "×")
                for k in ("manual", "one-liner", "ansible")
            )
        rss = _fmt(row.get("peak_rss_mb"), ".0f")
        lines.append(
            f"| {name} | {row['runs_ok']}/{row['runs']} | {secs} | {wire} | {link} | "
            f"{speed} | {rss} |"
        )
    if doc.get("ansible") in ("not installed",) or str(doc.get("ansible", "")).startswith(
        "skipped"
    ):
        lines.append(f"| Ansible | — | {doc['ansible']} | — | — | | |")
    for codec in ("gzip", "zstd"):
        limit = doc["link_limits_s"].get(codec)
        size = doc["archive_sizes"].get(codec)
        if limit:
            lines.append(
                f"| link limit ({codec}: {cfg['hosts']} × {size / MB:.1f} MB ÷ "
                f"{cfg['uplink']}) | | {limit:.1f} | {cfg['hosts'] * size / MB:.1f} | 1.00× | | |"
            )
    t = doc.get("transport")
    if t:
        lines += [
            "",
            f"Transport ({t['link']}, {t['size_mb']} MiB into `cat > /dev/null`, "
            f"{t['trials']} trials, medians): paramiko {t['paramiko_mb_s']} MB/s, "
            f"OpenSSH {t['openssh_mb_s']} MB/s, ratio {t['ratio']} (target ≥ 0.7); "
            f"stream only {t['paramiko_stream_only_mb_s']} vs "
            f"{t['openssh_stream_only_mb_s']} MB/s.",
        ]
    tg = doc.get("targets", {})
    if "row" in tg:
        lines += ["", f"Targets (row: {tg['row']}):"]
        for key, v in tg.items():
            if isinstance(v, dict):
                verdict = (
                    "n/a"
                    if v["met"] is None
                    else ("met" if v["met"] else f"MISSED by {v['off_by_x']}×")
                )
                lines.append(f"- {key}: {v['value']} (goal {v['goal']}): {verdict}")
        lines.append(f"- re-run archive bytes sent: {tg.get('rerun_archive_bytes_sent')}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
