"""The workflow steps' engine commands, per engine kind (issue 15 item 2): pure builders and
their parsers, side by side. Nothing here runs anything; every argument is shell-quoted.

Which step runs on which engine (`refusal` says why not, in one line):

| step                      | docker | podman 5                 | containerd 2 (ctr)          |
|---------------------------|--------|--------------------------|-----------------------------|
| commit                    | yes    | yes (`--format docker`)  | refused: ctr has no commit  |
| backup (commit + save)    | yes    | yes                      | refused: ctr has no commit  |
| playbook commit step      | yes    | yes                      | refused: ctr has no commit  |
| restore                   | yes    | yes (the deploy path)    | yes (ctr images import)     |
| registry push / pull, tag | yes    | yes (`--tls-verify=false`| yes (`--plain-http` when    |
|                           |        | when insecure)           | insecure), no credentials   |

Every command runs as the engine user: the caller wraps it (engines.Engine.wrap: become).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from distrib import commands, engines
from distrib.commands import join, q
from distrib.engines import CONTAINERD, DOCKER, PODMAN, Engine
from distrib.refs import ImageRef

COMMIT, BACKUP, COMMIT_STEP, PUSH, PULL = "commit", "backup", "commit step", "push", "pull"
NO_COMMIT = "ctr has no commit (containerd keeps no container-to-image snapshot command)"
# ctr reads registry credentials only from its argv (`--user USER:PASSWORD`), where any user of
# the host can read them (ps, /proc): distrib never puts a secret there
NO_CREDENTIALS = (
    "ctr takes registry credentials only on its command line (--user USER:PASSWORD), where "
    "every user of the host could read them; distrib keeps secrets out of argv"
)
REFUSED: dict[tuple[str, str], str] = {
    (CONTAINERD, COMMIT): NO_COMMIT,
    (CONTAINERD, BACKUP): NO_COMMIT,
    (CONTAINERD, COMMIT_STEP): NO_COMMIT,
}
PODMAN_COMMIT_ID = "sha256:"


def refusal(kind: str, step: str, credentials: bool = False) -> str | None:
    """Why `step` cannot run on a `kind` host, in one line (None: it can)."""
    why = REFUSED.get((kind, step))
    if why is None and credentials and kind == CONTAINERD and step in (PUSH, PULL):
        why = NO_CREDENTIALS
    if why is None:
        return None
    return f"{step} is not supported on {kind} hosts: {why}; nothing was done"


# --- names -------------------------------------------------------------------------------------


def local_name(kind: str, ref: ImageRef) -> str:
    """The name the engine shows `ref` under (podman `localhost/NAME`, containerd
    `docker.io/...`): what commit creates and tag / save / push start from."""
    return str(ref) if kind == DOCKER else engines.stored_name(kind, ref)


def engine_argv(engine: Engine) -> list[str]:
    """The client argv of the engine's image commands (ctr with its namespace)."""
    return engine.ctr if engine.kind == CONTAINERD else list(engine.argv)


# --- containers and commit (docker, podman) ---------------------------------------------------


def container_inspect(engine: Engine, names: Iterable[str]) -> str:
    """commands.container_inspect's output for either engine (podman names the image
    `.ImageName`)."""
    if engine.kind == DOCKER:
        return commands.container_inspect(list(engine.argv), names)
    fmt = "{{.Id}}\t{{.ImageName}}"
    inspect = join([*engine.argv, "container", "inspect", "--format", fmt])
    return "; ".join(
        f"printf '%s\\t' {q(c)}; {inspect} -- {q(c)} 2>/dev/null || echo -" for c in names
    )


def commit(
    engine: Engine, container: str, ref: ImageRef, message: str | None, author: str | None
) -> str:
    """Commit `container` as `ref` (docker: commands.commit_argv; podman: in docker format,
    which keeps the message, quietly: it prints the new image's ID only)."""
    if engine.kind == DOCKER:
        return join(commands.commit_argv(list(engine.argv), container, ref, message, author))
    argv = [*engine.argv, "commit", "--quiet", "--format", "docker"]
    if message is not None:
        argv += ["--message", message]
    if author is not None:
        argv += ["--author", author]
    return join([*argv, "--", container, local_name(engine.kind, ref)])


