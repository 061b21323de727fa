"""Remote commands of the relay fan-out (issue 9): hosts forward the stream to each other
over SSH through one-time authorized_keys entries. Pure: builders and parsers, POSIX sh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from distrib.shell import join, q

# --- relay fan-out (issue 9): hosts forward the stream to each other over SSH -------------------
#
# A relaying host runs `relay_receive`: `tee` writes its own `.part` and, through one fifo per
# child, feeds `ssh child` processes, so every level forwards while it is still receiving. The
# child end is a forced command in an authorized_keys entry made for the run (a one-time key,
# restricted to the parent's address), removed afterwards. Everything here is POSIX sh.

RELAY_MARK = "distrib-relay:"  # + run id: the comment of every authorized_keys entry we add
RELAY_KEY = "relay.key"
RELAY_KNOWN_HOSTS = "relay.known_hosts"
RELAY_TOOLS = ("ssh", "mkfifo", "tee", "tail", "sha256sum")


def relay_probe(remote_tmp: str) -> str:
    """Read-only: the address the workstation reached (sshd's SSH_CONNECTION), the login user,
    the relay tools present (GNU `tee -p`: keep writing when one child's pipe breaks) and the
    free space where archives are staged."""
    tools = " ".join(RELAY_TOOLS)
    return (
        "set -- $SSH_CONNECTION; printf 'address=%s\\n' \"$3\"; "
        "printf 'user=%s\\n' \"$(id -un)\"; "
        f'for t in {tools}; do command -v "$t" >/dev/null 2>&1 && echo "has_$t=1"; done; '
        "tee -p </dev/null >/dev/null 2>&1 && echo tee_p=1; "
        f'p={q(remote_tmp)}; while [ ! -d "$p" ]; do p=$(dirname -- "$p"); done; '
        'df -Pk -- "$p" 2>/dev/null | awk \'NR==2{print "tmp_avail_kb="$4}\'; true'
    )


@dataclass(frozen=True)
class RelayFacts:
    address: str  # this host's address as the workstation reached it (for from=)
    user: str
    tools: frozenset[str]
    tmp_avail: int | None = None

    @property
    def can_receive(self) -> bool:
        return "sha256sum" in self.tools

    @property
    def can_relay(self) -> bool:
        return self.can_receive and {"ssh", "mkfifo", "tee_p", "tail"} <= self.tools


def parse_relay_probe(stdout: str) -> RelayFacts:
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    tools = {k[4:] for k, v in values.items() if k.startswith("has_") and v == "1"}
    if values.get("tee_p") == "1":
        tools.add("tee_p")
    kb = values.get("tmp_avail_kb", "")
    return RelayFacts(
        values.get("address", ""),
        values.get("user", ""),
        frozenset(tools),
        int(kb) * 1024 if kb.isdigit() else None,
    )


def relay_ssh(
    address: str,
    port: int,
    user: str,
    key: str,
    known_hosts: str,
    connect_timeout: float = 10.0,
) -> list[str]:
    """The argv a relaying host uses to reach a child: only the run's key, only the child
    keys the workstation trusts (StrictHostKeyChecking=yes against the handed-over file), no
    user config, no agent, no forwarding; a dead child is given up after ~15 s."""
    for path in (key, known_hosts):
        if any(c.isspace() or c in "\"'\\%" for c in path):
            raise ValueError(f"unusable path for ssh -o: {path!r}")
    return [
        "ssh", "-F", "/dev/null", "-T", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i", key,
        "-o", "ForwardAgent=no", "-o", "ClearAllForwardings=yes",
        "-o", f"ConnectTimeout={max(1, int(connect_timeout))}",
        "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
        "-p", str(int(port)), "-l", user, "--", address, "distrib-relay",
    ]  # fmt: skip


def relay_receive(directory: str, part: str, children: Sequence[Sequence[str]]) -> str:
    """Receive the stream on stdin into `part` (truncated) and forward it, while receiving, to
    each child through a fifo and `children[i]` (an ssh argv). Markers in `directory`:
    relay.pid (this shell: its process group is the whole pipeline), relay.received (tee's exit
    status, written as soon as this host's own copy ended), relay.status.N (child N's ssh exit
    status). Exits with tee's status once every child is done."""
    fifos = [f"relay.fifo.{i}" for i in range(1, len(children) + 1)]
    # pid first, then the closed flag (relay_stop sets the flag, then reads the pid): a
    # receiver that starts late, after the workstation gave up on it, never writes a byte
    steps = [f"umask 077 && cd -- {q(directory)} || exit 3", "echo $$ > relay.pid"]
    steps.append("[ ! -e relay.closed ] || { rm -f relay.pid; exit 4; }; : > relay.started")
    steps.append("rm -f relay.received relay.status.* " + " ".join(fifos))
    if children:
        steps.append(f"mkfifo {' '.join(fifos)} || exit 3")
        # The redirection blocks until tee opens the fifo (fifo rendezvous), so ssh starts
        # only once tee is there, and a child that dies later is a broken pipe tee -p skips.
        for i, argv in enumerate(children, 1):
            steps.append(f"{join(argv)} < relay.fifo.{i} > /dev/null 2> relay.err.{i} & p{i}=$!")
        steps.append(f"tee -p {' '.join(fifos)} > {q(part)}; s=$?")
        # if tee never opened a fifo, its reader is still blocked in open(): release it
        steps.extend(f"exec 3<> {f}; exec 3>&-" for f in fifos)
    else:
        steps.append(f"cat > {q(part)}; s=$?")
    steps.append("echo $s > relay.received.tmp && mv -f relay.received.tmp relay.received")
    for i in range(1, len(children) + 1):
        steps.append(f"wait $p{i}; echo $? > relay.status.{i}")
    steps.append("rm -f relay.pid " + " ".join(fifos))
    steps.append("exit $s")
    return "; ".join(steps)


def relay_append(directory: str, part: str) -> str:
    """The child end of a re-parented feed: append stdin to the partial copy (the workstation
    checked its prefix first)."""
    return f"umask 077 && cd -- {q(directory)} && cat >> {q(part)}"


def relay_send(path: str, offset: int, child: Sequence[str]) -> str:
    """On a host with a complete copy: send it from byte `offset` to a child."""
    return f"tail -c +{int(offset) + 1} -- {q(path)} | {join(child)}"


def relay_watch(directory: str, part: str, seconds: float = 5.0) -> str:
    """Wait (at most `seconds`) until this host's own copy ended; report how far it got."""
    d = q(directory)
    rounds = max(1, int(seconds / 0.2))
    return (
        f"i=0; while [ ! -e {d}/relay.received ] && [ $i -lt {rounds} ]; do sleep 0.2; "
        "i=$((i+1)); done; "
        f"[ -e {d}/relay.started ] && echo started=1; "
        f"printf 'received=%s\\n' \"$(cat {d}/relay.received 2>/dev/null)\"; "
        f"printf 'size=%s\\n' \"$(stat -c %s -- {q(part)} 2>/dev/null || echo 0)\""
    )


@dataclass(frozen=True)
class RelayWatch:
    started: bool  # the receiving command ran (the parent connected)
    received: int | None  # tee's exit status once this host's copy ended, else None
    size: int  # bytes in the partial copy


def parse_relay_watch(stdout: str) -> RelayWatch:
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    received = values.get("received", "")
    size = values.get("size", "")
    return RelayWatch(
        values.get("started") == "1",
        int(received) if received.isdigit() else None,
        int(size) if size.isdigit() else 0,
    )


def relay_stop(directory: str) -> str:
    """Close `directory` to receivers and stop a pipeline still running there (its whole
    process group: sshd starts the receiving shell as a session leader), waiting until it is
    gone so nothing writes after this returns."""
    d = q(directory)
    return (
        f"[ -d {d} ] || exit 0; : > {d}/relay.closed; p=$(cat {d}/relay.pid 2>/dev/null); "
        # only a process still working in our dir is ours (a stale pid may have been reused)
        f'r=$(cd -- {d} && pwd -P); case "$p" in ""|*[!0-9]*) ;; *) '
        '[ "$(readlink /proc/$p/cwd 2>/dev/null)" = "$r" ] || exit 0; '
        'kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; i=0; '
        'while { kill -0 -- "-$p" || kill -0 "$p"; } 2>/dev/null && [ $i -lt 50 ]; '
        "do sleep 0.1; i=$((i+1)); done;; esac; true"
    )


def relay_reset(directory: str, part: str) -> str:
    """Before a stream: no copy and no markers left from an earlier, interrupted run."""
    return f"cd -- {q(directory)} && rm -f -- {q(part)} relay.*"


def relay_install(directory: str, name: str) -> str:
    """Write stdin to `directory/name`, private (the run's key, the children's host keys:
    secrets go over the channel's stdin, never in argv)."""
    if "/" in name:
        raise ValueError(name)
    return f"umask 077 && cat > {q(directory + '/' + name)}"


def relay_options(parent_address: str, command: str) -> str:
    """authorized_keys options of a child entry: only from the parent, nothing but `command`.

    sshd unquotes only `\\"` inside an option value: a command carrying that sequence or a
    newline cannot be represented and is refused."""
    if "\n" in command or '\\"' in command or "\\" in command[-1:]:
        raise ValueError("command cannot be an authorized_keys option")
    if not parent_address or any(c in parent_address for c in '",\n \\'):
        raise ValueError(f"bad parent address {parent_address!r}")
    escaped = command.replace('"', '\\"')
    return f'from="{parent_address}",restrict,command="{escaped}"'


_AK = 'f="$HOME/.ssh/authorized_keys"'
# Drops the lines of run `run`, and those of any run whose expiry-time has passed (a crashed
# workstation's leftovers): the file is rewritten through a temp file and renamed over it
# (same mode and owner), so sshd never reads a half-written file.
_AK_FILTER = (
    "now=$(date -u +%Y%m%d%H%M); "
    'awk -v run="$run" -v now="$now" -v mark={mark} '
    "'{{ if (index($0, run)) next; "
    'if (index($0, mark) && match($0, /expiry-time="[0-9]+/)) '
    "{{ if (substr($0, RSTART + 13, 12) < now) next }} print }}'"
)


def _ak_rewrite(run: str) -> str:
    awk = _AK_FILTER.format(mark=q(" " + RELAY_MARK))
    return (
        f'run={q(RELAY_MARK + run)}; {_AK}; [ -f "$f" ] || exit 0; '
        'f=$(readlink -f -- "$f"); '
        f'if grep -q -F -- {q(RELAY_MARK)} "$f"; then '
        't=$(mktemp -- "$f.distrib-XXXXXX") || exit 1; '
        f'{awk} "$f" > "$t" && chmod --reference="$f" -- "$t" && '
        'chown --reference="$f" -- "$t" && mv -f -- "$t" "$f" || { rm -f -- "$t"; exit 1; }; fi'
    )


def relay_authorize(options: str, public_key: str, run: str, hours: int = 2) -> str:
    """Append the run's key to this host's authorized_keys with `options` and an expiry
    (`hours` from the host's own clock, UTC), after dropping this run's earlier entry."""
    if "\n" in options or "\n" in public_key or not run.isalnum():
        raise ValueError("bad authorized_keys entry")
    rest = f"{options} {public_key.strip()} {RELAY_MARK}{run}"
    return (
        f'umask 077 && mkdir -p -- "$HOME/.ssh" && ( {_ak_rewrite(run)} ) && {_AK} && '
        'f=$(readlink -f -- "$f"); '
        '{ [ ! -s "$f" ] || [ -z "$(tail -c 1 -- "$f")" ] || echo >> "$f"; } && '
        f"printf 'expiry-time=\"%s\",%s\\n' \"$(date -u -d '+{int(hours)} hours' +%Y%m%d%H%MZ)\" "
        f'{q(rest)} >> "$f"'
    )


def relay_sweep() -> str:
    """Remove every authorized_keys line any relay run added (run under the exclusive flock
    on ~/.ssh, so no live run's: see host_lock)."""
    return _ak_rewrite("")


def relay_unauthorize(run: str) -> str:
    """Remove every authorized_keys line of run `run` (and expired ones of earlier runs)."""
    if not run.isalnum():
        raise ValueError("bad run id")
    return _ak_rewrite(run)
