"""Remote commands of the workflows (issue 7): commit, backup (save streams), registry push
and pull. Pure: command builders and their parsers, every argument quoted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from distrib.imageinfo import INSPECT_FORMAT
from distrib.refs import ImageRef
from distrib.shell import STAGING_PREFIX, join, q

# --- workflows (issue 7): commit, backup, registry push and pull --------------------------------
#
# Container names follow docker's grammar and image references ImageRef's; both are validated
# before anything connects and quoted here all the same.

STATUS_MARK = "distrib-status"  # `distrib-status STAGE CODE` on stderr: a pipeline stage failed


def container_inspect(docker: Sequence[str], containers: Iterable[str]) -> str:
    """For each container one line `name<TAB>id<TAB>image`, or `name<TAB>-` when the host
    has no such container. Read-only."""
    inspect = join([*docker, "container", "inspect", "--format", "{{.Id}}\t{{.Config.Image}}"])
    return "; ".join(
        f"printf '%s\\t' {q(c)}; {inspect} -- {q(c)} 2>/dev/null || echo -" for c in containers
    )


def parse_container_inspect(stdout: str) -> dict[str, tuple[str, str] | None]:
    """`name -> (container id, image it runs)` from `container_inspect`; None when absent."""
    out: dict[str, tuple[str, str] | None] = {}
    for line in stdout.splitlines():
        name, sep, rest = line.partition("\t")
        if not sep:
            continue
        cid, sep, image = rest.partition("\t")
        out[name] = (cid.strip(), image.strip()) if sep and cid.strip() else None
    return out


def commit_argv(
    docker: Sequence[str],
    container: str,
    ref: ImageRef,
    message: str | None = None,
    author: str | None = None,
) -> list[str]:
    """`docker commit` of `container` into `ref` (the container is paused meanwhile: a
    consistent snapshot). An argv: the workstation runs it as is, a host through `join`."""
    argv = [*docker, "commit"]
    if message is not None:
        argv += ["--message", message]
    if author is not None:
        argv += ["--author", author]
    return [*argv, "--", container, str(ref)]


def parse_commit(stdout: str) -> str:
    """The new image's ID from `docker commit` output (`sha256:...`)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.strip().startswith("sha256:"):
            return line.strip()
    raise ValueError(f"unexpected docker commit output {stdout!r}")


def inspect_image(docker: Sequence[str], ref: ImageRef | str) -> str:
    """One line in INSPECT_FORMAT (id, diffIDs, size) for `ref`; see parse_inspect_line."""
    return join([*docker, "image", "inspect", "--format", INSPECT_FORMAT, "--", str(ref)])


def host_compressor(codec: str, level: int, tools: Iterable[str]) -> list[str]:
    """The compressing command on a host: pigz when present (all cores), else gzip; zstd -T0.

    ValueError when the host lacks the tool for `codec`."""
    have = set(tools)
    if codec == "gzip":
        return ["pigz" if "pigz" in have else "gzip", f"-{int(level)}", "-c"]
    if codec == "zstd":
        if "zstd" not in have:
            raise ValueError("the host has no zstd")
        return ["zstd", f"-{int(level)}", "-T0", "-q", "-c"]
    raise ValueError(f"unsupported codec {codec!r}")


def save_stream(
    docker: Sequence[str], refs: Sequence[ImageRef | str], compress: Sequence[str]
) -> str:
    """`docker save | compress` to stdout; the sha256 of exactly the bytes sent goes to stderr.

    `tee` hands the compressed stream both to stdout (fd 4, the SSH channel) and to
    sha256sum, so the host hashes what it sends with no temp file and no second pass. A
    POSIX shell has no pipefail: each stage reports its own failure on stderr
    (`distrib-status STAGE CODE`), read by `parse_save_stream`.
    """
    save = join([*docker, "save", "--", *map(str, refs)])
    mark = f"echo {STATUS_MARK}"
    return (
        f"{{ {{ {save} || {mark} save $? >&2; }} | "
        f"{{ {join(compress)} || {mark} compress $? >&2; }} | "
        f"{{ tee /dev/fd/4 || {mark} send $? >&2; }} | sha256sum >&2; }} 4>&1"
    )


@dataclass(frozen=True)
class StreamReport:
    sha256: str | None  # what the host hashed (None: no hash line)
    failed: dict[str, int]  # stage -> exit code, for the stages that failed
    messages: str  # the remaining stderr (docker's own error text)

    @property
    def ok(self) -> bool:
        return not self.failed and self.sha256 is not None


def parse_save_stream(stderr: str) -> StreamReport:
    """Split the stderr of `save_stream` into the host's sha256, failed stages and messages."""
    digest = None
    failed: dict[str, int] = {}
    rest = []
    for line in stderr.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == STATUS_MARK and words[2].isdigit():
            failed[words[1]] = int(words[2])
        elif (
            len(words) == 2
            and words[1] == "-"
            and len(words[0]) == 64
            and all(c in "0123456789abcdef" for c in words[0])
        ):
            digest = words[0]
        elif line.strip():
            rest.append(line)
    return StreamReport(digest, failed, "\n".join(rest))


