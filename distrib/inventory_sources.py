"""The built-in reader's sources: inventory files and directories (YAML, or INI through
`distrib.inventory_ini`), `h1,h2,` host lists, and the group_vars/ and host_vars/ beside them,
read as Ansible's yaml, ini, host_list and host_group_vars plugins read them."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from distrib import patterns, yamlio
from distrib.errors import ConfigError
from distrib.hostrange import expand_hostpattern
from distrib.inventory_builder import Builder, VarsDir, check_var_name, populate_hosts
from distrib.inventory_ini import parse_ini
from distrib.inventory_records import EXTRA_HINT, Loaded, Where, at

__all__ = ["read", "read_text"]

# Inventory plugins' file choice (ansible-core 2.19+): the yaml plugin takes these extensions,
# the ini plugin `.ini` and extension-less files; a directory skips these names.
YAML_EXTENSIONS = (".yaml", ".yml", ".json")
_DIR_IGNORE_EXTS = (
    *(".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst"),
    *(".orig", ".cfg", ".retry"),
)
_DIR_IGNORE_NAMES = re.compile(r"^\.|^host_vars$|^group_vars$|^vars_plugins$")

_GROUP_KEYS = ("hosts", "vars", "children")


def read(sources: Sequence[str], playbook_dir: str | None) -> Loaded:
    """The built-in reader's `Inventory.load`: `sources` in order, then the group_vars/ and
    host_vars/ beside each source and beside the playbook (`playbook_dir`)."""
    builder = Builder()
    bases: list[str] = []
    for source in sources:
        if not source:
            continue
        if "," in source and not os.path.exists(source):
            parse_host_list(builder, source)
            continue
        path = os.path.expanduser(source)
        parse_path(builder, path)
        bases.append(path if os.path.isdir(path) else os.path.dirname(path) or ".")
    read: dict[str, VarsDir] = {}
    for base in bases:  # every source's, in order, repeats included (Ansible's loop)
        if base not in read:
            read[base] = read_vars_dir(builder, base)
        builder.inventory_vars.append(read[base])
    if playbook_dir is not None:
        builder.playbook_vars.append(read_vars_dir(builder, playbook_dir))
    return builder.build(tuple(sources))


def read_text(text: str, name: str, kind: str) -> Loaded:
    """One inventory given as text, `kind` "yaml" or "ini"; `name` stands for the file."""
    builder = Builder()
    if kind == "yaml":
        parse_yaml(builder, loads_yaml(text, name), name)
    else:
        parse_ini(builder, text, name)
    return builder.build((name,))


def parse_path(builder: Builder, path: str) -> None:
    if os.path.isdir(path):
        try:
            entries = sorted(os.listdir(path))
        except OSError as exc:
            raise ConfigError(
                f"cannot read inventory directory: {exc.strerror or exc}", file=path
            ) from None
        for entry in entries:
            if _DIR_IGNORE_NAMES.search(entry) or entry.endswith(_DIR_IGNORE_EXTS):
                continue
            parse_path(builder, os.path.join(path, entry))
        return
    text = yamlio.read_text(path, "inventory")
    _refuse_ansible_only(text, path)
    if text.startswith("#!") and os.access(path, os.X_OK):  # the script plugin comes first
        raise ConfigError(
            f"an executable inventory script, which the built-in inventory reader does not "
            f"run: {EXTRA_HINT}",
            file=path,
            line=1,
        )
    ext = os.path.splitext(path)[1].lower()
    if ext in YAML_EXTENSIONS or (ext == "" and _looks_like_yaml_inventory(text, path)):
        parse_yaml(builder, loads_yaml(text, path), path)
    elif ext == ".toml":
        raise ConfigError(
            f"a TOML inventory, which the built-in inventory reader does not read: {EXTRA_HINT}",
            file=path,
        )
    else:
        parse_ini(builder, text, path)


def read_vars_dir(builder: Builder, base: str) -> VarsDir:
    """group_vars/ and host_vars/ in `base` (Ansible's host_group_vars plugin).

    `group_vars/NAME` may be NAME, NAME.yml, NAME.yaml, NAME.json or a directory NAME/ of such
    files (read sorted, recursively; later files win). Only groups and hosts that exist are
    read: files for unknown names are ignored, as Ansible does. Where these vars stand in a
    host's precedence: `Builder._effective_vars`.
    """
    found = VarsDir()
    for kind, known, into in (
        ("group_vars", builder.groups, found.groups),
        ("host_vars", builder.hosts, found.hosts),
    ):
        folder = os.path.join(base, kind)
        if not os.path.isdir(folder):
            continue
        for name in list(known):
            if name.startswith(os.path.sep):  # Ansible skips chroot-like names
                continue
            for path in _vars_files(folder, name):
                data = _load_yaml_file(path, f"{kind} file")
                if data is None:
                    continue
                if not isinstance(data, Mapping):
                    raise ConfigError(
                        f"{kind} file must be a mapping of vars, got {type(data).__name__}",
                        file=path,
                        line=getattr(data, "line", None),
                    )
                values = into.setdefault(name, {})
                for key, value in data.items():
                    where: Where = (path, _line_of(data, key, None))
                    check_var_name(key, where)
                    values[key] = (value, where)
    return found


def _refuse_ansible_only(text: str, path: str) -> None:
    """What only ansible-core reads, refused in one line naming the extra."""
    if text.lstrip().startswith("$ANSIBLE_VAULT;"):
        raise ConfigError(
            f"a vault-encrypted file, which the built-in inventory reader cannot decrypt: "
            f"{EXTRA_HINT}",
            file=path,
            line=1,
        )


def _load_yaml_file(path: str, what: str) -> Any:
    text = yamlio.read_text(path, what)
    _refuse_ansible_only(text, path)
    return loads_yaml(text, path)


def loads_yaml(text: str, path: str) -> Any:
    try:
        return yamlio.loads(text, path)
    except ConfigError as exc:
        for tag in ("!vault", "!unsafe"):
            if f"for the tag '{tag}'" in exc.message:
                raise ConfigError(
                    f"a {tag} value, which the built-in inventory reader cannot read: {EXTRA_HINT}",
                    file=exc.file,
                    line=exc.line,
                ) from None
        raise


def _vars_files(folder: str, name: str) -> list[str]:
    """DataLoader.find_vars_files: NAME, NAME.yml, NAME.yaml, NAME.json, or a directory NAME."""
    found: list[str] = []
    for candidate in [name, *(name + ext for ext in YAML_EXTENSIONS)]:
        path = os.path.join(folder, candidate)
        if os.path.isdir(path):
            found.extend(_dir_vars_files(path))
        elif os.path.isfile(path):
            found.append(path)
    return found


def _dir_vars_files(path: str) -> list[str]:
    """DataLoader._get_dir_vars_files: entries sorted by name, a subdirectory read where it
    sorts (only one without an extension), hidden and `~` backup files skipped."""
    found: list[str] = []
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise ConfigError(f"cannot read vars directory: {exc.strerror or exc}", file=path) from None
    for entry in entries:
        if entry.startswith(".") or entry.endswith("~"):
            continue
        ext = os.path.splitext(entry)[1]
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not ext:
            found.extend(_dir_vars_files(full))
        elif os.path.isfile(full) and ext in ("", *YAML_EXTENSIONS):
            found.append(full)
    return found


def _looks_like_yaml_inventory(text: str, name: str) -> bool:
    """An extension-less file is YAML if it parses to a mapping of group mappings."""
    try:
        data = yamlio.loads(text, name)
    except ConfigError:
        return False
    return (
        isinstance(data, Mapping)
        and bool(data)
        and all(v is None or isinstance(v, Mapping) for v in data.values())
    )


def parse_host_list(builder: Builder, source: str) -> None:
    """The host_list plugin: `h1,h2:2222,` -- no ranges, hosts in 'ungrouped'."""
    where: Where = (source, 1)
    for item in source.split(","):
        item = item.strip()
        if not item:
            continue
        parsed = patterns.parse_address(item, allow_ranges=False)
        name, port = parsed if parsed is not None else (item, None)
        if name in builder.hosts:  # host_list adds a host only once
            continue
        builder.add_host(name, "ungrouped", where)
        if port is not None:
            builder.set_host_var(name, "ansible_port", port, where)


# --- YAML (plugins/inventory/yaml.py) ---------------------------------------------------------


def _line_of(mapping: Any, key: Any, default: int | None) -> int | None:
    if isinstance(mapping, yamlio.LineDict):
        return mapping.key_line(key)
    return default


def parse_yaml(builder: Builder, data: Any, name: str) -> None:
    if not data:
        raise ConfigError("empty inventory", file=name)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"a YAML inventory must map group names (like `all:`) to groups, "
            f"got {type(data).__name__}",
            file=name,
            line=getattr(data, "line", None),
        )
    if "plugin" in data:
        raise ConfigError(
            f"an inventory plugin configuration (plugin: {data['plugin']}), which the "
            f"built-in inventory reader does not run: {EXTRA_HINT}",
            file=name,
            line=_line_of(data, "plugin", None),
        )
    for group, group_data in data.items():
        _parse_yaml_group(builder, group, group_data, (name, _line_of(data, group, None)))


def _parse_yaml_group(builder: Builder, group: Any, data: Any, where: Where) -> str:
    name = builder.add_group(group, where).name
    if data is None:
        return name
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"group {name!r} must be a mapping with hosts/vars/children, "
            f"got {type(data).__name__} {data!r}",
            **at(where),
        )
    file = where[0]
    for key, value in data.items():
        here: Where = (file, _line_of(data, key, where[1]))
        if key not in _GROUP_KEYS:
            raise ConfigError(
                f"unexpected key {key!r} in group {name!r}",
                **at(here),
                hint="a group may only have hosts, vars and children "
                "(host vars go under `hosts: {host: {var: value}}`)",
            )
        if value is None:
            continue
        if isinstance(value, str) and key != "vars":  # yaml plugin: `hosts: web1` is allowed
            value = {value: None}
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{key!r} of group {name!r} must be a mapping, got {type(value).__name__}",
                **at(here),
                hint="hosts: and children: map names to (possibly empty) entries: `web1:`"
                if key != "vars"
                else None,
            )
        if key == "vars":
            for var, val in value.items():
                builder.set_group_var(name, var, val, (file, _line_of(value, var, here[1])))
        elif key == "children":
            for child, child_data in value.items():
                child_where = (file, _line_of(value, child, here[1]))
                child_name = _parse_yaml_group(builder, child, child_data, child_where)
                builder.add_child(name, child_name, child_where)
        else:
            for pattern, host_vars in value.items():
                host_where = (file, _line_of(value, pattern, here[1]))
                names, port = expand_hostpattern(pattern, host_where)
                if host_vars is None:
                    host_vars = {}
                if not isinstance(host_vars, Mapping):
                    raise ConfigError(
                        f"host {pattern!r} in group {name!r} must map to its vars, "
                        f"got {type(host_vars).__name__} {host_vars!r}",
                        **at(host_where),
                    )
                var_line = host_vars.key_line if isinstance(host_vars, yamlio.LineDict) else None
                populate_hosts(builder, names, name, port, host_vars, host_where, var_line)
    return name
