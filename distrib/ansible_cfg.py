"""ansible.cfg, read like Ansible (issue 17): the settings distrib uses as its own defaults.

The file is the first one found of $ANSIBLE_CONFIG (a file, or a directory holding
ansible.cfg), ./ansible.cfg (skipped when the directory is world-writable, as Ansible does),
~/.ansible.cfg and /etc/ansible/ansible.cfg -- only that one is read, never a merge. Each
setting's environment variable (ANSIBLE_REMOTE_USER, ...) beats the file, as in Ansible's
ConfigManager. Values are typed like ansible-core's config/base.yml (booleans, integers, paths
relative to the file's directory), and a bad one is a ConfigError naming file:line and key.

These are *defaults*: distrib's flags beat them, inventory and play vars beat both (distrib.plan).
Pure apart from reading the one file: `parse` takes text and an environment.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distrib import yamlio
from distrib.errors import ConfigError

__all__ = ["SETTINGS", "AnsibleConfig", "Setting", "find_config_file", "load", "parse"]

SYSTEM_CONFIG = "/etc/ansible/ansible.cfg"
SYSTEM_INVENTORY = "/etc/ansible/hosts"  # DEFAULT_HOST_LIST's default


@dataclass(frozen=True)
class _Spec:
    ini: tuple[tuple[str, str], ...]  # (section, key); the last one set wins
    env: tuple[str, ...]  # the last one set wins, and beats the file
    kind: str  # str | bool | int | path | pathlist


# ansible-core 2.19 config/base.yml (and the ssh connection plugin for the [ssh_connection] keys)
SETTINGS: dict[str, _Spec] = {
    "inventory": _Spec((("defaults", "inventory"),), ("ANSIBLE_INVENTORY",), "pathlist"),
    "remote_user": _Spec((("defaults", "remote_user"),), ("ANSIBLE_REMOTE_USER",), "str"),
    "remote_port": _Spec((("defaults", "remote_port"),), ("ANSIBLE_REMOTE_PORT",), "int"),
    "private_key_file": _Spec(
        (("defaults", "private_key_file"),), ("ANSIBLE_PRIVATE_KEY_FILE",), "path"
    ),
    "host_key_checking": _Spec(
        (("defaults", "host_key_checking"), ("ssh_connection", "host_key_checking")),
        ("ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_SSH_HOST_KEY_CHECKING"),
        "bool",
    ),
    "forks": _Spec((("defaults", "forks"),), ("ANSIBLE_FORKS",), "int"),
    "timeout": _Spec(
        (("defaults", "timeout"), ("ssh_connection", "timeout")),
        ("ANSIBLE_TIMEOUT", "ANSIBLE_SSH_TIMEOUT"),
        "int",
    ),
    "become": _Spec((("privilege_escalation", "become"),), ("ANSIBLE_BECOME",), "bool"),
    "become_user": _Spec(
        (("privilege_escalation", "become_user"),), ("ANSIBLE_BECOME_USER",), "str"
    ),
    "become_method": _Spec(
        (("privilege_escalation", "become_method"),), ("ANSIBLE_BECOME_METHOD",), "str"
    ),
    "become_ask_pass": _Spec(
        (("privilege_escalation", "become_ask_pass"),), ("ANSIBLE_BECOME_ASK_PASS",), "bool"
    ),
    "ask_pass": _Spec((("defaults", "ask_pass"),), ("ANSIBLE_ASK_PASS",), "bool"),
    "vault_password_file": _Spec(
        (("defaults", "vault_password_file"),), ("ANSIBLE_VAULT_PASSWORD_FILE",), "path"
    ),
}

# setting -> the host var it stands for, as a default under inventory and play vars
_HOST_VARS = {
    "remote_user": "ansible_user",
    "remote_port": "ansible_port",
    "private_key_file": "ansible_private_key_file",
    "host_key_checking": "ansible_host_key_checking",
    "timeout": "ansible_timeout",
    "become": "ansible_become",
    "become_user": "ansible_become_user",
    "become_method": "ansible_become_method",
}

# module_utils/parsing/convert_bool.py
_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
_FALSE = frozenset({"n", "no", "off", "0", "false", "f"})


@dataclass(frozen=True)
class Setting:
    value: Any
    origin: str  # "FILE:LINE" or "$ENV_NAME"


@dataclass(frozen=True)
class AnsibleConfig:
    """The settings found (only those set); `path` is the file read, None when there is none."""

    path: str | None = None
    settings: Mapping[str, Setting] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        setting = self.settings.get(name)
        return default if setting is None else setting.value

    @property
    def inventory(self) -> list[str]:
        """`inventory` (a list), else Ansible's default /etc/ansible/hosts when it exists."""
        listed: list[str] = self.get("inventory") or []
        if not listed and os.path.exists(SYSTEM_INVENTORY):
            return [SYSTEM_INVENTORY]
        return listed

    @property
    def forks(self) -> int | None:
        forks: int | None = self.get("forks")
        return forks

    def host_defaults(self) -> dict[str, Any]:
        """remote_user, private_key_file, host_key_checking, timeout, become... as the host
        vars they stand for (ansible_user, ...): the lowest-precedence defaults of a plan."""
        return {var: self.get(name) for name, var in _HOST_VARS.items() if name in self.settings}


