"""Getting the engines of the matrix (lab/engines.py) onto this machine, untouched by dpkg.

Per suite, under /var/cache/distrib-lab/engines/<suite>/:
  sources.list   one `deb` line: the system's own Debian archive URI, that suite, main
  lists/         apt's package lists of that suite only (private Dir::State::Lists)
  archives/      the downloaded .deb files (private Dir::Cache::Archives)
  root/          every .deb of the suite unpacked with `dpkg-deb -x` (binaries, libraries)
  manifest.json  package -> Debian version of what is unpacked in root/

Nothing is installed: the system's packages and apt state stay as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from distrib import local
from distrib.errors import LabError, LocalError
from distrib.lab import engines, procs

LISTS_MAX_AGE = 24 * 3600.0  # apt-get update of a suite at most once a day
MANIFEST = "manifest.json"

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def cache_dir() -> Path:
    """The engines cache ($DISTRIB_LAB_ENGINES_CACHE for tests, else /var/cache/...)."""
    return Path(os.environ.get("DISTRIB_LAB_ENGINES_CACHE") or engines.CACHE_DIR)


def suite_root(suite: str) -> Path:
    """Where a suite's packages are unpacked (its `usr/bin`, `usr/sbin`, ...)."""
    return cache_dir() / suite / "root"


