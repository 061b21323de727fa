"""Pure pieces of the commit / backup / restore / registry workflows (issue 7): names, the
playbook keys they add (`commit`, `registry`, `namespace`, `registry_host`, `pull`,
`insecure`) and how images are named in a registry or as a backup. No I/O.

The playbook validators take `(value, where, key)` like the others in playbook.py; `where` is
anything with `file` and `line` (playbook.Located), so this module does not import playbook.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from distrib import yamlio
from distrib.errors import ConfigError
from distrib.refs import ImageRef, InvalidReference

# docker's container name grammar (daemon/names.go: RestrictedNameChars)
CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
# one path component of a repository name (distribution/reference)
PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
BACKUP_REPOSITORY = "distrib-backup"
REGISTRY_KEYS = ("namespace", "registry_host", "pull", "insecure")
COMMIT_KEYS = ("host", "container", "image", "message", "author")


class Where(Protocol):
    @property
    def file(self) -> str: ...

    @property
    def line(self) -> int: ...


def _err(file: str, line: int | None, key: str, message: str) -> ConfigError:
    return ConfigError(message, file=file, line=line, key=key)


# --- names ---------------------------------------------------------------------------------


def check_container(name: Any) -> str:
    """`name` if it is a valid docker container name (or ID), else a ConfigError saying why."""
    if not isinstance(name, str) or not CONTAINER_NAME.match(name):
        raise ConfigError(
            f"invalid container name {name!r}: expected [a-zA-Z0-9][a-zA-Z0-9_.-]+ "
            "(a container name or ID)"
        )
    return name


def check_commit_ref(text: Any) -> ImageRef:
    """The NAME:TAG a commit creates: a valid reference without a digest."""
    try:
        ref = ImageRef.parse(text)
    except InvalidReference as exc:
        raise ConfigError(str(exc)) from None
    if ref.digest:
        raise ConfigError(f"cannot commit to a digest reference {text!r}: give NAME:TAG")
    return ref


def backup_repository(container: str) -> str:
    """The repository a backup of `container` is committed to: `distrib-backup/<name>`.

    Container names may hold uppercase letters and separator runs that a repository name
    may not; such a name is folded to a valid one plus a short hash of the original, so two
    containers never share a backup repository (`Web` and `web` are different containers).
    """
    check_container(container)
    if PATH_COMPONENT.match(container):
        return f"{BACKUP_REPOSITORY}/{container}"
    folded = re.sub(r"[^a-z0-9]+", "-", container.lower()).strip("-")
    digest = hashlib.sha256(container.encode()).hexdigest()[:8]
    return f"{BACKUP_REPOSITORY}/{folded}-{digest}"


def stamp(now: datetime | None = None) -> str:
    """A UTC timestamp usable as an image tag and in file names: 20260509T101500Z."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def backup_ref(container: str, when: str) -> ImageRef:
    return ImageRef.parse(f"{backup_repository(container)}:{when}")


def safe_file_part(text: str) -> str:
    """A host name as one path component: anything but [A-Za-z0-9._-] becomes '_', and a
    leading dot is escaped (no hidden files, no '..')."""
    out = re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"
    return "_" + out if out.startswith(".") else out


# --- registry names ------------------------------------------------------------------------


def check_registry(text: Any) -> str:
    """HOST[:PORT] of a registry, as docker writes it in front of an image name."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"registry must be HOST[:PORT], not {text!r}")
    if "://" in text:
        raise ConfigError(
            f"registry {text!r}: give HOST[:PORT] without a scheme "
            "(a plain-HTTP registry is marked insecure: true)"
        )
    try:
        ref = ImageRef.parse(f"{text}/x")
    except InvalidReference:
        ref = None
    looks_like_registry = "." in text or ":" in text or text == "localhost"
    if ref is None or "/" in text or ref.name != f"{text}/x" or not looks_like_registry:
        raise ConfigError(
            f"registry {text!r} is not a registry address: expected HOST[:PORT] with a dot or "
            "a port in it (e.g. 10.0.0.5:5000, registry.example.internal); a path prefix "
            "goes in namespace:"
        )
    return text


def check_namespace(text: Any) -> str:
    """Repository path prefix inside the registry: lowercase components joined by '/'."""
    if not isinstance(text, str) or not text.strip("/"):
        raise ConfigError(f"namespace must be a non-empty path like team/app, not {text!r}")
    parts = text.strip("/").split("/")
    bad = [p for p in parts if not PATH_COMPONENT.match(p)]
    if bad:
        raise ConfigError(
            f"namespace {text!r}: {bad[0]!r} is not a valid repository path component "
            "(lowercase letters, digits, and . _ - between them)"
        )
    return "/".join(parts)


def image_path(ref: ImageRef) -> str:
    """The repository path of `ref` without its registry (docker.io/library/x -> library/x)."""
    first, sep, rest = ref.name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return ref.name


def registry_ref(ref: ImageRef, registry: str, namespace: str | None = None) -> ImageRef:
    """The name `ref` gets in `registry`: REGISTRY/[NAMESPACE/]PATH:TAG.

    demo/web:1.0 in 10.0.0.5:5000 with namespace site -> 10.0.0.5:5000/site/demo/web:1.0.
    """
    if ref.digest or not ref.tag:
        raise ConfigError(f"image {ref} has a digest: a registry play pushes tags (NAME:TAG)")
    prefix = f"{registry}/{namespace}/" if namespace else f"{registry}/"
    try:
        return ImageRef.parse(f"{prefix}{image_path(ref)}:{ref.tag}")
    except InvalidReference as exc:
        raise ConfigError(f"image {ref} in registry {registry}: {exc}") from None


def registry_host_part(registry: str) -> str:
    """HOST of HOST[:PORT] (brackets of an IPv6 literal removed)."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return host.strip("[]")