def remove_images(docker: Sequence[str], refs: Iterable[ImageRef | str]) -> str:
    """Untag (and delete when no other tag holds it) each ref; never forced."""
    return join([*docker, "rmi", "--", *map(str, refs)])


def tag(docker: Sequence[str], source: ImageRef | str, target: ImageRef | str) -> str:
    return join([*docker, "tag", str(source), str(target)])


def registry_probe(docker: Sequence[str], registry_host: str) -> str:
    """The engine's registry settings and the registry host's IPv4 addresses as the host
    resolves them (docker decides "insecure" by IP for names not configured explicitly)."""
    info = join([*docker, "info", "--format", "{{json .RegistryConfig}}"])
    return (
        f"printf 'config='; {info}; printf 'addresses='; "
        f"getent ahostsv4 {q(registry_host)} 2>/dev/null | awk '{{print $1}}' | sort -u | "
        "tr '\\n' ' '; echo"
    )


@dataclass(frozen=True)
class RegistrySettings:
    insecure_cidrs: tuple[str, ...]
    secure_by_name: dict[str, bool]  # IndexConfigs: registry name -> Secure
    addresses: tuple[str, ...]  # what the host resolves the registry's host name to


def parse_registry_probe(stdout: str) -> RegistrySettings:
    config: dict[str, object] = {}
    addresses: tuple[str, ...] = ()
    for line in stdout.splitlines():
        if line.startswith("config="):
            try:
                parsed = json.loads(line[len("config=") :])
            except ValueError:
                parsed = None
            config = parsed if isinstance(parsed, dict) else {}
        elif line.startswith("addresses="):
            addresses = tuple(line[len("addresses=") :].split())
    cidrs = config.get("InsecureRegistryCIDRs") or []
    index = config.get("IndexConfigs") or {}
    secure = {
        str(name): bool(value.get("Secure", True))
        for name, value in (index.items() if isinstance(index, dict) else [])
        if isinstance(value, dict)
    }
    return RegistrySettings(
        tuple(str(c) for c in cidrs if isinstance(c, str)) if isinstance(cidrs, list) else (),
        secure,
        addresses,
    )


def docker_allows_plain_http(registry: str, settings: RegistrySettings) -> bool:
    """Whether the engine treats `registry` (host[:port]) as insecure, as docker decides it
    (registry/config.go isSecureIndex): an explicit index config wins, else whether the host
    (an IP literal, or the addresses it resolves to) is in an insecure CIDR."""
    import ipaddress

    if registry in settings.secure_by_name:
        return not settings.secure_by_name[registry]
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    host = host.strip("[]")
    try:
        candidates = [ipaddress.ip_address(host)]
    except ValueError:
        candidates = []
        for text in settings.addresses:
            try:
                candidates.append(ipaddress.ip_address(text))
            except ValueError:
                continue
    for cidr in settings.insecure_cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if any(ip.version == network.version and ip in network for ip in candidates):
            return True
    return False


def registry_session(
    docker: Sequence[str],
    registry: str,
    remote_tmp: str,
    steps: Sequence[Sequence[str]],
    username: str | None = None,
) -> str:
    """Run docker `steps` (argv tails after `docker`, e.g. ["push", ref]) against a registry.

    With `username`, a `docker login --password-stdin` first, into a private client config
    dir (`docker --config DIR`): the password comes on stdin, never in argv, and the user's
    own ~/.docker/config.json is never touched. The dir is removed by a trap when the shell
    exits, whatever happened (also on a hang-up), so no credential stays on the host.
    """
    base = join(docker)
    if username is None:
        return " && ".join(f"{base} {join(step)}" for step in steps)
    template = f"{remote_tmp.rstrip('/')}/{STAGING_PREFIX}login-XXXXXX"
    cfg = f'{base} --config "$d"'
    login = f"{cfg} login --username {q(username)} --password-stdin {q(registry)} >/dev/null"
    body = " && ".join([login, *(f"{cfg} {join(step)}" for step in steps)])
    return (
        f"umask 077 && d=$(mktemp -d -- {q(template)}) || exit 1; "
        "trap 'rm -rf -- \"$d\"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; "
        f"trap 'exit 143' TERM; {body}"
    )


def parse_push(stdout: str) -> list[str]:
    """The manifest digest of each push, in push order, from `docker push` output
    (`1.0: digest: sha256:.. size: N`; the line names only the tag, so order is what maps a
    digest to its image)."""
    out: list[str] = []
    for line in stdout.splitlines():
        _, sep, rest = line.partition(": digest: ")
        if sep and rest.split():
            out.append(rest.split()[0])
    return out