def find_config_file(
    environ: Mapping[str, str] | None = None, cwd: str | None = None
) -> str | None:
    """The ansible.cfg Ansible would read (`config.manager.find_ini_config_file`), or None."""
    env = os.environ if environ is None else environ
    candidates: list[str] = []
    if "ANSIBLE_CONFIG" in env:
        path = os.path.abspath(os.path.expanduser(env["ANSIBLE_CONFIG"]))
        candidates.append(os.path.join(path, "ansible.cfg") if os.path.isdir(path) else path)
    here = cwd or os.getcwd()
    try:
        if not os.stat(here).st_mode & stat.S_IWOTH:  # a world-writable cwd is skipped
            candidates.append(os.path.join(here, "ansible.cfg"))
    except OSError:
        pass
    candidates += [os.path.expanduser("~/.ansible.cfg"), SYSTEM_CONFIG]
    for path in candidates:
        if os.path.exists(path) and os.access(path, os.R_OK):
            return path
    return None


def load(environ: Mapping[str, str] | None = None, cwd: str | None = None) -> AnsibleConfig:
    """Find and read ansible.cfg (or none), then apply the environment over it."""
    env = os.environ if environ is None else environ
    path = find_config_file(env, cwd)
    text = yamlio.read_text(path, "ansible.cfg") if path else ""
    return parse(text, path, env)


def parse(text: str, path: str | None, environ: Mapping[str, str] | None = None) -> AnsibleConfig:
    """The settings of ansible.cfg `text` (read from `path`), with `environ` over them."""
    env = {} if environ is None else environ
    name = path or "<ansible.cfg>"
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    try:
        parser.read_string(text, source=name)
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        if line is None and isinstance(exc, configparser.ParsingError) and exc.errors:
            line = exc.errors[0][0]
        message = exc.message.splitlines()[0] if hasattr(exc, "message") else str(exc)
        raise ConfigError(f"invalid ansible.cfg: {message}", file=name, line=line) from None
    lines = _key_lines(text)
    base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    settings: dict[str, Setting] = {}
    for setting, spec in SETTINGS.items():
        found: tuple[str, str, str] | None = None  # (raw, origin, key)
        for section, key in spec.ini:
            if parser.has_option(section, key):
                where = f"{name}:{lines.get((section, key), '?')}" if path else name
                found = (parser.get(section, key), where, f"[{section}] {key}")
        for variable in spec.env:
            if variable in env:
                found = (env[variable], f"${variable}", variable)
        if found is None:
            continue
        raw, origin, key = found
        from_file = not origin.startswith("$")
        value = _typed(raw, spec.kind, base if from_file else os.getcwd(), origin, key)
        settings[setting] = Setting(value, origin)
    return AnsibleConfig(path, settings)


_SECTION = re.compile(r"^\s*\[([^\]]+)\]")
_KEY = re.compile(r"^([^\s#;=:][^=:]*?)\s*[=:]")


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(section, key) -> line number, for errors (configparser does not keep them)."""
    lines: dict[tuple[str, str], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        m = _SECTION.match(line)
        if m:
            section = m.group(1).strip()
            continue
        m = _KEY.match(line)
        if m:
            lines[(section, m.group(1).strip().lower())] = number
    return lines


def _typed(raw: str, kind: str, base: str, origin: str, key: str) -> Any:
    """ansible-core's `ensure_type` for the kinds used here."""
    text = raw.strip()

    def bad(why: str) -> ConfigError:
        file, _, line = origin.rpartition(":")
        if origin.startswith("$") or not line.isdigit():
            return ConfigError(f"{why}, got {raw!r}", key=f"{origin} ({key})")
        return ConfigError(f"{why}, got {raw!r}", file=file, line=int(line), key=key)

    if kind == "bool":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise bad("must be a boolean (yes/no, true/false, on/off, 1/0)")
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise bad("must be an integer") from None
    if kind == "path":
        return _resolve(text, base)
    if kind == "pathlist":
        return [_resolve(p.strip(), base) for p in text.split(",") if p.strip()]
    return text


def _resolve(path: str, base: str) -> str:
    """`resolve_path`: ~ and $VARS expanded, relative to the file's directory."""
    path = os.path.expandvars(os.path.expanduser(path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))
