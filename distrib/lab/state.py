"""The lab's saved state (`state.json`): what `up` created, so `down`/`status`/`exec` find it."""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from distrib.errors import LabError
from distrib.lab import config

STATE_FILE = "state.json"
DEFAULT_DIR = config.DEFAULT_DIR
ENV_DIR = "DISTRIB_LAB_DIR"


def current_instance(option: int | None = None) -> int:
    """The lab instance: `option` (--instance), else $DISTRIB_LAB_INSTANCE, else 0."""
    return config.resolve_instance(option, os.environ)


def lab_dir(override: str | os.PathLike[str] | None = None, instance: int | None = None) -> Path:
    """The lab directory: `override`, else $DISTRIB_LAB_DIR, else the instance's default
    (/var/lib/distrib-lab for instance 0, /var/lib/distrib-lab-N for N>0)."""
    chosen = (
        override or os.environ.get(ENV_DIR) or config.default_lab_dir(current_instance(instance))
    )
    return Path(chosen).absolute()


@dataclass(frozen=True)
class LabHost:
    """One lab host: its namespace, addresses, daemons and private directories."""

    name: str
    address: str
    netns: str
    veth_root: str  # end enslaved to the bridge, in the workstation's namespace
    veth_host: str  # end inside the host's namespace
    host_dir: str
    sshd_pid: int
    sshd_config: str
    dockerd_pid: int
    docker_socket: str
    data_root: str
    exec_root: str
    storage_driver: str
    tmp_dir: str  # bind-mounted over /tmp inside the host
    var_tmp_dir: str  # bind-mounted over /var/tmp inside the host
    ssh_dir: str  # bind-mounted over /root/.ssh inside the host (only authorized_keys)
    kind: str = "docker"  # docker | podman | containerd (lab/remotes.py); dockerd_pid is the
    # containerd's pid on a containerd host, 0 on a podman host
    behind_bastion: bool = False  # the workstation reaches its sshd only through the bastion
    engine: str = ""  # engine name of the matrix (lab/engines.py): docker-28, podman-5, ...
    engine_version: str = ""  # Debian version of that engine's package

    @property
    def docker_host(self) -> str:
        """DOCKER_HOST value that reaches this host's dockerd from the workstation."""
        return f"unix://{self.docker_socket}"


@dataclass(frozen=True)
class LabState:
    """Everything `up` created; `hosts` in index order (node1 first)."""

    lab_dir: str
    bridge: str
    workstation_address: str
    uplink: str | None
    client_key: str  # private key; the public one is client_key + ".pub"
    known_hosts: str
    inventory: str
    forward_rule: bool  # the iptables FORWARD accept rule for the bridge was inserted
    workstation_dockerd_pid: int | None  # set only when the lab started the local dockerd
    hosts: tuple[LabHost, ...]
    bastion: str | None = None  # the bastion host's name (`up --bastion`)
    users: bool = False  # `up --users` created the lab login users (lab/remotes.py)
    # `up --workstation ENGINE`: a lab-managed local dockerd of that engine (lab/engines.py)
    workstation_engine: str | None = None
    workstation_engine_version: str = ""
    workstation_engine_pid: int = 0
    workstation_docker_host: str | None = None  # unix://<labdir>/workstation/docker.sock
    workstation_docker_bin: str | None = None  # dir holding only its `docker` client

    def workstation_env(self) -> dict[str, str]:
        """Environment that points docker (and distrib) at the workstation engine: {} when
        the lab uses the system's docker. PATH gets the engine's client dir first."""
        if not self.workstation_docker_host:
            return {}
        env = {"DOCKER_HOST": self.workstation_docker_host}
        if self.workstation_docker_bin:
            env["PATH"] = f"{self.workstation_docker_bin}:{os.environ.get('PATH', '')}"
        return env

    def host(self, name: str) -> LabHost:
        """The host named `name`, or LabError listing the known names."""
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts) or "none"
        raise LabError(f"no lab host {name!r} (hosts: {known})")

    def to_json(self) -> str:
        """Serialise to indented JSON (the `state.json` text)."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = STATE_FILE) -> LabState:
        """Parse `state.json` text; unknown or missing keys are a LabError naming `source`."""
        try:
            raw = json.loads(text)
            hosts = tuple(_build(LabHost, h, source) for h in raw.pop("hosts"))
            state: LabState = _build(cls, {**raw, "hosts": hosts}, source)
            return state
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LabError(f"{source}: unreadable lab state ({exc})") from None


def _build(cls: type[Any], raw: dict[str, Any], source: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    # fields with a default may be missing (a state.json written before they existed)
    missing = {f.name for f in fields(cls) if f.default is MISSING} - set(raw)
    if unknown or missing:
        raise LabError(
            f"{source}: lab state does not match this version "
            f"(unknown {sorted(unknown)}, missing {sorted(missing)}); run `distrib lab down`"
        )
    return cls(**raw)


def load_state(
    directory: str | os.PathLike[str] | None = None, instance: int | None = None
) -> LabState | None:
    """The saved state of the lab in `directory` (default: the instance's dir), or None."""
    path = lab_dir(directory, instance) / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LabError(f"{path}: cannot read lab state: {exc.strerror}") from None
    return LabState.from_json(text, str(path))


def save_state(state: LabState) -> None:
    """Write `state.json` atomically (a killed `up` never leaves half a file)."""
    path = Path(state.lab_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json(), encoding="utf-8")
    os.replace(tmp, path)
