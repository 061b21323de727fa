"""The planner: (inventory, playbook, limit) -> plan. Pure: no I/O, no connections.

Check mode, `distrib plan` and most tests use it without any host.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from distrib import engines, sshargs, units
from distrib.errors import ConfigError
from distrib.playbook import DEFAULT_REMOTE_TMP, Play, Playbook
from distrib.target import CONNECTIONS, DEFAULT_MAX_OUTPUT, HOST_KEY_MODES, Target

DEFAULT_CONNECT_TIMEOUT = 10.0


class HostLike(Protocol):
    name: str
    vars: Mapping[str, Any]
    source: str


class InventoryLike(Protocol):
    def select(self, pattern: str, limit: str | None = None) -> Sequence[HostLike]: ...


@dataclass(frozen=True)
class HostPlan:
    """One host as a play sees it: how to reach it and how to drive its engine."""

    name: str
    target: Target
    docker: tuple[str, ...]
    remote_tmp: str
    transfer: str = "auto"  # auto | staged | stream
    # issue 6: the engine kind (`docker` keeps `docker` as the client argv), its containerd
    # namespace, and become (sudo) for the commands that talk to the engine
    engine: str = engines.DOCKER
    containerd_namespace: str = engines.DEFAULT_NAMESPACE
    become: engines.Become | None = None
    relay_group: str | None = None  # issue 9: relay fan-out stays within this group


@dataclass(frozen=True)
class PlayPlan:
    play: Play
    hosts: tuple[HostPlan, ...]
    batches: tuple[tuple[HostPlan, ...], ...]
    forks: int


@dataclass(frozen=True)
class Plan:
    plays: tuple[PlayPlan, ...]

    @property
    def hosts(self) -> list[HostPlan]:
        seen: dict[str, HostPlan] = {}
        for play in self.plays:
            for host in play.hosts:
                seen.setdefault(host.name, host)
        return list(seen.values())


def make_plan(
    inventory: InventoryLike,
    playbook: Playbook,
    *,
    limit: str | None = None,
    forks: int | None = None,
    strict: bool = True,
    warn: Callable[[str], None] | None = None,
    extra_vars: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Plan:
    """Resolve every play's hosts (pattern, then --limit), settings and batches.

    `strict`: a pattern term that names nothing is an error. Otherwise it is ignored with a
    warning (`warn`) and a play whose pattern leaves no host gets none, as ansible-playbook does
    ("Could not match supplied host pattern", "skipping: no hosts matched"); a --limit that
    leaves no host in the inventory stays an error there too. `extra_vars` (-e) override every
    other var and the play's become keys; `defaults` (-u, --private-key, -T, -b, --become-user)
    apply where neither inventory nor play sets the var, as Ansible's command-line options do.
    """
    if not strict and limit is not None:
        limit = _lenient_limit(inventory, limit, warn)
    plays = []
    for play in playbook.plays:
        try:
            if strict:
                selected: Sequence[HostLike] = inventory.select(play.hosts, limit)
            else:
                selected = _lenient_select(inventory, play.hosts, limit, warn)
        except ConfigError as exc:
            raise ConfigError(
                f"{exc.message} (hosts of play {play.name!r})",
                file=play.where.file,
                line=play.where.line,
            ) from None
        hosts = tuple(host_plan(h, play, extra_vars, defaults) for h in selected)
        plays.append(PlayPlan(play, hosts, batches(hosts, play.serial), forks or play.forks))
    return Plan(tuple(plays))


def _unmatched(inventory: InventoryLike, term: str) -> bool:
    """Whether one pattern term (without its & or !) names no group or host. A malformed term
    (an invalid regex, an empty term) stays an error, as in Ansible."""
    try:
        inventory.select(term)
    except ConfigError as exc:
        if exc.message.startswith(("invalid host pattern", "empty term")):
            raise
        return True
    return False


def _known_terms(
    inventory: InventoryLike, pattern: str | Sequence[str], warn: Callable[[str], None] | None
) -> list[str] | None:
    """`pattern`'s terms that name something; unknown ones warned about and dropped. None when
    nothing can match: no positive term left, or an `&term` naming nothing."""
    from distrib.patterns import split_host_pattern

    kept: list[str] = []
    empty = False
    for term in split_host_pattern(pattern):
        body = term[1:] if term[:1] in ("&", "!") else term
        if body and _unmatched(inventory, body):
            if warn is not None:
                warn(f"Could not match supplied host pattern, ignoring: {body}")
            empty = empty or term.startswith("&")
            continue
        kept.append(term)
    if empty or not any(t[:1] not in ("&", "!") for t in kept):
        return None
    return kept


def _lenient_limit(inventory: InventoryLike, limit: str, warn: Callable[[str], None] | None) -> str:
    terms = _known_terms(inventory, limit, warn)
    try:
        if terms is not None:
            inventory.select("all", ",".join(terms))
            return ",".join(terms)
    except ConfigError:
        pass
    raise ConfigError(
        f"the inventory, host pattern and --limit {limit!r} leave no hosts to target",
        hint="check the limit against `distrib inventory --graph`",
    )


def _lenient_select(
    inventory: InventoryLike,
    pattern: str | Sequence[str],
    limit: str | None,
    warn: Callable[[str], None] | None,
) -> Sequence[HostLike]:
    terms = _known_terms(inventory, pattern, warn)
    if terms is None:
        return []
    try:
        return inventory.select(",".join(terms), limit)
    except ConfigError as exc:
        if "matches no host" in exc.message:  # all terms exist, their combination is empty
            return []
        raise


def host_plan(
    host: HostLike,
    play: Play,
    extra_vars: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> HostPlan:
    """Connection and engine settings for `host`: command-line `defaults` < inventory vars <
    play vars < `extra_vars` (-e), as in Ansible."""
    extra = dict(extra_vars or {})
    merged: dict[str, Any] = {**(defaults or {}), **host.vars, **play.vars, **extra}

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"host {host.name!r} (defined at {host.source}): {key}: {why}")

    try:
        args = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
        ssh = sshargs.parse(" ".join(str(merged.get(k) or "") for k in args))
    except sshargs.SSHArgsError as exc:
        raise bad("ansible_ssh_common_args", str(exc)) from None
    explicit = {
        name
        for name, keys in (
            ("port", ("ansible_port", "ansible_ssh_port")),
            ("user", ("ansible_user", "ansible_ssh_user")),
            ("connect_timeout", ("connect_timeout", "ansible_timeout")),
            ("key_file", ("ansible_ssh_private_key_file", "ansible_private_key_file")),
        )
        if any(merged.get(k) not in (None, "") for k in keys)
    }
    # Of two aliases set, the one Ansible's ssh plugin lists last wins (issue 17)
    port_value = _alias(merged, "ansible_port", "ansible_ssh_port", default=ssh.port or 22)
    if ssh.port:
        explicit.add("port")
    try:
        port = int(port_value)
    except (TypeError, ValueError):
        raise bad("ansible_port", f"not a port number: {port_value!r}") from None
    if not 0 < port < 65536:
        raise bad("ansible_port", f"not a port number: {port_value!r}")
    checking = merged.get(
        "host_key_checking",
        merged.get("ansible_host_key_checking", ssh.host_key_checking or "yes"),
    )
    if checking is True:
        checking = "yes"
    elif checking is False:
        checking = "off"
    if checking not in HOST_KEY_MODES:
        raise bad("host_key_checking", f"must be one of {', '.join(HOST_KEY_MODES)}")
    io_timeout = _seconds(merged.get("io_timeout", 60), "io_timeout", bad)
    max_output = _size(merged.get("max_command_output"), "max_command_output", bad)
    timeout_value = merged.get(
        "connect_timeout",
        merged.get("ansible_timeout", ssh.connect_timeout or DEFAULT_CONNECT_TIMEOUT),
    )
    if ssh.connect_timeout:
        explicit.add("connect_timeout")
    timeout = _seconds(timeout_value, "connect_timeout", bad)
    remote_tmp = str(play.remote_tmp or merged.get("remote_tmp") or DEFAULT_REMOTE_TMP)
    if not remote_tmp.startswith("/"):
        raise bad("remote_tmp", f"must be an absolute path, not {remote_tmp!r}")
    kind = str(merged.get("engine") or engines.DOCKER)
    if kind not in engines.KINDS:
        raise bad("engine", f"must be one of {', '.join(engines.KINDS)}, not {kind!r}")
    command_key = "engine_command" if merged.get("engine_command") else "docker_command"
    if kind != engines.DOCKER and command_key == "docker_command":
        docker_value: Any = list(engines.DEFAULT_ARGV[kind])
    else:
        docker_value = merged.get(command_key, "docker")
    docker = _argv(docker_value, command_key, bad)
    namespace = str(merged.get("containerd_namespace") or engines.DEFAULT_NAMESPACE)
    if not namespace.strip() or any(c.isspace() for c in namespace):
        raise bad("containerd_namespace", f"not a namespace name: {namespace!r}")
    become = _become(merged, play, bad, extra)
    key_file = (
        _alias(merged, "ansible_private_key_file", "ansible_ssh_private_key_file")
        or ssh.identity_file
    )
    user = _alias(merged, "ansible_user", "ansible_ssh_user") or ssh.user
    if ssh.user:
        explicit.add("user")
    if ssh.identity_file:
        explicit.add("key_file")
    ssh_config = merged.get("ssh_config") or ssh.config_file
    proxy_jump = merged.get("proxy_jump") or ssh.proxy_jump
    connection = str(merged.get("ansible_connection") or "ssh")
    if connection not in CONNECTIONS:
        raise bad(
            "ansible_connection", f"must be one of {', '.join(CONNECTIONS)}, not {connection!r}"
        )
    # Ansible's ssh plugin lists ansible_password, ansible_ssh_pass, ansible_ssh_password: the
    # last one set wins, so they are tried in reverse (issue 17, like the host/port aliases)
    password = _secret(
        merged, ("ansible_ssh_password", "ansible_ssh_pass", "ansible_password"), bad
    )
    target = Target(
        name=host.name,
        address=str(_alias(merged, "ansible_host", "ansible_ssh_host") or host.name),
        port=port,
        user=str(user) if user else None,
        key_file=str(key_file) if key_file else None,
        known_hosts=str(merged.get("known_hosts") or ssh.known_hosts or "") or None,
        host_key_checking=str(checking),
        connect_timeout=timeout,
        io_timeout=io_timeout,
        max_output=max_output,
        ssh_config=str(ssh_config) if ssh_config else None,
        proxy_jump=str(proxy_jump) if proxy_jump else None,
        explicit=frozenset(explicit),
        connection="local" if connection == "local" else "ssh",
        password=password,
    )
    transfer = str(play.transfer or merged.get("transfer") or "auto")
    if transfer not in ("auto", "staged", "stream"):
        raise bad("transfer", f"must be auto, staged or stream, not {transfer!r}")
    group = merged.get("relay_group")
    if group is not None and (not isinstance(group, (str, int)) or not str(group).strip()):
        raise bad("relay_group", f"must be a non-empty name, not {group!r}")
    return HostPlan(
        host.name,
        target,
        docker,
        remote_tmp,
        transfer,
        engine=kind,
        containerd_namespace=namespace,
        become=become,
        relay_group=str(group).strip() if group is not None else None,
    )


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0", "")


def _flag(value: Any) -> bool | None:
    """An Ansible boolean (INI vars are strings); None when it is not one."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _become(
    merged: Mapping[str, Any], play: Play, bad: Any, extra: Mapping[str, Any] | None = None
) -> engines.Become | None:
    """Become settings: the play's `become*` keys win over `ansible_become*` host vars, extra
    vars (-e) over both."""
    extra = extra or {}
    wanted = None if "ansible_become" in extra else play.become
    play_method = None if "ansible_become_method" in extra else play.become_method
    play_user = None if "ansible_become_user" in extra else play.become_user
    if wanted is None:
        raw = merged.get("ansible_become", merged.get("become", False))
        wanted = _flag(raw)
        if wanted is None:
            raise bad("ansible_become", f"must be true or false, not {raw!r}")
    if not wanted:
        return None
    method = str(play_method or merged.get("ansible_become_method") or "sudo")
    if method not in engines.BECOME_METHODS:
        raise bad("ansible_become_method", f"only sudo is supported, not {method!r}")
    user = str(play_user or merged.get("ansible_become_user") or "root")
    if not user.strip() or any(c.isspace() for c in user) or user.startswith("-"):
        raise bad("ansible_become_user", f"not a user name: {user!r}")
    # the sudo become plugin's order reversed (its last var set wins)
    keys = ("ansible_sudo_pass", "ansible_become_pass", "ansible_become_password")
    password = _secret(merged, keys, bad)
    return engines.Become(user=user, method=method, password=password)


