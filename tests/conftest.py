"""Shared fixtures. Integration tests (marker `lab`) run against a real lab: network namespaces
with their own OpenSSH sshd and dockerd, brought up once per session by `distrib lab up`.

Without root/Linux/dockerd the lab tests are skipped, unless DISTRIB_REQUIRE_LAB=1 (set by
.ci/run), where a lab that cannot come up is an error, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

LAB_HOSTS = 3
ROOT = Path(__file__).resolve().parent.parent

# The suite reads inventories with distrib's built-in reader (what tests were written against),
# in this process and in the distrib subprocesses it starts; tests of the ansible-core reader
# (tests/test_ansible_compat.py) choose it explicitly. Issue 17.
os.environ.setdefault("DISTRIB_INVENTORY_PARSER", "builtin")


@dataclass(frozen=True)
class Lab:
    inventory: Path
    hosts: tuple[str, ...]
    dir: Path

    def exec(self, host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside a lab host (its own netns, /tmp and docker)."""
        return distrib("lab", "exec", host, "--", *argv, check=check)

    def image_id(self, host: str, ref: str) -> str | None:
        out = self.exec(host, "docker", "image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    def remove_images(self, *refs: str) -> None:
        for host in self.hosts:
            self.exec(host, "docker", "rmi", "-f", *refs, check=False)

    def temp_files(self, host: str) -> list[str]:
        out = self.exec(host, "sh", "-c", "ls -A /var/tmp /tmp 2>/dev/null | grep distrib || true")
        return [line for line in out.stdout.splitlines() if line.strip()]

    def state(self) -> Any:
        """The lab's current state (pids change when the lab is restored: never cache it)."""
        from distrib.lab import require_state

        return require_state()

    def spare_address(self, index: int) -> str:
        """An address on the lab subnet where no host lives (.100 + index): connects time out
        there, and the traffic never leaves the lab bridge."""
        if not 0 <= index < 150:
            raise ValueError(index)
        prefix = self.state().workstation_address.rsplit(".", 1)[0]
        return f"{prefix}.{100 + index}"

    def restore(self) -> None:
        """Bring every host back (after a test broke one): `lab up` over the existing lab."""
        distrib("lab", "up", "--hosts", str(len(self.hosts)), "--inventory", str(self.inventory), *_lab_up_options(), check=True)

    def inventory_with(
        self,
        directory: Path,
        *,
        extra_vars: dict[str, Any] | None = None,
        host_vars: dict[str, dict[str, Any]] | None = None,
        extra_hosts: dict[str, dict[str, Any]] | None = None,
    ) -> Path:
        """A copy of the lab inventory with vars changed or hosts added to group `lab`."""
        data = yaml.safe_load(self.inventory.read_text())
        data["all"].setdefault("vars", {}).update(extra_vars or {})
        hosts = data["all"]["children"]["lab"]["hosts"]
        for name, hv in (host_vars or {}).items():
            hosts[name] = {**(hosts.get(name) or {}), **hv}
        hosts.update(extra_hosts or {})
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "inventory.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def local_id(ref: str) -> str:
    """The image ID `ref` has in the workstation's docker (what every host must end up with)."""
    return subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def distrib(
    *args: str, check: bool = False, timeout: float = 900, **kw: object
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (as a user would)."""
    proc = subprocess.run(
        [sys.executable, "-m", "distrib", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        **kw,  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"distrib {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _lab_up_options() -> list[str]:
    """Every host's dockerd may use a plain-HTTP registry on the lab's own subnet (the
    registry tests run Debian's docker-registry on a lab host: `lab registry up`)."""
    from distrib.lab import config, current_instance

    return ["--insecure-registry", str(config.subnet(current_instance()))]


def _lab_unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the lab needs Linux"
    if os.geteuid() != 0:
        return "the lab needs root"
    for program in ("dockerd", "sshd", "ip", "nsenter"):
        if not shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            return f"{program} is not installed"
    return None


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = _lab_unavailable()
    if reason:
        if os.environ.get("DISTRIB_REQUIRE_LAB") == "1":
            pytest.fail(f"lab required but unavailable: {reason}")
        pytest.skip(reason)
    inventory = tmp_path_factory.mktemp("lab") / "inventory.yaml"
    distrib("lab", "up", "--hosts", str(LAB_HOSTS), "--inventory", str(inventory), *_lab_up_options(), check=True)
    try:
        distrib("lab", "images", check=True)
        from distrib.lab import lab_dir as lab_dir_of  # $DISTRIB_LAB_DIR, else per instance

        lab_dir = lab_dir_of()
        yield Lab(inventory, tuple(f"node{i}" for i in range(1, LAB_HOSTS + 1)), lab_dir)
    finally:
        distrib("lab", "down")


# ------------------------------------------------------------ evidence when a lab test fails

LAB_ROOTS = Path("/var/lib")
DAEMON_EVENTS = ("panic", "fatal", "level=error", "shutdown", "signal", "terminat", "killed")


def daemon_log_evidence(since: float, roots: Path = LAB_ROOTS, per_file: int = 8) -> str:
    """The lab daemons' log lines since `since` that tell a stop, a crash or an error (each
    log's last `per_file`), so a host whose engine stopped answering says why in the report."""
    lines: list[str] = []
    for log in sorted(roots.glob("distrib-lab*/logs/*.log")):
        try:
            if log.stat().st_mtime < since:
                continue
            text = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        # grpc's "[core]" lines are connectivity chatter
        hits = [t for t in text if any(e in t.lower() for e in DAEMON_EVENTS) and "[core]" not in t]
        lines += [f"{log}: {t[:300]}" for t in hits[-per_file:]]
        panic = next((i for i, t in enumerate(text) if t.startswith(("panic:", "fatal error:"))), None)
        if panic is not None:  # a Go daemon's crash: its message and the crashing goroutine
            lines += [f"{log}: {t[:300]}" for t in text[panic : panic + 40]]
    return "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker("lab") is not None:
        evidence = daemon_log_evidence(call.start - 5)
        if evidence:
            report.sections.append(("lab daemon logs", evidence))
