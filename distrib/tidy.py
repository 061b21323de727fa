"""Keeping hosts tidy (issue 18, item 4): what a host holds under the repositories distrib
ships, which older tags to remove (`keep: N`, `distrib prune`), and which version a tag rolls
back to (`distrib rollback`). Pure: command builders and their parsers side by side (STYLE:
command and parser as a pair) and the decisions; the per-host tasks in `tidy_tasks` run them.

The rules (README "Keeping hosts tidy"):

- **Recent** means the image's creation time: the `created` of its config (docker and podman
  show it as `.Created`; on containerd it is read from the config blob the manifest names).
  Tags of a repository are ranked newest first by that time, ties by tag name (higher first).
- **keep N** keeps the N most recent tags of each repository; older tags are removed, except a
  tag whose image a container uses (running or stopped) and a tag of an image just shipped.
  `distrib-prev-TAG` tags (below) are not counted; each goes when its TAG goes.
- **The previous version** of `REPO:TAG` on a host is, in order: the tag given with `--to`;
  the image kept under `REPO:distrib-prev-TAG` (recorded before a rollout with `keep` replaces
  TAG's image, and by each rollback, so rolling back twice rolls forward); else the most recent
  other tag of REPO whose image is older than TAG's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from distrib import engines
from distrib.commands import join, q
from distrib.refs import ImageRef

PREV_PREFIX = "distrib-prev-"  # REPO:distrib-prev-TAG: TAG's image before the last change
SWAP_PREFIX = "distrib-swap-"  # a rollback's short-lived name (removed by the same script)
PINNED = engines.PINNED


@dataclass(frozen=True)
class Tagged:
    """One name on a host: `name` as the engine lists it, its image and that image's age."""

    name: str  # tidytest/app:1 (docker), localhost/... (podman), docker.io/... (containerd)
    repo: str
    tag: str
    image: str  # docker/podman: the image ID (config digest); containerd: the target digest
    created: float  # the image config's `created`, seconds since the epoch (0: unknown)


@dataclass(frozen=True)
class HostImages:
    """What a host holds: its tagged images and the images its containers use."""

    tags: tuple[Tagged, ...]
    in_use: frozenset[str]  # image IDs (docker/podman) or target digests (containerd)

    def get(self, name: str) -> Tagged | None:
        return next((t for t in self.tags if t.name == name), None)

    def of_repo(self, repo: str) -> list[Tagged]:
        return [t for t in self.tags if t.repo == repo]


@dataclass(frozen=True)
class Removal:
    """What keep/prune decided for one repository on one host."""

    remove: tuple[Tagged, ...]
    spared: tuple[tuple[Tagged, str], ...]  # older than the N kept, left there: why
    kept: tuple[Tagged, ...]


# --- names ---------------------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str]:
    """`repo:tag` -> (repo, tag); the tag is after the last ':' that follows the last '/'."""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, ""


def stored_repo(kind: str, repo: str) -> str:
    """The repository name `kind` lists for `repo` as written (engines.stored_name)."""
    return split_name(engines.stored_name(kind, ImageRef.parse(f"{repo}:x")))[0]


def _hex(image: str) -> str:
    return image if image.startswith("sha256:") else f"sha256:{image}"


# --- creation times ------------------------------------------------------------------------

_TIME = re.compile(
    r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?\s*(Z|[+-]\d\d:?\d\d)?(?:\s+\S+)?$"
)


def parse_created(text: str) -> float:
    """Seconds since the epoch from docker's RFC 3339 (`2026-12-02T05:21:01.68Z`), podman's Go
    time (`2026-12-02 05:21:01.68 +0000 UTC`) or an OCI config's `created`; 0 when unknown."""
    match = _TIME.match(text.strip())
    if not match:
        return 0.0
    day, clock, fraction, zone = match.groups()
    when = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        when -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return when.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


# --- docker and podman: one round trip --------------------------------------------------------


def listing(argv: Sequence[str]) -> str:
    """docker|podman: `I<TAB>id<TAB>created<TAB>json tags` per image, `C<TAB>image id` per
    container (running or stopped)."""
    engine = join(argv)
    image_format = q("I\t{{.Id}}\t{{.Created}}\t{{json .RepoTags}}")
    container_format = q("C\t{{.Image}}")
    return (
        f"ids=$({engine} image ls -q --no-trunc) || exit $?; "
        f'ids=$(printf "%s\\n" $ids | sort -u); '
        f'if [ -n "$ids" ]; then {engine} image inspect --format {image_format} $ids || exit $?; '
        "fi; "
        f"cs=$({engine} ps -aq --no-trunc) || exit $?; "
        f'if [ -n "$cs" ]; then {engine} container inspect --format {container_format} $cs; fi'
    )