def parse_commit(kind: str, stdout: str) -> str:
    """The committed image's ID as `sha256:HEX` (podman prints bare hex)."""
    if kind == DOCKER:
        return commands.parse_commit(stdout)
    for line in reversed(stdout.strip().splitlines()):
        word = line.strip()
        if len(word) == 64 and all(c in "0123456789abcdef" for c in word):
            return PODMAN_COMMIT_ID + word
    raise ValueError(f"unexpected {kind} commit output {stdout!r}")


def save_stream(engine: Engine, ref: ImageRef, compress: Sequence[str]) -> str:
    """commands.save_stream of the image the engine holds as `ref` (a docker-archive)."""
    return commands.save_stream(list(engine.argv), [local_name(engine.kind, ref)], compress)


def remove_image(engine: Engine, ref: ImageRef) -> str:
    return commands.remove_images(list(engine.argv), [local_name(engine.kind, ref)])


# --- registry ----------------------------------------------------------------------------------


def tag(engine: Engine, source: str, target: str) -> str:
    if engine.kind == CONTAINERD:  # ctr refuses an existing target without --force
        return join([*engine.ctr, "images", "tag", "--force", source, target])
    return join([*engine.argv, "tag", source, target])


def pin(engine: Engine, names: Sequence[str]) -> list[str]:
    """containerd: the deploy path's pin label on each name (the kubelet's GC keeps them)."""
    if engine.kind != CONTAINERD:
        return []
    label = join([*engine.ctr, "images", "label"])
    return [f"{label} {q(n)} {q(engines.PINNED)} >/dev/null" for n in names]


def transfer(engine: Engine, verb: str, name: str, insecure: bool, auth: bool = False) -> str:
    """`push` or `pull` of `name` (podman: `--tls-verify=false` for a plain-HTTP registry, the
    private authfile with `auth`; ctr: `--plain-http`)."""
    if engine.kind == CONTAINERD:  # its progress table goes on and on: errors are on stderr
        flags = ["--plain-http"] if insecure else []
        return join([*engine.ctr, "images", verb, *flags, name]) + " >/dev/null"
    if engine.kind == PODMAN:
        flags = ["--tls-verify=false"] if insecure else []
        authfile = ' --authfile "$d/auth.json"' if auth else ""
        return f"{join([*engine.argv, verb])}{authfile} {join([*flags, name])}"
    return join([*engine.argv, verb, name])


def push_commands(
    engine: Engine, pairs: Sequence[tuple[ImageRef, ImageRef]], insecure: bool, auth: bool
) -> list[str]:
    """Tag each shipped image with its registry name, then push each registry name."""
    out = [tag(engine, local_name(engine.kind, i), str(r)) for i, r in pairs]
    return out + [transfer(engine, "push", str(r), insecure, auth) for _, r in pairs]


def pull_commands(
    engine: Engine, pairs: Sequence[tuple[ImageRef, ImageRef]], insecure: bool, auth: bool
) -> list[str]:
    """Pull each registry name, tag it with the play's name (pinned on containerd)."""
    out = [transfer(engine, "pull", str(r), insecure, auth) for _, r in pairs]
    out += [tag(engine, str(r), local_name(engine.kind, i)) for i, r in pairs]
    return out + pin(engine, [n for i, r in pairs for n in (str(r), local_name(engine.kind, i))])


def registry_session(
    engine: Engine,
    registry: str,
    remote_tmp: str,
    steps: Sequence[str],
    insecure: bool,
    username: str | None,
) -> str:
    """podman / containerd `steps` (shell commands) against a registry, in order. With
    `username` (podman only), a `podman login --password-stdin` into a private authfile
    first, removed by a trap whatever happens (commands.registry_session for docker)."""
    if username is None:
        return " && ".join(steps)
    if engine.kind != PODMAN:
        raise ValueError(NO_CREDENTIALS)
    template = f"{remote_tmp.rstrip('/')}/{commands.STAGING_PREFIX}login-XXXXXX"
    flags = ["--tls-verify=false"] if insecure else []
    login = (
        f'{join([*engine.argv, "login"])} --authfile "$d/auth.json" '
        f"{join([*flags, '--username', username, '--password-stdin', registry])} >/dev/null"
    )
    return (
        f"umask 077 && d=$(mktemp -d -- {q(template)}) || exit 1; "
        "trap 'rm -rf -- \"$d\"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; "
        f"trap 'exit 143' TERM; {' && '.join([login, *steps])}"
    )