def manifest(suite: str) -> dict[str, str]:
    """package -> version unpacked in the suite's root ({} when nothing is)."""
    try:
        data = json.loads((cache_dir() / suite / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _package_version(package: str) -> str | None:
    out = local.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", package], check=False)
    words = out.stdout.split()
    if out.ok and len(words) == 4 and words[:3] == ["install", "ok", "installed"]:
        return words[3]
    return None


def system_versions() -> dict[str, str | None]:
    """kind -> installed Debian version of its system package (None: not installed)."""
    return {k: _package_version(p) for k, p in engines.SYSTEM_PACKAGE.items()}


def system_suite() -> str:
    try:
        return engines.parse_os_release(Path("/etc/os-release").read_text())
    except OSError:
        return ""


def fetched_version(entry: engines.EngineSpec) -> str | None:
    """Version of `entry`'s main package if every package it needs is unpacked, else None."""
    have = manifest(entry.suite) if entry.suite else {}
    if not entry.suite or any(p not in have for p in entry.packages):
        return None
    if entry.loader and not Path(loader_wrapper(entry)).is_file():
        return None
    return have[entry.main_package]


def loader_dir(entry: engines.EngineSpec) -> Path:
    """Where the relinked binary of a `loader` engine and its helpers live."""
    return cache_dir() / entry.suite / entry.name


def loader_wrapper(entry: engines.EngineSpec) -> str:
    """The script a host sees as /usr/bin/<kind> for a `loader` engine (podman-5)."""
    return str(loader_dir(entry) / entry.kind)


def helpers_dir(entry: engines.EngineSpec) -> str:
    """podman's helper_binaries_dir for a `loader` engine: a netavark stub (never used to
    load images; podman 5 refuses to start without finding one)."""
    return str(loader_dir(entry) / "helpers")


def _relink(entry: engines.EngineSpec, echo: Echo) -> None:
    """Make a `loader` engine runnable: a copy of its binary whose ELF interpreter and RPATH
    are its suite's own loader and libraries (patchelf). Not `ld.so --library-path BINARY`:
    podman re-executes /proc/self/exe (storage-untar), which would then be ld.so itself and
    fail ("error while loading shared libraries: /")."""
    patchelf = local.which("patchelf")
    if patchelf is None:
        raise LabError(f"{entry.name} needs patchelf", hint="apt-get install patchelf")
    root = cache_dir() / entry.suite / "root"
    libs = root / engines.LIB_DIR
    out = loader_dir(entry)
    shutil.rmtree(out, ignore_errors=True)
    (out / "helpers").mkdir(parents=True)
    (out / "bin").mkdir()
    binary = out / "bin" / entry.kind  # its own name: `podman --version` prints argv[0]
    shutil.copy2(root / "usr" / "bin" / entry.kind, binary)
    # --force-rpath: DT_RPATH also serves the libraries' own dependencies (DT_RUNPATH not)
    local.run([patchelf, "--set-interpreter", str(libs / "ld-linux-x86-64.so.2"),
               "--force-rpath", "--set-rpath", str(libs), str(binary)],
              timeout=120, what=f"patchelf {entry.name}")  # fmt: skip
    stub = out / "helpers" / "netavark"
    stub.write_text("#!/bin/sh\necho 'netavark: not available in the distrib lab' >&2\nexit 1\n")
    wrapper = out / f"{entry.kind}.tmp"
    wrapper.write_text(engines.loader_wrapper_script(str(binary)))
    for path in (stub, wrapper):
        os.chmod(path, 0o755)
    check = local.run([str(wrapper), "--version"], check=False, timeout=60)
    if not check.ok:
        raise LabError(f"{entry.name} does not run here: {check.stderr.strip()[-300:]}")
    os.replace(wrapper, out / entry.kind)
    echo(f"{entry.name}: {check.stdout.strip()}")


def resolve(name: str) -> engines.Resolution:
    """Where engine `name` comes from on this machine now (system, cache, or why not)."""
    entry = engines.spec(name)
    return engines.resolve(name, system_versions(), system_suite(), fetched_version(entry))


def require(name: str) -> engines.Resolution:
    """resolve(name), or LabError with the reason it cannot run here."""
    res = resolve(name)
    if not res.available:
        raise LabError(f"engine {name} is not available: {res.reason}")
    return res


def archive_uri() -> str:
    """The Debian main archive this machine's apt uses (never a host name of our own)."""
    deb822: dict[str, str] = {}
    one_line: dict[str, str] = {}
    parts = Path("/etc/apt/sources.list.d")
    for path in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        with contextlib.suppress(OSError):
            deb822[str(path)] = path.read_text()
    lists = [Path("/etc/apt/sources.list")]
    lists += sorted(parts.glob("*.list")) if parts.is_dir() else []
    for path in lists:
        with contextlib.suppress(OSError):
            one_line[str(path)] = path.read_text()
    uris = engines.debian_archive_uris(deb822, one_line)
    if not uris:
        raise LabError(
            "no Debian main archive in /etc/apt/sources.list(.d): cannot fetch newer engines"
        )
    return uris[0]


def _apt(suite_dir: Path, args: Sequence[str], *, cwd: Path | None = None) -> local.Completed:
    # `apt-get download` writes into its working directory: `env -C` sets it (coreutils)
    argv = [
        *(["env", "-C", str(cwd)] if cwd else []),
        "apt-get", "-q",
        "-o", f"Dir::Etc::sourcelist={suite_dir / 'sources.list'}",
        "-o", "Dir::Etc::sourceparts=/nonexistent",
        "-o", f"Dir::State::Lists={suite_dir / 'lists'}",
        "-o", f"Dir::Cache::Archives={suite_dir / 'archives'}",
        # root-owned private dirs: the _apt sandbox user could not write there anyway
        "-o", "APT::Sandbox::User=root",
        *args,
    ]  # fmt: skip
    try:
        return local.run(argv, timeout=900, what=f"apt-get {args[0]} ({suite_dir.name})")
    except LocalError as exc:
        raise LabError(str(exc)) from None


def _lists_fresh(suite_dir: Path) -> bool:
    lists = [p for p in (suite_dir / "lists").glob("*Packages*") if p.is_file()]
    return bool(lists) and time.time() - min(p.stat().st_mtime for p in lists) < LISTS_MAX_AGE


def _deb_field(deb: Path, field: str) -> str:
    return local.run(["dpkg-deb", "-f", str(deb), field], timeout=60).stdout.strip()


def fetch_suite(suite: str, packages: Sequence[str], echo: Echo = _quiet) -> dict[str, str]:
    """Download and unpack `packages` of `suite` unless already unpacked; the manifest."""
    if suite not in engines.FETCHABLE_SUITES:
        raise LabError(f"suite {suite} is not fetched (only {', '.join(engines.FETCHABLE_SUITES)})")
    suite_dir = cache_dir() / suite
    with procs.flock(suite_dir / ".lock"):
        have = manifest(suite)
        wanted = [p for p in packages if p not in have]
        if not wanted:
            return have
        for sub in ("lists/partial", "archives/partial", "root"):
            (suite_dir / sub).mkdir(parents=True, exist_ok=True)
        (suite_dir / "sources.list").write_text(engines.sources_list(archive_uri(), suite))
        if not _lists_fresh(suite_dir):
            echo(f"apt-get update ({suite})")
            _apt(suite_dir, ["update"])
        echo(f"downloading from {suite}: {' '.join(wanted)}")
        archives = suite_dir / "archives"
        _apt(suite_dir, ["download", *wanted], cwd=archives)
        for package in wanted:
            debs = sorted(archives.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
            if not debs:
                raise LabError(f"apt-get download {package} ({suite}) left no .deb in {archives}")
            deb = debs[-1]
            local.run(["dpkg-deb", "-x", str(deb), str(suite_dir / "root")], timeout=300,
                      what=f"dpkg-deb -x {deb.name}")  # fmt: skip
            have[package] = _deb_field(deb, "Version")
        tmp = suite_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(have, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, suite_dir / MANIFEST)
        return have


def fetch(name: str, echo: Echo = _quiet) -> engines.Resolution:
    """Make engine `name` available (download it when it comes from a newer suite)."""
    entry = engines.spec(name)
    res = resolve(name)
    if res.available or not entry.suite or entry.suite not in engines.FETCHABLE_SUITES:
        return res
    if entry.suite == system_suite():
        return res  # the system's own suite: install it with apt, not here
    fetch_suite(entry.suite, entry.packages, echo)
    if entry.loader and not Path(loader_wrapper(entry)).is_file():
        with procs.flock(cache_dir() / entry.suite / ".lock"):
            _relink(entry, echo)
    return resolve(name)


def clear(suite: str) -> None:
    """Remove a suite's cache (tests and `engines fetch --refresh`)."""
    shutil.rmtree(cache_dir() / suite, ignore_errors=True)


# ---------------------------------------------------------------------------------- binaries


def _root_of(res: engines.Resolution) -> Path | None:
    return suite_root(res.spec.suite) if res.source == "cache" else None


def daemon_binary(res: engines.Resolution) -> str:
    """The daemon program of a resolved docker or containerd engine."""
    root = _root_of(res)
    name = "dockerd" if res.spec.kind == engines.DOCKER else "containerd"
    if root is None:
        return name
    return str(root / ("usr/sbin" if name == "dockerd" else "usr/bin") / name)


def daemon_env(res: engines.Resolution) -> dict[str, str] | None:
    """Environment of the daemon: a fetched engine's own containerd, shim, ctr and docker-init
    come first on PATH (dockerd starts the containerd it finds there); runc stays the
    system's (the suites' runc needs a newer glibc, and loading images never runs it)."""
    root = _root_of(res)
    if root is None:
        return None
    return {"PATH": f"{root}/usr/bin:{root}/usr/sbin:{os.environ.get('PATH', '')}"}


# The PATH sshd gives a session: a client anywhere on it may shadow the engine's own one (a
# hand-installed /usr/local/bin/docker 28.2 was seen here in front of docker.io's 20.10).
SESSION_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
CLIENTS = {engines.DOCKER: "docker", engines.PODMAN: "podman", engines.CONTAINERD: "ctr"}


def client_binary(res: engines.Resolution) -> str:
    """The engine's own command-line client (docker, podman wrapper or ctr), absolute: the
    system package's copy (/usr/bin) for a system engine, else the cached one."""
    name = CLIENTS[res.spec.kind]
    if res.source != "cache":
        return f"/usr/bin/{name}"
    if res.spec.loader:
        return loader_wrapper(res.spec)
    return str(suite_root(res.spec.suite) / "usr/bin" / name)


def client_binds(res: engines.Resolution) -> list[tuple[str, str]]:
    """(source, target) bind mounts inside a host so that its sessions run that engine's own
    client: over every copy of it on the session PATH. None for the plain system names."""
    if not res.spec.major:
        return []
    source = client_binary(res)
    seen: set[str] = set()
    binds = []
    for directory in SESSION_PATH:
        target = Path(directory) / CLIENTS[res.spec.kind]
        real = os.path.realpath(target)
        if target.is_file() and real not in seen and real != os.path.realpath(source):
            seen.add(real)
            binds.append((source, real))
    return binds
