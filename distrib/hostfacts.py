"""What a host is (issue 14, issue 15 item 5): its engine, version, image store, data root and
staging space, tools and machine, from ONE probe script (`probe_script`, every engine kind);
which codecs each engine reads itself (THE codec table) and which host tools unpack the
others. Pure: a command builder and its parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from distrib.shell import join, q

# --- the probe --------------------------------------------------------------------------------

TOOLS = ("zstd", "pigz", "gzip", "xz", "sha256sum")
DOCKER_INFO_FORMAT = "{{.DockerRootDir}}{{println}}{{.Driver}} {{json .DriverStatus}}"
# docker's image store (issue 14): the containerd image store (docker 26+ with the
# containerd-snapshotter feature, the default of docker 29) runs a containerd snapshotter as
# its "driver" (`overlayfs [["driver-type","io.containerd.snapshotter.v1"]]`); the classic
# store a graph driver (`overlay2 [["Backing Filesystem","extfs"],...]`).
CONTAINERD_STORE = "containerd"
CLASSIC_STORE = "classic"


DOCKER = "docker"
PODMAN = "podman"
CONTAINERD = "containerd"
KINDS = (DOCKER, PODMAN, CONTAINERD)


def probe_script(kind: str, argv: Sequence[str], remote_tmp: str) -> str:
    """THE probe, for every engine kind (unwrapped: `engines.Engine.probe` runs it as the
    engine user, or it goes in one command with other queries: shell.in_parts). One
    read-only round trip: `engine=KIND`, the engine's version (empty: it does not answer),
    its data root and storage driver, the free space there and where archives are staged,
    the helper tools present and the machine. Changes nothing on the host."""
    if kind == DOCKER:
        version = join([*argv, "version", "--format", "{{.Server.Version}}"])
        # one `docker info`: the data root (line 1) and the storage driver with its status
        # (line 2), which names the containerd snapshotter on the containerd image store
        info = join([*argv, "info", "--format", DOCKER_INFO_FORMAT])
    elif kind == PODMAN:
        version = join([*argv, "version", "--format", "{{.Client.Version}}"])
        info = join([*argv, "info", "--format", "{{.Store.GraphRoot}}"])
    else:
        # `ctr version` prints Client and Server sections; only a server answer counts.
        version = (
            f"{join([*argv, 'version'])} | "
            "awk '/^Server:/{s=1} s && $1==\"Version:\"{print $2; exit}'"
        )
        info = "true"
    tools = " ".join(TOOLS)
    # df of the nearest existing ancestor: the staging dir may not exist yet (check mode).
    return (
        f"printf 'engine=%s\\n' {q(kind)}; "
        f"printf 'engine_version=%s\\n' \"$({version} 2>/dev/null)\"; "
        f'i="$({info} 2>/dev/null)"; r="$(printf \'%s\\n\' "$i" | sed -n 1p)"; '
        "printf 'docker_root=%s\\n' \"$r\"; "
        "printf 'docker_driver=%s\\n' \"$(printf '%s\\n' \"$i\" | sed -n 2p)\"; "
        '[ -n "$r" ] && df -Pk -- "$r" 2>/dev/null | awk \'NR==2{print "root_avail_kb="$4}\'; '
        f'p={q(remote_tmp)}; while [ ! -d "$p" ]; do p=$(dirname -- "$p"); done; '
        'df -Pk -- "$p" 2>/dev/null | awk \'NR==2{print "tmp_avail_kb="$4}\'; '
        f'for t in {tools}; do command -v "$t" >/dev/null 2>&1 && echo "has_$t=1"; done; '
        f"{ARCH_LINE}; true"
    )


def probe(docker: Sequence[str], remote_tmp: str) -> str:
    """`probe_script` of a docker host (its client argv `docker`)."""
    return probe_script(DOCKER, docker, remote_tmp)


# the host's machine (issue 18, item 3: platforms): the kernel's name, normalised by
# distrib.platforms (x86_64 -> amd64); the same line in every engine's probe
ARCH_LINE = "printf 'arch=%s\\n' \"$(uname -m 2>/dev/null)\""


@dataclass(frozen=True)
class Facts:
    engine_version: str
    tools: frozenset[str]
    docker_root: str = ""
    root_avail: int | None = None  # bytes free in the engine's data root (None: unknown)
    tmp_avail: int | None = None  # bytes free where archives are staged (None: unknown)
    engine: str = "docker"  # docker | podman | containerd (distrib.engines)
    store: str = ""  # docker's image store: containerd | classic ("" when not docker, unknown)
    arch: str = ""  # `uname -m` ("" when the probe did not say)

    @property
    def engine_ok(self) -> bool:
        return bool(self.engine_version)

    @property
    def label(self) -> str:
        """`docker 28.5.2, containerd store`, `docker 20.10.24`, `podman 4.3.1`: what each
        host's outcome line names (the classic store, docker's long-time default, is not)."""
        text = f"{self.engine} {self.engine_version}".strip()
        return f"{text}, containerd store" if self.store == CONTAINERD_STORE else text

    def has(self, tool: str) -> bool:
        return tool in self.tools

    @property
    def engine_major(self) -> int:
        head = self.engine_version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    def engine_reads(self, codec: str) -> bool:
        """Whether `docker load` reads `codec` itself (zstd: docker 23 and newer; DESIGN.md:
        20.10 does not). podman reads plain and zstd, containerd plain only (engines.py)."""
        if self.engine != DOCKER:
            return engine_reads(self.engine, codec, False)
        if codec == "zstd":
            return self.engine_major >= 23
        return True

    def can_decode(self, codec: str) -> bool:
        """Whether this host can load a `codec` archive at all (itself, or through a tool)."""
        return self.engine_reads(codec) or self.has(codec if codec != "gzip" else "gzip")


def parse_probe(stdout: str) -> Facts:
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    tools = frozenset(k[4:] for k, v in values.items() if k.startswith("has_") and v == "1")

    def kib(key: str) -> int | None:
        value = values.get(key, "")
        return int(value) * 1024 if value.isdigit() else None

    return Facts(
        values.get("engine_version", ""),
        tools,
        values.get("docker_root", ""),
        kib("root_avail_kb"),
        kib("tmp_avail_kb"),
        values.get("engine") or "docker",
        docker_store(values.get("docker_driver", "")),
        values.get("arch", ""),
    )


def docker_store(driver: str) -> str:
    """The image store from `{{.Driver}} {{json .DriverStatus}}` ("" when not answered)."""
    if not driver.strip():
        return ""
    return CONTAINERD_STORE if "io.containerd.snapshotter" in driver else CLASSIC_STORE


# --- codecs: THE table of what each engine reads itself, and the tools that unpack the rest -

# Codecs each engine's load reads itself (docker: Facts.engine_reads, by version).
NATIVE_CODECS: dict[str, frozenset[str]] = {
    PODMAN: frozenset({"none", "zstd"}),
    CONTAINERD: frozenset({"none"}),
}
DECOMPRESSORS: dict[str, tuple[tuple[str, ...], ...]] = {
    # codec -> candidate argv, best first (the tool must be on the host)
    "gzip": (("pigz", "-dc"), ("gzip", "-dc")),
    "zstd": (("zstd", "-dc"),),
    "xz": (("xz", "-dc"),),
}


def engine_reads(kind: str, codec: str, docker_reads: bool) -> bool:
    """Whether the engine's load reads `codec` itself (`docker_reads`: docker's own answer)."""
    if kind == DOCKER:
        return docker_reads
    return codec in NATIVE_CODECS[kind]


def decompressor(codec: str, tools: Iterable[str]) -> list[str] | None:
    """argv that decompresses `codec` on the host with a tool it has (None: none there)."""
    have = set(tools)
    for argv in DECOMPRESSORS.get(codec, ()):
        if argv[0] in have:
            return list(argv)
    return None