def _secret(merged: Mapping[str, Any], keys: Sequence[str], bad: Any) -> engines.Secret | None:
    """A password var (the first of `keys` set) held as a Secret: never shown, never logged."""
    for key in keys:
        value = merged.get(key)
        if value in (None, ""):
            continue
        try:
            return engines.Secret(str(value))
        except ValueError as exc:
            raise bad(key, str(exc)) from None
    return None


def _alias(merged: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The value of the LAST of `names` that is set (not None), as Ansible's config manager
    picks among a connection option's vars (`ConfigManager._loop_entries`), else `default`."""
    for name in reversed(names):
        if merged.get(name) is not None:
            return merged[name]
    return default


def batch_sizes(total: int, serial: Sequence[int | str]) -> list[int]:
    """Batch sizes as Ansible computes them: each serial entry in turn, the last repeated.

    A percentage is of the play's hosts, rounded down, at least 1; 0 or an empty serial means
    all hosts at once.
    """
    if total == 0:
        return []
    if not serial:
        return [total]
    sizes: list[int] = []
    remaining = total
    index = 0
    while remaining > 0:
        entry = serial[min(index, len(serial) - 1)]
        if isinstance(entry, str):
            size = int(math.floor(total * float(entry.rstrip("%")) / 100.0))
        else:
            size = entry
        if size <= 0:
            size = total if entry == 0 else 1
        size = min(size, remaining)
        sizes.append(size)
        remaining -= size
        index += 1
    return sizes


def batches(
    hosts: Sequence[HostPlan], serial: Sequence[int | str]
) -> tuple[tuple[HostPlan, ...], ...]:
    out = []
    start = 0
    for size in batch_sizes(len(hosts), serial):
        out.append(tuple(hosts[start : start + size]))
        start += size
    return tuple(out)


STOP_NONE = ""
STOP_ALL_FAILED = "all hosts of the batch failed"
STOP_LIMIT = "failure limit exceeded"


def batch_verdict(
    failed: int, size: int, max_fail_percentage: float | None, any_errors_fatal: bool
) -> str:
    """Whether a finished batch stops the play, as ansible-playbook decides.

    `any_errors_fatal`, or a failure percentage that EXCEEDS `max_fail_percentage`, aborts the
    play (exit 8). A batch in which every host failed also stops the play, but is not an abort:
    the exit code stays 2 or 4.
    """
    if failed == 0:
        return STOP_NONE
    if any_errors_fatal:
        return STOP_LIMIT
    if max_fail_percentage is not None and failed * 100.0 / size > max_fail_percentage:
        return STOP_LIMIT
    if failed == size:
        return STOP_ALL_FAILED
    return STOP_NONE


def _seconds(value: Any, key: str, bad: Any) -> float:
    """A timeout in seconds: a finite number above 0. `nan` would disable stall detection and
    `inf` wait forever (issue 19), so both are config errors, as are 0 and negatives."""
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise bad(key, f"must be a number of seconds above 0, not {value!r}")
    return seconds


def _size(value: Any, key: str, bad: Any) -> int:
    """`max_command_output`: bytes, or a size like `64M` (at least 1M); default 64M."""
    if value is None:
        return DEFAULT_MAX_OUTPUT
    try:
        size = value if isinstance(value, int) and not isinstance(value, bool) else None
        size = size if size is not None else units.parse_size(str(value))
    except ConfigError:
        size = 0
    if size < 1000**2:
        raise bad(key, f"must be a size of at least 1M (like 64M), not {value!r}")
    return size


def _argv(value: Any, key: str, bad: Any) -> tuple[str, ...]:
    """`docker_command` / `engine_command`: a shell-like string or a list of strings."""
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:  # "No closing quotation"
            raise bad(key, f"cannot split {value!r} into words: {exc}") from None
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        argv = list(value)
    else:
        raise bad(key, f"must be a command (a string or a list of strings), not {value!r}")
    if not argv:
        raise bad(key, "must not be empty")
    return tuple(argv)