def parse_listing(stdout: str) -> HostImages:
    tags: list[Tagged] = []
    used: set[str] = set()
    for line in stdout.splitlines():
        fields = line.split("\t")
        if fields[0] == "C" and len(fields) >= 2 and fields[1].strip():
            used.add(_hex(fields[1].strip()))
        elif fields[0] == "I" and len(fields) >= 4:
            image, created = _hex(fields[1].strip()), parse_created(fields[2])
            try:
                names = json.loads(fields[3]) or []
            except ValueError:
                names = []
            for name in names if isinstance(names, list) else []:
                if isinstance(name, str) and ":" in name and "<none>" not in name:
                    repo, tag = split_name(name)
                    tags.append(Tagged(name, repo, tag, image, created))
    return HostImages(tuple(tags), frozenset(used))


# --- containerd: names and containers, then blobs for the creation times ----------------------


def ctr_listing(ctr: Sequence[str]) -> str:
    """`ctr images ls` and `ctr containers ls`, separated by a `--containers--` line."""
    return f"{join([*ctr, 'images', 'ls'])} && echo --containers-- && " + join(
        [*ctr, "containers", "ls"]
    )


def parse_ctr_listing(stdout: str) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """(`name -> (target digest, media type)`, names of images containers use)."""
    images_text, _, containers_text = stdout.partition("--containers--")
    targets = engines.parse_ctr_images(images_text)
    used = set()
    for line in containers_text.strip().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            used.add(fields[1])
    return targets, used


def ctr_host_images(
    targets: Mapping[str, tuple[str, str]], used: Iterable[str], created: Mapping[str, float]
) -> HostImages:
    """HostImages of a containerd namespace; `created`: target digest -> creation time."""
    tags = []
    for name, (digest, _) in targets.items():
        repo, tag = split_name(name)
        if tag and "@" not in name:
            tags.append(Tagged(name, repo, tag, digest, created.get(digest, 0.0)))
    in_use = {targets[n][0] for n in used if n in targets}
    return HostImages(tuple(tags), frozenset(in_use))


def config_created(blob: bytes | None) -> float:
    """The `created` of an image config blob (0 when absent)."""
    try:
        data = json.loads(blob or b"")
    except ValueError:
        return 0.0
    value = data.get("created") if isinstance(data, dict) else None
    return parse_created(value) if isinstance(value, str) else 0.0


# --- changes -------------------------------------------------------------------------------


def removal(kind: str, argv: Sequence[str], names: Sequence[str]) -> str:
    """Remove each name (untag; the image goes with its last name; never forced, so the
    engine itself still refuses an image a container uses). Prints `removed<TAB>NAME` or
    `failed<TAB>NAME<TAB>why` per name and carries on."""
    rm = [*argv, "images", "rm"] if kind == engines.CONTAINERD else [*argv, "rmi"]
    parts = []
    for name in names:
        parts.append(
            f"if out=$({join([*rm, name])} 2>&1); then printf 'removed\\t%s\\n' {q(name)}; "
            f"else printf 'failed\\t%s\\t%s\\n' {q(name)} "
            "\"$(printf '%s' \"$out\" | tr '\\n\\t' '  ')\"; fi"
        )
    return "; ".join(parts) or "true"


def parse_removal(stdout: str) -> tuple[list[str], dict[str, str]]:
    """(names removed, `name -> why` for those the engine refused)."""
    removed: list[str] = []
    failed: dict[str, str] = {}
    for line in stdout.splitlines():
        fields = line.split("\t")
        if fields[0] == "removed" and len(fields) >= 2:
            removed.append(fields[1])
        elif fields[0] == "failed" and len(fields) >= 2:
            failed[fields[1]] = (fields[2] if len(fields) > 2 else "").strip() or "refused"
    return removed, failed


