"""The engine matrix of the lab (issue 14): which container engines a lab host (or the lab's
workstation) can run, and where each comes from. Pure: no I/O here (fetching is `fetch.py`).

A plain name (`docker`, `podman`, `containerd`) is the machine's own package, whatever its
version. A versioned name (`docker-28`, `podman-5`, ...) is the system package when the
system's version has that major, else binaries from a newer Debian suite, downloaded and
unpacked into a private cache (DESIGN.md, "Newer engines"): never installed over the system's.
Older versions than the system's cannot be had (only newer suites are fetched).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from distrib.errors import LabError

DOCKER, PODMAN, CONTAINERD = "docker", "podman", "containerd"
KINDS = (DOCKER, PODMAN, CONTAINERD)
# The Debian package whose version is "the system's version" of each kind.
SYSTEM_PACKAGE = {DOCKER: "docker.io", PODMAN: "podman", CONTAINERD: "containerd"}
CACHE_DIR = "/var/cache/distrib-lab/engines"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LIB_DIR = "usr/lib/x86_64-linux-gnu"  # where a suite's own loader and libraries land

# trixie's podman 5 needs glibc 2.38: it runs on Debian 12 with trixie's own loader and these
# libraries (found by trial: each is asked for by podman or by one of the others).
PODMAN5_LIBS = (
    "libc6", "libsubid5", "libgpgme11t64", "libsqlite3-0", "libseccomp2", "libassuan9",
    "libgpg-error0", "libaudit1", "libcap-ng0", "libsemanage2", "libselinux1", "libbsd0",
    "libmd0", "libsepol2", "libbz2-1.0",
)  # fmt: skip


@dataclass(frozen=True)
class EngineSpec:
    """One entry of the catalogue.

    `suite` is the Debian suite whose packages provide it ("" for the plain system names);
    `major` the upstream version prefix it stands for ("" = any); `store` the image store of a
    docker engine (`classic` graph drivers or the `containerd` image store); `loader` is true
    when the binary runs through its suite's own dynamic loader (newer glibc than the system).
    """

    name: str
    kind: str
    suite: str
    packages: tuple[str, ...]
    major: str
    store: str = "classic"
    loader: bool = False

    @property
    def main_package(self) -> str:
        return SYSTEM_PACKAGE[self.kind]

    @property
    def containerd_store(self) -> bool:
        return self.store == "containerd"


_DOCKER_PKGS = ("docker.io", "docker-cli", "containerd")
CATALOGUE: tuple[EngineSpec, ...] = (
    EngineSpec("docker", DOCKER, "", ("docker.io",), ""),
    EngineSpec("podman", PODMAN, "", ("podman",), ""),
    EngineSpec("containerd", CONTAINERD, "", ("containerd",), ""),
    EngineSpec("docker-20.10", DOCKER, "bookworm", ("docker.io",), "20.10"),
    EngineSpec("docker-26", DOCKER, "trixie", _DOCKER_PKGS, "26"),
    EngineSpec("docker-28", DOCKER, "sid", _DOCKER_PKGS, "28"),
    EngineSpec("docker-28-containerd", DOCKER, "sid", _DOCKER_PKGS, "28", store="containerd"),
    EngineSpec("podman-4", PODMAN, "bookworm", ("podman",), "4"),
    EngineSpec("podman-5", PODMAN, "trixie", ("podman", *PODMAN5_LIBS), "5", loader=True),
    EngineSpec("containerd-1.6", CONTAINERD, "bookworm", ("containerd",), "1.6"),
    EngineSpec("containerd-2", CONTAINERD, "sid", ("containerd",), "2"),
)
NAMES = tuple(e.name for e in CATALOGUE)
# Suites this machine may download from: only newer than every supported system (Debian 12
# and 13); the older versions are only ever the system's own packages.
FETCHABLE_SUITES = ("trixie", "sid")
WORKSTATION_ENGINES = ("docker-20.10", "docker-26", "docker-28", "docker-28-containerd")


def spec(name: str) -> EngineSpec:
    """The catalogue entry `name`, or LabError listing the known names."""
    for entry in CATALOGUE:
        if entry.name == name:
            return entry
    raise LabError(f"unknown engine {name!r} (known: {', '.join(NAMES)})")


def parse_engines(text: str | None, n_hosts: int) -> list[str]:
    """`--kinds` text -> one engine name per host; the last one repeats; default `docker`."""
    if not text:
        return ["docker"] * n_hosts
    names = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in names if k not in NAMES]
    if bad or not names:
        raise LabError(
            f"--kinds: unknown engine {', '.join(bad) or text!r} (use {', '.join(NAMES)})"
        )
    if len(names) > n_hosts:
        raise LabError(f"--kinds names {len(names)} hosts but --hosts is {n_hosts}")
    return names + [names[-1]] * (n_hosts - len(names))


def upstream_version(debian_version: str) -> str:
    """`1:20.10.24+dfsg1-1+b3` -> `20.10.24`: no epoch, Debian revision or +/~ suffix."""
    text = debian_version.strip().split(":", 1)[-1]
    return re.split(r"[+~-]", text, maxsplit=1)[0]


def version_matches(major: str, version: str) -> bool:
    """Whether upstream `version` (20.10.24, 28.5.2) is of release `major` (20.10, 28)."""
    if not major:
        return True
    up = upstream_version(version)
    return up == major or up.startswith(major + ".")


@dataclass(frozen=True)
class Resolution:
    """Where an engine comes from on this machine.

    source: "system" (the machine's packages), "cache" (a fetched suite) or "" (cannot run
    here: `reason` says why). `version` is the Debian version of the kind's main package
    ("" when unknown, e.g. not fetched yet).
    """

    spec: EngineSpec
    source: str
    version: str = ""
    reason: str = ""

    @property
    def available(self) -> bool:
        return bool(self.source)


def resolve(
    name: str,
    system_versions: Mapping[str, str | None],
    system_suite: str,
    fetched_version: str | None = None,
) -> Resolution:
    """Decide where engine `name` comes from.

    `system_versions`: kind -> the installed Debian version of its package (None: not
    installed); `system_suite`: this machine's Debian codename; `fetched_version`: the version
    of the kind's main package in the cache of the engine's suite (None: not fetched).
    """
    entry = spec(name)
    installed = system_versions.get(entry.kind)
    if installed and version_matches(entry.major, installed):
        return Resolution(entry, "system", installed)
    if not entry.suite:
        return Resolution(
            entry, "", reason=f"{entry.main_package} is not installed (apt-get install it)"
        )
    if entry.suite == system_suite and installed is None:
        return Resolution(
            entry, "", reason=f"{entry.main_package} is not installed (apt-get install it)"
        )
    if entry.suite not in FETCHABLE_SUITES or entry.suite == system_suite:
        have = (
            f"this machine's {entry.main_package} is {installed}"
            if installed
            else (f"{entry.main_package} is not installed")
        )
        return Resolution(
            entry,
            "",
            reason=f"{name} is Debian {entry.suite}'s {entry.main_package}, and {have}; "
            f"older releases than the system's are not fetched",
        )
    if fetched_version is not None:
        return Resolution(entry, "cache", fetched_version)
    return Resolution(entry, "", reason=f"not fetched: run `distrib lab engines fetch {name}`")


# ---------------------------------------------------------------------------------- apt sources


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if line.startswith("#"):
            continue
        if line[0] in " \t" and key:
            current[key] += " " + line.strip()
            continue
        if ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _is_main_archive(uri: str, suites: Sequence[str], components: Sequence[str]) -> bool:
    # The Debian main archive: not the security archive, has `main`, a plain suite.
    return (
        "security" not in uri
        and "main" in components
        and any(not s.endswith(("-security", "-updates", "-backports")) for s in suites)
    )


def debian_archive_uris(deb822: Mapping[str, str], one_line: Mapping[str, str]) -> list[str]:
    """URIs of the Debian main archive named by the system's apt sources, in order.

    `deb822`: path -> text of *.sources files; `one_line`: path -> text of sources.list files.
    The lab never names a mirror itself: it uses the one this machine is configured for.
    """
    found: list[str] = []
    for text in deb822.values():
        for st in _deb822_stanzas(text):
            if "deb" not in st.get("types", "").split():
                continue
            if st.get("enabled", "yes").lower() == "no":
                continue
            suites, comps = st.get("suites", "").split(), st.get("components", "").split()
            for uri in st.get("uris", "").split():
                if _is_main_archive(uri, suites, comps):
                    found.append(uri.rstrip("/"))
    for text in one_line.values():
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 3 and _is_main_archive(words[0], [words[1]], words[2:]):
                found.append(words[0].rstrip("/"))
    return list(dict.fromkeys(found))


def sources_list(uri: str, suite: str) -> str:
    """The private one-line sources list of `suite` from the system's archive `uri`."""
    return f"deb [signed-by={KEYRING}] {uri} {suite} main\n"


def parse_os_release(text: str) -> str:
    """VERSION_CODENAME of /etc/os-release text ("" if absent)."""
    for line in text.splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def loader_wrapper_script(binary: str) -> str:
    """/usr/bin/podman of a podman-5 host: the relinked binary, without the cgroup v1
    deprecation warning on every command (this kernel runs cgroup v1)."""
    return f'#!/bin/sh\nPODMAN_IGNORE_CGROUPSV1_WARNING=1 exec {binary} "$@"\n'


def daemon_json(entry: EngineSpec) -> str:
    """daemon.json of a docker engine: the containerd image store when its `store` says so."""
    if entry.containerd_store:
        return '{"features": {"containerd-snapshotter": true}}\n'
    return "{}\n"