# --- playbook keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitSpec:
    """A play's `commit:` step: snapshot `container` on inventory host `host` as `image`,
    then distribute that image to the play's hosts."""

    host: str
    container: str
    image: ImageRef
    message: str | None
    author: str | None
    file: str
    line: int


def parse_commit(value: Any, where: Where, key: str) -> CommitSpec:
    """The `commit:` mapping of a play, every key checked with its own line."""
    if not isinstance(value, dict):
        raise _err(where.file, where.line, key, "must be a mapping: {host, container, image}")
    unknown = sorted(str(k) for k in value if k not in COMMIT_KEYS)
    if unknown:
        raise _err(
            where.file,
            yamlio.key_line(value, unknown[0]),
            f"{key}.{unknown[0]}",
            f"unknown key (allowed: {', '.join(COMMIT_KEYS)})",
        )
    for required in ("host", "container", "image"):
        if required not in value:
            raise _err(where.file, where.line, key, f"missing required key {required!r}")
    fields: dict[str, Any] = {}
    for name in COMMIT_KEYS:
        if name not in value:
            continue
        line = yamlio.key_line(value, name)
        item = value[name]
        try:
            if name == "container":
                fields[name] = check_container(item)
            elif name == "image":
                fields[name] = check_commit_ref(item)
            elif not isinstance(item, str) or (name == "host" and not item.strip()):
                raise ConfigError(f"must be a string, not {item!r}")
            else:
                fields[name] = item
        except ConfigError as exc:
            raise _err(where.file, line, f"{key}.{name}", exc.message) from None
    return CommitSpec(
        host=fields["host"].strip(),
        container=fields["container"],
        image=fields["image"],
        message=fields.get("message"),
        author=fields.get("author"),
        file=where.file,
        line=where.line,
    )


def parse_registry(value: Any, where: Where, key: str) -> str:
    try:
        return check_registry(value)
    except ConfigError as exc:
        raise _err(where.file, where.line, key, exc.message) from None


def parse_namespace(value: Any, where: Where, key: str) -> str:
    try:
        return check_namespace(value)
    except ConfigError as exc:
        raise _err(where.file, where.line, key, exc.message) from None


def required_keys(data: Mapping[Any, Any]) -> tuple[str, ...]:
    """A play needs `hosts` and `images`; a play with a `commit` step may omit `images` (it
    ships the committed image)."""
    if "commit" in data or "images_from" in data:  # images_from: the images are in files
        return ("hosts",)
    return ("hosts", "images")


def check_play(data: Mapping[Any, Any], values: Mapping[str, Any], file: str) -> None:
    """Rules between keys of one play (each key alone is already valid)."""
    if "registry" not in values:
        for name in REGISTRY_KEYS:
            if name in values:
                raise _err(
                    file, yamlio.key_line(data, name), name, "only meaningful with registry:"
                )
    else:
        for spec in values.get("images", ()):
            if spec.ref.digest:
                raise _err(
                    spec.where.file,
                    spec.where.line,
                    "images",
                    f"{spec.ref} has a digest: a registry play pushes tags (NAME:TAG)",
                )
    commit = values.get("commit")
    if commit is not None:
        for spec in values.get("images", ()):
            if spec.ref == commit.image:
                raise _err(
                    spec.where.file,
                    spec.where.line,
                    "images",
                    f"{spec.ref} is made by the play's commit step: do not list it in images",
                )