def tag(kind: str, argv: Sequence[str], source: str, target: str) -> str:
    """Point `target` at `source`'s image (replacing what it named); pinned on containerd."""
    if kind == engines.CONTAINERD:
        return (
            f"{join([*argv, 'images', 'tag', '--force', source, target])} >/dev/null && "
            f"{join([*argv, 'images', 'label', target, PINNED])} >/dev/null"
        )
    return join([*argv, "tag", source, target])


def repoint(kind: str, argv: Sequence[str], name: str, previous: str) -> str:
    """Rollback: `name` -> `previous`'s image, and `distrib-prev-TAG` -> what `name` was (so a
    second rollback rolls forward). Through a swap name: `previous` may be that prev tag."""
    repo, tag_ = split_name(name)
    swap, prev = f"{repo}:{SWAP_PREFIX}{tag_}", f"{repo}:{PREV_PREFIX}{tag_}"
    rm = [*argv, "images", "rm"] if kind == engines.CONTAINERD else [*argv, "rmi"]
    return " && ".join(
        [
            tag(kind, argv, name, swap),
            tag(kind, argv, previous, name),
            tag(kind, argv, swap, prev),
            f"{join([*rm, swap])} >/dev/null",
        ]
    )


def record_previous(kind: str, argv: Sequence[str], names: Sequence[str]) -> str:
    """Before a rollout replaces each `name`'s image: keep it as `REPO:distrib-prev-TAG`."""
    parts = []
    for name in names:
        repo, tag_ = split_name(name)
        parts.append(tag(kind, argv, name, f"{repo}:{PREV_PREFIX}{tag_}"))
    return " && ".join(parts) or "true"


# --- decisions -----------------------------------------------------------------------------


def _rank(tags: Iterable[Tagged]) -> list[Tagged]:
    """Newest first: by creation time, then by tag name (higher first)."""
    return sorted(tags, key=lambda t: (t.created, t.tag), reverse=True)


def plan_removals(host: HostImages, repo: str, keep: int, shipped: Iterable[str] = ()) -> Removal:
    """Which tags of `repo` (as the engine lists it) go when `keep` are kept. `shipped`:
    names just shipped, never removed (nor any other name of their images)."""
    shipped_names = set(shipped)
    protected = {t.image for t in host.tags if t.name in shipped_names}
    ordinary = [t for t in host.of_repo(repo) if not t.tag.startswith((PREV_PREFIX, SWAP_PREFIX))]
    ranked = _rank(ordinary)
    kept = [t for t in ranked[:keep]]
    kept += [t for t in ranked[keep:] if t.name in shipped_names]
    remove: list[Tagged] = []
    spared: list[tuple[Tagged, str]] = []
    for t in ranked[keep:]:
        if t.name in shipped_names:
            continue
        if t.image in host.in_use:
            spared.append((t, "used by a container"))
        elif t.image in protected:
            spared.append((t, "same image as one just shipped"))
        else:
            remove.append(t)
    gone = {t.tag for t in remove}
    for t in host.of_repo(repo):  # a prev tag goes with its tag
        if t.tag.startswith(PREV_PREFIX) and t.tag[len(PREV_PREFIX) :] in gone:
            if t.image in host.in_use:
                spared.append((t, "used by a container"))
            else:
                remove.append(t)
    return Removal(tuple(remove), tuple(spared), tuple(kept))


class NoPrevious(ValueError):
    """No version to roll back to: the message says what the host holds."""


def previous_version(host: HostImages, name: str, to: str | None = None) -> Tagged:
    """The version `name` (REPO:TAG as the engine lists it) rolls back to (module doc)."""
    repo, tag_ = split_name(name)
    current = host.get(name)
    if to is not None:
        chosen = host.get(f"{repo}:{to}")
        if chosen is None:
            raise NoPrevious(f"{repo}:{to} is not on this host")
        return chosen
    if current is None:
        raise NoPrevious(f"{name} is not on this host (name the version with --to TAG)")
    recorded = host.get(f"{repo}:{PREV_PREFIX}{tag_}")
    if recorded is not None and recorded.image != current.image:
        return recorded
    older = [
        t
        for t in host.of_repo(repo)
        if not t.tag.startswith((PREV_PREFIX, SWAP_PREFIX))
        and t.image != current.image
        and t.created < current.created
    ]
    if not older:
        others = sorted(t.tag for t in host.of_repo(repo) if t.name != name)
        raise NoPrevious(
            f"no previous version of {name} on this host"
            + (f" (other tags: {', '.join(others)})" if others else "")
        )
    return _rank(older)[0]
