"""Playbooks: a YAML list of plays, parsed into frozen records. Pure apart from reading the file.

Every error names the file, the line and the key. Unknown keys are errors (a typo must never be
silently ignored by a tool that changes hosts).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from distrib import imagearchive, sources, yamlio
from distrib.errors import ConfigError
from distrib.refs import ImageRef, InvalidReference
from distrib.workflows import spec as workflow_spec

CODECS = ("auto", "gzip", "zstd", "xz", "none")
DEFAULT_FORKS = 10
DEFAULT_REMOTE_TMP = "/var/tmp"


@dataclass(frozen=True)
class Located:
    """Where something was written: for error messages that point back at the playbook."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ImageSpec:
    ref: ImageRef
    where: Located
    # issue 18: an image archive holds it (read into the layer store, not from the engine)
    archived: imagearchive.ArchivedImage | None = None

    def __str__(self) -> str:
        return str(self.ref)


@dataclass(frozen=True)
class Play:
    name: str
    hosts: str
    images: tuple[ImageSpec, ...]
    where: Located
    compression: str = "gzip"
    level: int | None = None
    forks: int = DEFAULT_FORKS
    serial: tuple[int | str, ...] = ()  # () = all hosts in one batch
    max_fail_percentage: float | None = None
    any_errors_fatal: bool = False
    remote_tmp: str | None = None
    verify: bool = True
    transfer: str | None = None  # auto | staged | stream (None: host var, else auto)
    fanout: str = "direct"  # issue 9: direct | relay (hosts pass the archive on) | auto (16)
    relay_width: int = 3  # relay: children per host
    relay_roots: int = 1  # relay: ungrouped hosts the workstation feeds itself (issue 16)
    uplink: str | None = None  # fanout auto: the workstation's uplink rate, e.g. 200mbit
    delta: str = "auto"  # auto: send each docker host only the layers it lacks | off
    vars: Mapping[str, Any] = field(default_factory=dict)
    # issue 6: run engine commands through sudo (None: the host's ansible_become* vars)
    become: bool | None = None
    become_user: str | None = None
    become_method: str | None = None
    # issue 7: a commit step before distribution, and a registry target (workflows/spec.py)
    commit: workflow_spec.CommitSpec | None = None
    registry: str | None = None  # HOST[:PORT]: push there (from registry_host), then pull
    namespace: str | None = None
    registry_host: str | None = None  # the inventory host that loads and pushes
    pull: bool = False  # the play's hosts pull from the registry (else: push only)
    insecure: bool = False  # the registry speaks plain HTTP
    # issue 18: after a verified rollout, keep this many tags per repository shipped (tidy.py)
    keep: int | None = None
    # issue 18, item 2: the workstation `docker pull`s the images first (never: it must have
    # them; `pull` above is the registry workflow's hosts pulling, another thing)
    local_pull: str = "never"  # missing | always | never
    platform: str | None = None  # os/arch[/variant]: what the workstation pulls
    # issue 18: image archives are never loaded into the workstation's engine unless asked
    local_load: bool = False

    @classmethod
    def parse(cls, data: Any, file: str, index: int) -> Play:
        """Build a Play from one YAML mapping, rejecting unknown keys and wrong types."""
        line = yamlio.line_of(data)
        if not isinstance(data, dict):
            raise ConfigError(
                f"play #{index + 1} must be a mapping, not {_kind(data)}", file=file, line=line
            )
        unknown = sorted(set(data) - set(_FIELDS), key=str)  # keys may be ints or null
        if unknown:
            key = unknown[0]
            raise ConfigError(
                f"unknown key in play (allowed: {', '.join(_FIELDS)})",
                file=file,
                line=yamlio.key_line(data, key),
                key=str(key),
            )
        for required in workflow_spec.required_keys(data):
            if required not in data:
                raise ConfigError(
                    f"play is missing required key {required!r}", file=file, line=line
                )
        values: dict[str, Any] = {}
        for key, value in data.items():
            where = Located(file, yamlio.key_line(data, key))
            values[key] = _FIELDS[key](value, where, key)
        _merge_sources(values)
        workflow_spec.check_play(data, values, file)
        _check_keep(
            values, Located(file, yamlio.key_line(data, "keep") if "keep" in data else line)
        )
        values.setdefault("images", ())  # a commit-only play ships what it commits
        name = values.pop("name", None) or f"play #{index + 1}"
        return cls(name=name, where=Located(file, line), **values)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else type(value).__name__


