"""Where a play's images come from besides `images:` (issue 18, item 2): `images_from:` files.

Three kinds of file, told apart by name and content:
- a compose file (`services:` mapping): each service's `image:`;
- Kubernetes YAML (documents with `kind:`, `---` separated, or a `kind: List`): the `image:` of
  every container and initContainer of Pods, Deployments, ReplicaSets, StatefulSets,
  DaemonSets, Jobs and CronJobs (other kinds -- Services, ConfigMaps -- hold no images);
- a list file (any other name, e.g. `images.txt`): one reference per line, `#` comments.

Image archives (docker-archive tars, OCI archives and layouts) are told apart by content before
these and read by distrib.imagearchive (playbook._images_from).

Pure apart from reading the file; YAML only through `yamlio`. Each image found keeps the line
and the key path it came from, so an error (or a missing image) names `file:line: key`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from distrib import yamlio
from distrib.errors import ConfigError

YAML_SUFFIXES = (".yaml", ".yml", ".json")
# kind -> path from the document to its PodSpec
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("initContainers", "containers")


@dataclass(frozen=True)
class Found:
    """One image reference as written in a source file (not yet validated)."""

    text: str
    file: str
    line: int
    key: str  # where in the file: `services.web.image`, `Deployment/api: ...containers[0].image`


def images_in(path: str) -> tuple[Found, ...]:
    """Every image reference `path` names, in file order, each once. A file that names none
    is an error (an `images_from:` that ships nothing is a mistake)."""
    text = yamlio.read_text(path, "images_from")
    is_yaml = path.lower().endswith(YAML_SUFFIXES)
    found = from_yaml(text, path) if is_yaml else from_list(text, path)
    first: dict[str, Found] = {}
    for item in found:
        first.setdefault(item.text, item)
    unique = tuple(first.values())
    if not unique:
        raise ConfigError(
            "names no image (a compose file's services, Kubernetes workloads' containers, "
            "or one reference per line)",
            file=path,
            line=1,
        )
    return unique


def from_list(text: str, name: str) -> list[Found]:
    """A list file: one reference per line; blank lines and `#` comments (also after a
    reference) are skipped."""
    out: list[Found] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if len(line.split()) > 1:
            raise ConfigError(f"one image reference per line, not {line!r}", file=name, line=number)
        out.append(Found(line, name, number, f"line {number}"))
    return out


def from_yaml(text: str, name: str) -> list[Found]:
    """A compose file or Kubernetes YAML (one or many documents)."""
    docs = yamlio.loads_all(text, name)
    if len(docs) == 1 and isinstance(docs[0], dict) and "services" in docs[0]:
        return from_compose(docs[0], name)
    out: list[Found] = []
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise ConfigError(
                "neither a compose file (services:) nor Kubernetes YAML (kind:)",
                file=name,
                line=yamlio.line_of(doc) or 1,
            )
        out.extend(from_kubernetes(doc, name))
    return out


def from_compose(doc: dict[str, Any], name: str) -> list[Found]:
    """A compose file: `services.NAME.image`. A service with only `build:` has no image name
    to ship and is skipped; compose's `${VAR}` interpolation is refused, not guessed."""
    services = doc["services"]
    if not isinstance(services, dict):
        raise ConfigError(
            "must be a mapping of service names",
            file=name,
            line=yamlio.line_of(doc),
            key="services",
        )
    out: list[Found] = []
    for service, body in services.items():
        key = f"services.{service}"
        if not isinstance(body, dict):
            raise ConfigError(
                "a service must be a mapping",
                file=name,
                line=yamlio.key_line(services, service),
                key=key,
            )
        if "image" not in body:
            continue
        out.append(_image(body, "image", name, f"{key}.image"))
    return out


def from_kubernetes(doc: dict[str, Any], name: str) -> list[Found]:
    """One Kubernetes object (a `kind: List` is walked item by item)."""
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List")):
        items = doc.get("items") or []
        return [f for item in items if isinstance(item, dict) for f in from_kubernetes(item, name)]
    path = POD_SPEC_PATHS.get(str(kind))
    if path is None:
        return []
    meta = doc.get("metadata")
    label = f"{kind}/{meta.get('name', '?') if isinstance(meta, dict) else '?'}"
    node: Any = doc
    walked: list[str] = []
    for step in path:
        parent = node
        node = node.get(step) if isinstance(node, dict) else None
        walked.append(step)
        if not isinstance(node, dict):
            raise ConfigError(
                f"{label} has no pod spec at {'.'.join(path)}",
                file=name,
                line=yamlio.key_line(parent, step) if isinstance(parent, dict) else 1,
                key=".".join(walked),
            )
    out: list[Found] = []
    for listed in CONTAINER_LISTS:
        containers = node.get(listed)
        if containers is None:
            continue
        where = ".".join([*path, listed])
        if not isinstance(containers, list):
            raise ConfigError(
                "must be a list of containers",
                file=name,
                line=yamlio.key_line(node, listed),
                key=f"{label}: {where}",
            )
        for index, container in enumerate(containers):
            key = f"{label}: {where}[{index}].image"
            if not isinstance(container, dict) or "image" not in container:
                raise ConfigError(
                    "a container must have an image",
                    file=name,
                    line=yamlio.item_line(containers, index),
                    key=key,
                )
            out.append(_image(container, "image", name, key))
    return out


def _image(mapping: dict[str, Any], field: str, name: str, key: str) -> Found:
    value = mapping[field]
    line = yamlio.key_line(mapping, field)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"must be an image reference, not {value!r}", file=name, line=line, key=key
        )
    if "${" in value or value.startswith("$"):
        raise ConfigError(
            f"{value!r} uses variable interpolation, which distrib does not expand",
            file=name,
            line=line,
            key=key,
            hint="write the reference out, or list the images in a list file",
        )
    return Found(value.strip(), name, line, key)


def resolve(path: str, relative_to: str) -> str:
    """`path` as written in a playbook: relative to the playbook's directory (`relative_to`
    is the playbook file; '' or a `<command line>` name: the current directory)."""
    path = os.path.expanduser(path)
    if os.path.isabs(path) or not relative_to or relative_to.startswith("<"):
        return path
    return os.path.join(os.path.dirname(relative_to), path)