def _err(where: Located, key: str, message: str) -> ConfigError:
    # line 0: the command line (adhoc_play), which has no lines to name
    return ConfigError(message, file=where.file, line=where.line or None, key=key)


def _string(value: Any, where: Located, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _err(where, key, f"must be a non-empty string, not {value!r}")
    return value


def _bool(value: Any, where: Located, key: str) -> bool:
    if not isinstance(value, bool):
        raise _err(where, key, f"must be true or false, not {value!r}")
    return value


def _int_range(low: int, high: int) -> Callable[[Any, Located, str], int]:
    def check(value: Any, where: Located, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _err(where, key, f"must be a whole number from {low} to {high}, not {value!r}")
        return value

    return check


def _rate(value: Any, where: Located, key: str) -> str:
    from distrib.relay.fanout import parse_rate

    try:
        parse_rate(value)
    except ValueError as exc:
        raise _err(where, key, str(exc)) from None
    return str(value)


def _percentage(value: Any, where: Located, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise _err(where, key, f"must be a number from 0 to 100, not {value!r}")
    return float(value)


def _hosts(value: Any, where: Located, key: str) -> str:
    if isinstance(value, list):  # Ansible accepts a list of patterns
        return ",".join(_string(v, where, key) for v in value)
    return _string(value, where, key).strip()


def _images(value: Any, where: Located, key: str) -> tuple[ImageSpec, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _err(where, key, "must be a non-empty list of image references")
    specs: list[ImageSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        item_where = Located(
            where.file, value.item_line(i) if hasattr(value, "item_line") else where.line
        )
        if not isinstance(item, str):
            raise _err(item_where, key, f"image must be a string, not {item!r}")
        try:
            ref = ImageRef.parse(item)
        except InvalidReference as exc:
            raise _err(item_where, key, str(exc)) from None
        if str(ref) in seen:
            raise _err(item_where, key, f"image {item!r} listed twice")
        seen.add(str(ref))
        specs.append(ImageSpec(ref, item_where))
    return tuple(specs)


def _images_from(value: Any, where: Located, key: str) -> tuple[ImageSpec, ...]:
    """`images_from: FILE` or a list of files (relative to the playbook): compose files,
    Kubernetes YAML, list files (distrib.sources), or image archives (distrib.imagearchive,
    told apart by content; `{file: ARCHIVE, name: REF}` names an archive's one image). Each
    image keeps its file, line and key."""
    paths = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(paths, list) or not paths:
        raise _err(where, key, "must be a file or a non-empty list of files")
    specs: list[ImageSpec] = []
    for i, item in enumerate(paths):
        item_where = Located(where.file, yamlio.item_line(paths, i) or where.line)
        name = None
        if isinstance(item, dict):
            item, name = _archive_item(item, item_where, key)
        path = sources.resolve(_string(item, item_where, key), where.file)
        if name is not None or imagearchive.is_archive(path):
            specs.extend(_archived(path, name, item_where, key))
            continue
        for found in sources.images_in(path):
            try:
                ref = ImageRef.parse(found.text)
            except InvalidReference as exc:
                raise ConfigError(
                    str(exc), file=found.file, line=found.line, key=found.key
                ) from None
            specs.append(ImageSpec(ref, Located(found.file, found.line)))
    return tuple(specs)


def _archive_item(item: dict[str, Any], where: Located, key: str) -> tuple[Any, ImageRef]:
    """`{file: ARCHIVE, name: REPO:TAG}`: the name the archive's image is shipped under."""
    unknown = sorted(set(item) - {"file", "name"}, key=str)
    if unknown or "file" not in item or "name" not in item:
        raise _err(
            where,
            key,
            "an archive with a name is {file: ARCHIVE, name: REPO:TAG}"
            + (f" (unknown key {unknown[0]!r})" if unknown else ""),
        )
    try:
        return item["file"], ImageRef.parse(_string(item["name"], where, f"{key}.name"))
    except InvalidReference as exc:
        raise _err(where, f"{key}.name", str(exc)) from None


def _archived(path: str, name: ImageRef | None, where: Located, key: str) -> list[ImageSpec]:
    """The images of an archive, one spec per name; `name` replaces the archive's names
    and needs an archive of one image (all platforms of an index count as one)."""
    if not imagearchive.is_archive(path):
        raise ConfigError(
            "is not an image archive (docker-archive tar, OCI archive or OCI layout "
            "directory): `name:` is for archives",
            file=path,
        )
    images = imagearchive.read(path)
    at = Located(path, 0)
    if name is not None:
        if len(images) != 1:
            raise _err(
                where,
                f"{key}.name",
                f"{path} holds {len(images)} images: name: needs an archive of one",
            )
        return [ImageSpec(name, at, images[0])]
    specs = []
    for image in images:
        if not image.names:
            raise _err(
                where,
                key,
                f"{path} holds an image with no name ({image.describe()}): give it one, "
                f"images_from: [{{file: {path}, name: REPO:TAG}}] (push: --archive-name)",
            )
        specs += [ImageSpec(ImageRef.parse(n), at, image) for n in image.names]
    return specs


def _merge_sources(values: dict[str, Any]) -> None:
    """`images` then the images of `images_from` files, each reference once (an archive
    that holds an image listed in `images` is where it comes from)."""
    extra = values.pop("images_from", ())
    if extra:
        merged: dict[str, ImageSpec] = {}
        for spec in (*values.get("images", ()), *extra):
            kept = merged.get(str(spec.ref))
            if kept is None or (kept.archived is None and spec.archived is not None):
                merged[str(spec.ref)] = spec
        values["images"] = tuple(merged.values())


def _platform(value: Any, where: Located, key: str) -> str:
    from distrib import platforms

    try:
        return str(platforms.Platform.parse(_string(value, where, key)))
    except ValueError as exc:
        raise _err(where, key, str(exc)) from None


def _compression(value: Any, where: Located, key: str) -> str:
    if value is False or value is None:
        value = "none"
    if value not in CODECS:
        raise _err(where, key, f"must be one of {', '.join(CODECS)}, not {value!r}")
    return str(value)


# What YAML 1.1 (PyYAML, like Ansible) makes of a bare word: `off`, `no`, `false` are False and
# `on`, `yes`, `true` are True. A documented enum spelling that YAML reads as a bool is taken back
# (issue 18: the README's `delta: off` failed with "must be one of auto, off, not False").
_YAML_BOOLS = {False: ("off", "no", "false"), True: ("on", "yes", "true")}


def _choice(*allowed: str) -> Callable[[Any, Located, str], str]:
    """One of `allowed`; a bool only where YAML made it of one of them (`off` -> False)."""
    unquoted = {
        flag: spelling
        for flag, spellings in _YAML_BOOLS.items()
        for spelling in allowed
        if spelling in spellings
    }

    def check(value: Any, where: Located, key: str) -> str:
        if isinstance(value, bool) and value in unquoted:
            return unquoted[value]
        if not isinstance(value, str) or value not in allowed:
            raise _err(where, key, f"must be one of {', '.join(allowed)}, not {value!r}")
        return value

    return check


def _serial(value: Any, where: Located, key: str) -> tuple[int | str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _err(where, key, "must not be an empty list")
    out: list[int | str] = []
    for item in items:
        if isinstance(item, bool):
            raise _err(where, key, f"must be a number or a percentage, not {item!r}")
        if isinstance(item, int) and item >= 0:
            out.append(item)
        elif isinstance(item, str) and item.endswith("%"):
            try:
                pct = float(item[:-1])
            except ValueError:
                raise _err(where, key, f"bad percentage {item!r}") from None
            if not 0 < pct <= 100:
                raise _err(where, key, f"percentage must be in (0, 100], not {item!r}")
            out.append(item)
        else:
            raise _err(where, key, f"must be a number or a percentage like '30%', not {item!r}")
    return tuple(out)


def _vars(value: Any, where: Located, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _err(where, key, "must be a mapping of variable names to values")
    return dict(value)


def _remote_tmp(value: Any, where: Located, key: str) -> str:
    text = _string(value, where, key)
    if not text.startswith("/"):
        raise _err(where, key, f"must be an absolute path, not {text!r}")
    return text


_FIELDS: dict[str, Callable[[Any, Located, str], Any]] = {
    "name": _string,
    "hosts": _hosts,
    "images": _images,
    "images_from": _images_from,
    "compression": _compression,
    "level": _int_range(0, 22),
    "forks": _int_range(1, 1000),
    "serial": _serial,
    "max_fail_percentage": _percentage,
    "any_errors_fatal": _bool,
    "remote_tmp": _remote_tmp,
    "verify": _bool,
    "transfer": _choice("auto", "staged", "stream"),
    "fanout": _choice("direct", "relay", "auto"),
    "relay_width": _int_range(1, 64),
    "relay_roots": _int_range(1, 64),
    "uplink": _rate,
    "delta": _choice("auto", "off"),
    "vars": _vars,
    "become": _bool,
    "become_user": _string,
    "become_method": _choice("sudo"),
    "commit": workflow_spec.parse_commit,
    "registry": workflow_spec.parse_registry,
    "namespace": workflow_spec.parse_namespace,
    "registry_host": _hosts,
    "pull": _bool,
    "insecure": _bool,
    "keep": _int_range(1, 1000),
    "local_pull": _choice("missing", "always", "never"),
    "platform": _platform,
    "local_load": _bool,
}


def _check_keep(values: Mapping[str, Any], where: Located) -> None:
    """`keep` acts after a verified rollout on each host (tidy_tasks.KeepTask)."""
    if values.get("keep") is None:
        return
    if values.get("verify") is False:
        raise _err(where, "keep", "needs verify: tags are only removed after a verified rollout")
    if values.get("fanout") in ("relay", "auto") or values.get("registry"):
        raise _err(
            where, "keep", "is not supported with fanout: relay/auto or a registry target yet"
        )


@dataclass(frozen=True)
class Playbook:
    path: str
    plays: tuple[Play, ...]

    @classmethod
    def load(cls, path: str) -> Playbook:
        """Read and validate a playbook file."""
        return cls.from_data(yamlio.load(path), path)

    @classmethod
    def from_text(cls, text: str, name: str = "<playbook>") -> Playbook:
        return cls.from_data(yamlio.loads(text, name), name)

    @classmethod
    def from_data(cls, data: Any, path: str) -> Playbook:
        if data is None:
            raise ConfigError("playbook is empty", file=path, line=1)
        if isinstance(data, dict):  # a single play written without the leading "-"
            data_list: list[Any] = [data]
        elif isinstance(data, list):
            data_list = data
        else:
            raise ConfigError("a playbook must be a list of plays", file=path, line=1)
        if not data_list:
            raise ConfigError("playbook has no plays", file=path, line=yamlio.line_of(data) or 1)
        return cls(path, tuple(Play.parse(p, path, i) for i, p in enumerate(data_list)))


def local_pulls(
    plays: Sequence[Play], missing: Collection[ImageRef], check: bool = False
) -> list[tuple[ImageSpec, str | None]]:
    """What the workstation pulls before inspecting its images (`local_pull`, issue 18):
    (the image as listed first, the play's platform), each (reference, platform) once.
    `always` pulls every image of the play, `missing` those not in the local engine. In
    check mode `always` pulls only what is missing (nothing is refreshed by a dry run)."""
    out: dict[tuple[str, str | None], ImageSpec] = {}
    for play in plays:
        mode = "missing" if check and play.local_pull == "always" else play.local_pull
        for spec in play.images:
            if spec.archived is not None:  # an archive source: never pulled
                continue
            if mode == "always" or (mode == "missing" and spec.ref in missing):
                out.setdefault((str(spec.ref), play.platform), spec)
    return [(spec, platform) for (_, platform), spec in out.items()]


def adhoc_play(hosts: str, images: list[str], **options: Any) -> Play:
    """A play built from command-line arguments (`distrib push`, `restore`)."""
    where = Located("<command line>", 0)
    data = {"hosts": hosts, **({"images": images} if images else {}), **options}
    values = {k: _FIELDS[k](v, where, k) for k, v in data.items()}
    _check_keep(values, where)
    _merge_sources(values)
    values.setdefault("images", ())
    return Play(name=values.pop("name", "command line"), where=where, **values)
