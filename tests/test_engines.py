"""Pure tests of issue 6: engine command builders and parsers, become wrapping, ssh options,
ssh_config routes, and the planner's engine/become/ssh vars. Outputs are real ones captured on
Debian 12 (podman 4.3.1, containerd 1.6.20, sudo 1.9.13)."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import paramiko
import pytest

from distrib import commands, engines, sshargs, transport
from distrib.errors import ConfigError
from distrib.plan import host_plan
from distrib.playbook import Playbook
from distrib.refs import ImageRef
from distrib.target import Target

WEB_ID = "sha256:c9f873339caf60de14bf86600854ca71169db4e38006214431159dc2db4527eb"
WEB_MANIFEST = "sha256:322ee3ce25c8c1e3a86f5b2b993bac71f8450d8f84c4496d68d8f9f52ccb35a0"
LAYERS = (
    "sha256:4e3fe77f2002509dc15499ad900bcbcddd45b6f014f7d8778ba53d985a85173c",
    "sha256:f26dd591619a35109a4463d6017d69d90b59ad883efa26f046b62ee70bc7c9c2",
)


@pytest.mark.parametrize(
    ("kind", "ref", "stored"),
    [
        ("docker", "demo/web:1.0", "demo/web:1.0"),
        ("docker", "docker.io/library/nginx:1", "nginx:1"),
        ("podman", "demo/web:1.0", "localhost/demo/web:1.0"),
        ("podman", "bbx:1", "localhost/bbx:1"),
        ("podman", "registry.example:5000/team/app:2", "registry.example:5000/team/app:2"),
        ("podman", "localhost/x:1", "localhost/x:1"),
        ("containerd", "demo/web:1.0", "docker.io/demo/web:1.0"),
        ("containerd", "bbx:1", "docker.io/library/bbx:1"),
        ("containerd", "docker.io/library/nginx:1", "docker.io/library/nginx:1"),
        ("containerd", "registry.example/app", "registry.example/app:latest"),
    ],
)
def test_stored_name(kind: str, ref: str, stored: str) -> None:
    assert engines.stored_name(kind, ImageRef.parse(ref)) == stored


@pytest.mark.parametrize(
    ("kind", "codec", "docker_reads", "reads"),
    [
        ("docker", "gzip", True, True),
        ("docker", "zstd", False, False),
        ("podman", "gzip", True, False),
        ("podman", "zstd", False, True),
        ("podman", "none", False, True),
        ("podman", "xz", True, False),
        ("containerd", "none", False, True),
        ("containerd", "gzip", True, False),
        ("containerd", "zstd", True, False),
    ],
)
def test_engine_reads(kind: str, codec: str, docker_reads: bool, reads: bool) -> None:
    assert engines.engine_reads(kind, codec, docker_reads) is reads


@pytest.mark.parametrize(
    ("engine", "codec", "reads"),
    [("docker", "zstd", False), ("podman", "gzip", False), ("podman", "zstd", True),
     ("containerd", "gzip", False), ("containerd", "none", True)],
)  # fmt: skip
def test_facts_know_their_engine(engine: str, codec: str, reads: bool) -> None:
    facts = commands.parse_probe(f"engine={engine}\nengine_version=4.3.1\nhas_gzip=1\n")
    assert facts.engine == engine and facts.engine_reads(codec) is reads
    assert commands.parse_probe("engine_version=20.10.24\n").engine == "docker"


@pytest.mark.parametrize(
    ("codec", "tools", "argv"),
    [
        ("gzip", {"gzip"}, ["gzip", "-dc"]),
        ("gzip", {"gzip", "pigz"}, ["pigz", "-dc"]),
        ("zstd", {"zstd"}, ["zstd", "-dc"]),
        ("xz", {"gzip"}, None),
        ("none", {"gzip"}, None),
    ],
)
def test_decompressor(codec: str, tools: set[str], argv: list[str] | None) -> None:
    assert engines.decompressor(codec, tools) == argv


PW = engines.Become("root")


# podman's load then tags what it named docker.io/ also localhost/ (engines._podman_named)
PODMAN_NAMED = (
    "out=$({load}) || {{ s=$?; printf '%s\\n' \"$out\" >&2; exit $s; }}; "
    "printf '%s\\n' \"$out\"; printf '%s\\n' \"$out\" | sed -n 's/^Loaded image[^:]*: *//p' | "
    "tr ',' '\\n' | while IFS= read -r n; do n=${{n# }}; case \"$n\" in docker.io/*) "
    'f=${{n#docker.io/}}; f=${{f#library/}}; podman tag "$n" "localhost/$f" || exit 1;; '
    "esac; done"
)

# issue 18: every containerd import is pinned (io.cri-containerd.pinned=pinned) for the kubelet
CTR_PINNED = (
    "out=$({load}) || {{ s=$?; printf '%s\\n' \"$out\" >&2; exit $s; }}; "
    "printf '%s\\n' \"$out\"; printf '%s\\n' \"$out\" | "
    "sed -n -e 's/^unpacking \\([^ ]*\\) (.*/\\1/p' "
    "-e 's/^\\([^[:space:]]*\\)[[:space:]]*saved[[:space:]]*$/\\1/p' | while IFS= read -r n; do "
    '{ctr} images label "$n" io.cri-containerd.pinned=pinned >/dev/null || exit 1; done'
)


@pytest.mark.parametrize(
    ("engine", "native", "codec", "expected"),
    [
        (engines.Engine(), True, "gzip", "docker load -i /s/a.tgz"),
        (engines.Engine(), False, "zstd", "zstd -dc -- /s/a.tgz | docker load"),
        (engines.Engine("podman", ("podman",)), False, "gzip",
         f"gzip -dc -- /s/a.tgz | {{ {PODMAN_NAMED.format(load='podman load')}; }}"),
        (engines.Engine("podman", ("podman",)), True, "zstd",
         PODMAN_NAMED.format(load="podman load -i /s/a.tgz")),
        (engines.Engine("containerd", ("ctr",)), True, "none",
         CTR_PINNED.format(load="ctr -n k8s.io images import -- /s/a.tgz", ctr="ctr -n k8s.io")),
        (engines.Engine("containerd", ("ctr", "-a", "/s.sock"), "ns1"), False, "gzip",
         "gzip -dc -- /s/a.tgz | { "
         + CTR_PINNED.format(load="ctr -a /s.sock -n ns1 images import -",
                             ctr="ctr -a /s.sock -n ns1")
         + "; }"),
        (engines.Engine(become=PW), True, "gzip",
         "cat -- /s/a.tgz | sudo -n -u root -- /bin/sh -c 'docker load'"),
        (engines.Engine(become=PW, password=True), True, "gzip",
         "{ cat; cat -- /s/a.tgz; } | sudo -k -S -p '' -u root -- /bin/sh -c 'docker load'"),
        (engines.Engine("containerd", ("ctr",), become=PW, password=True), False, "zstd",
         "{ cat; zstd -dc -- /s/a.tgz; } | sudo -k -S -p '' -u root -- /bin/sh -c "
         + shlex.quote(CTR_PINNED.format(load="ctr -n k8s.io images import -",
                                         ctr="ctr -n k8s.io"))),
    ],
)  # fmt: skip
def test_load_commands(engine: engines.Engine, native: bool, codec: str, expected: str) -> None:
    assert engine.load("/s/a.tgz", codec, native, {"gzip", "zstd"}) == expected


@pytest.mark.parametrize(
    ("engine", "native", "codec", "expected"),
    [
        (engines.Engine(), True, "gzip", "docker load"),
        (engines.Engine("podman", ("podman",)), False, "gzip",
         f"gzip -dc | {{ {PODMAN_NAMED.format(load='podman load')}; }}"),
        (engines.Engine(become=engines.Become("svc")), False, "zstd",
         "sudo -n -u svc -- /bin/sh -c 'zstd -dc | docker load'"),
        (engines.Engine(become=PW, password=True), True, "gzip",
         "sudo -k -S -p '' -u root -- /bin/sh -c 'docker load'"),
    ],
)  # fmt: skip
def test_stream_load_commands(
    engine: engines.Engine, native: bool, codec: str, expected: str
) -> None:
    assert engine.stream_load(codec, native, {"gzip", "zstd"}) == expected


def test_missing_decompressor_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match="containerd cannot read a xz archive and the host has no xz"
    ):
        engines.Engine("containerd", ("ctr",)).load("/f", "xz", False, {"gzip"})


@pytest.mark.parametrize(
    ("stdout", "state"),
    [
        ("become=nopasswd\n", engines.NOPASSWD),
        ("become=nosudo\n", engines.NO_SUDO),
        ("become=sudo: a password is required\n", engines.NEEDS_PASSWORD),
        ("become=sudo: user x is not in the sudoers file.\n", engines.DENIED),
        ("", engines.DENIED),
    ],
)
def test_parse_become_check(stdout: str, state: str) -> None:
    assert engines.parse_become_check(stdout)[0] == state


@pytest.mark.parametrize(
    ("stderr", "rejected"),
    [
        (
            "Sorry, try again.\nsudo: no password was provided\nsudo: 1 incorrect password attempt\n",
            True,
        ),
        ("sudo: 2 incorrect password attempts\n", True),
        ("bob is not in the sudoers file.  This incident will be reported.\n", False),
    ],
)
def test_password_rejected(stderr: str, rejected: bool) -> None:
    assert engines.password_rejected(stderr) is rejected


def test_become_commands_never_carry_a_password() -> None:
    secret = engines.Secret("s3cr3t pass")
    assert "s3cr3t" not in repr(secret) and "s3cr3t" not in str(secret)
    assert secret.line() == b"s3cr3t pass\n"
    engine = engines.Engine("podman", ("podman",), become=PW, password=True)
    for command in (engine.probe("/var/tmp"), engine.load("/p", "gzip", False, {"gzip"}),
                    engines.become_check(PW), engines.become_validate(PW)):  # fmt: skip
        assert "s3cr3t" not in command
        shlex.split(command)  # well-formed shell
    with pytest.raises(ValueError):
        engines.Secret("two\nlines")


def test_wrap_quotes_the_script() -> None:
    script = "echo 'a b'; docker images"
    wrapped = engines.wrap(script, engines.Become("deploy"), password=False)
    assert shlex.split(wrapped) == ["sudo", "-n", "-u", "deploy", "--", "/bin/sh", "-c", script]
    assert engines.wrap(script, None, True) == script


def test_podman_identity_inspects_its_stored_names() -> None:
    seen: list[str] = []

    def run(command: str) -> str:  # podman 4.3.1's real answers (PODMAN_INSPECT_FORMAT)
        seen.append(command)
        return (
            f'localhost/demo/web:1.0\t{WEB_ID[7:]}\t["{LAYERS[0]}"]\t2145051\n'
            "localhost/demo/worker:1.0\t\nlocalhost/demo/worker:1.0\t!Error: inspecting "
            "object: localhost/demo/worker:1.0: image not known\n"
        )

    engine = engines.Engine("podman", ("podman",))
    refs = [ImageRef.parse("demo/web:1.0"), ImageRef.parse("demo/worker:1.0")]
    found = engine.identity(run, refs)
    assert {r: i.id for r, i in found.items()} == {"demo/web:1.0": WEB_ID}
    assert not found["demo/web:1.0"].containerd_store
    assert len(seen) == 1 and "localhost/demo/web:1.0" in seen[0]
    assert engines.PODMAN_INSPECT_FORMAT in shlex.split(seen[0].split(";")[1])


CTR_LS = (
    "REF                    TYPE                                                 DIGEST"
    "                                                                  SIZE    PLATFORMS   LABELS\n"
    f"docker.io/demo/web:1.0 application/vnd.docker.distribution.manifest.v2+json {WEB_MANIFEST}"
    " 6.1 MiB linux/amd64 io.cri-containerd.image=managed\n"
    f"{WEB_ID} application/vnd.docker.distribution.manifest.v2+json {WEB_MANIFEST} 6.1 MiB"
    " linux/amd64 io.cri-containerd.image=managed\n"
)


def _b64(data: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


MANIFEST = {"schemaVersion": 2, "config": {"digest": WEB_ID, "size": 2107}, "layers": []}
CONFIG = {"rootfs": {"type": "layers", "diff_ids": list(LAYERS)}}


def test_containerd_identity_through_a_runner() -> None:
    blobs = {WEB_MANIFEST: MANIFEST, WEB_ID: CONFIG}
    seen: list[str] = []

    def run(command: str) -> str:  # ctr_identity's output: the listing, then the manifest
        seen.append(command)
        return f"{CTR_LS}{engines.BLOBS_MARK}\n{WEB_MANIFEST}\t{_b64(blobs[WEB_MANIFEST])}\n"

    engine = engines.Engine("containerd", ("ctr",), "k8s.io")
    refs = [ImageRef.parse("demo/web:1.0"), ImageRef.parse("demo/gone:1")]
    found = engine.identity(run, refs)
    assert {r: i.id for r, i in found.items()} == {"demo/web:1.0": WEB_ID}  # the config digest
    assert not found["demo/web:1.0"].containerd_store
    assert len(seen) == 1 and "ctr -n k8s.io images ls" in seen[0]  # one round trip
    assert "docker.io/library/demo" not in seen[0] and "docker.io/demo/gone:1" in seen[0]


def test_containerd_identity_of_an_index_and_a_listing_failure() -> None:
    child = "sha256:" + "c" * 64
    index_digest = "sha256:" + "d" * 64
    index = {"manifests": [{"digest": child, "platform": {"os": "linux", "architecture": "amd64"}}]}
    listing = (
        "REF TYPE DIGEST SIZE PLATFORMS LABELS\n"
        f"docker.io/demo/web:1.0 application/vnd.oci.image.index.v1+json {index_digest} 1 MiB"
        " linux/amd64 -\n"
    )
    text = (
        f"{listing}{engines.BLOBS_MARK}\n{index_digest}\t{_b64(index)}\n"
        f"{child}\t{_b64(MANIFEST)}\n"
    )
    engine = engines.Engine("containerd", ("ctr",), "k8s.io")
    refs = [ImageRef.parse("demo/web:1.0")]
    assert engine.parse_identity(text, refs)["demo/web:1.0"].id == WEB_ID
    with pytest.raises(commands.InspectError, match="connection refused"):
        engine.parse_identity("error=ctr: failed to dial: connection refused\n", refs)
    script = engine.identity_script(refs)
    shlex.split(script)  # well-formed shell
    assert "content get" in script and "grep -o 'sha256:[0-9a-f]\\{64\\}'" in script


def test_containerd_index_picks_linux_amd64() -> None:
    index = {
        "manifests": [
            {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    }
    assert engines.index_manifest(json.dumps(index).encode()) == "sha256:amd"
    assert engines.index_manifest(b"not json") is None
    assert engines.manifest_config(json.dumps(MANIFEST).encode()) == WEB_ID
    assert engines.parse_blobs(f"sha256:a\t{_b64(CONFIG)}\nsha256:b\t\n") == {
        "sha256:a": json.dumps(CONFIG).encode()
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", sshargs.SSHArgs()),
        ("-o ProxyJump=bastion", sshargs.SSHArgs(proxy_jump="bastion")),
        ("-o 'ProxyJump u@b1:2222,b2'", sshargs.SSHArgs(proxy_jump="u@b1:2222,b2")),
        ("-oProxyJump=b -o ControlMaster=auto -o ControlPersist=60s", sshargs.SSHArgs(proxy_jump="b")),
        ("-J b1,b2 -F /etc/cfg", sshargs.SSHArgs(proxy_jump="b1,b2", config_file="/etc/cfg")),
        ("-o ConnectTimeout=4 -o StrictHostKeyChecking=accept-new",
         sshargs.SSHArgs(connect_timeout=4.0, host_key_checking="accept-new")),
        ("-o UserKnownHostsFile=/k -p 2200 -l ops -i ~/.ssh/k -4",
         sshargs.SSHArgs(known_hosts="/k", port=2200, user="ops", identity_file="~/.ssh/k")),
    ],
)  # fmt: skip
def test_ssh_args(text: str, expected: sshargs.SSHArgs) -> None:
    assert sshargs.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-o ProxyCommand='ssh -W %h:%p b'", "ProxyCommand is not supported"),
        ("-o Frobnicate=yes", "Frobnicate is not supported"),
        ("-o ConnectTimeout=soon", "ConnectTimeout must be a number"),
        ("-D 1080", "-D is not supported"),
        ("bastion", "unexpected argument"),
        ("-J", "needs a value"),
    ],
)
def test_ssh_args_errors(text: str, message: str) -> None:
    with pytest.raises(sshargs.SSHArgsError, match=message):
        sshargs.parse(text)


SSH_CONFIG = """
Host web
  HostName 10.0.0.5
  User deploy
  Port 2222
  IdentityFile /keys/web
  ConnectTimeout 7
Host inner-*
  ProxyJump jump2
Host jump2
  HostName 10.0.0.2
  ProxyJump ops@jump1:2200
Host jump1
  HostName 10.0.0.1
  IdentityFile /keys/jump
Host direct
  HostName 10.0.0.9
  ProxyJump none
"""


def _route(target: Target) -> tuple[list[str], str, transport.sshconfig.Hop]:
    jumps, final = transport.route(target, paramiko.SSHConfig.from_text(SSH_CONFIG))
    return [j.label for j in jumps], final.label, final


def test_route_from_ssh_config_alias() -> None:
    jumps, label, final = _route(Target("web", "web"))
    assert (jumps, label) == ([], "deploy@10.0.0.5:2222")
    assert final.key_files == ("/keys/web",) and final.connect_timeout == 7.0


def test_inventory_settings_win_over_ssh_config() -> None:
    target = Target("web", "web", port=22, user="root", key_file="/k",
                    explicit=frozenset({"port", "user", "key_file"}))  # fmt: skip
    _, label, final = _route(target)
    assert label == "root@10.0.0.5:22" and final.key_files == ("/k",)


def test_route_two_hops_from_config_and_inventory() -> None:
    jumps, label, _ = _route(Target("i1", "inner-1"))
    assert jumps == ["ops@10.0.0.1:2200", "10.0.0.2:22"] and label == "inner-1:22"
    jumps, _, _ = _route(Target("x", "10.1.1.1", proxy_jump="root@b:2022,jump1"))
    assert jumps == ["root@b:2022", "10.0.0.1:22"]
    assert _route(Target("d", "direct"))[0] == []
    assert _route(Target("d", "inner-2", proxy_jump="none"))[0] == []


def test_jump_hosts_also_try_the_inventory_key() -> None:
    jumps, _ = transport.route(
        Target("i", "inner-1", key_file="/inv"), paramiko.SSHConfig.from_text(SSH_CONFIG)
    )
    assert jumps[0].key_files == ("/keys/jump", "/inv")


@pytest.mark.parametrize(
    ("spec", "hops"),
    [
        ("b", [(None, "b", None)]),
        ("u@b:2200,c", [("u", "b", 2200), (None, "c", None)]),
        ("ssh://u@[fd00::1]:22", [("u", "fd00::1", 22)]),
    ],
)
def test_parse_jump(spec: str, hops: list[tuple[str | None, str, int | None]]) -> None:
    assert transport.sshconfig.parse_jump(spec) == hops


def test_jump_loop_is_an_error() -> None:
    config = paramiko.SSHConfig.from_text("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    with pytest.raises(ValueError, match="loop"):
        transport.route(Target("t", "t", proxy_jump="a"), config)


class _Host:
    def __init__(self, **vars: Any) -> None:
        self.name = "h1"
        self.vars = vars
        self.source = "inv.yaml:3"


def _plan(play_extra: str = "", **vars: Any) -> Any:
    book = Playbook.from_text(f"- hosts: all\n  images: [x]\n{play_extra}", "p.yaml")
    return host_plan(_Host(**vars), book.plays[0])


@pytest.mark.parametrize(
    ("vars", "engine", "argv", "namespace"),
    [
        ({}, "docker", ("docker",), "k8s.io"),
        ({"docker_command": "sudo -n docker"}, "docker", ("sudo", "-n", "docker"), "k8s.io"),
        ({"engine": "podman"}, "podman", ("podman",), "k8s.io"),
        ({"engine": "containerd", "containerd_namespace": "default"}, "containerd", ("ctr",), "default"),
        ({"engine": "containerd", "engine_command": "nerdctl"}, "containerd", ("nerdctl",), "k8s.io"),
        ({"engine": "podman", "engine_command": ["podman", "--root", "/r"]}, "podman",
         ("podman", "--root", "/r"), "k8s.io"),
    ],
)  # fmt: skip
def test_plan_engine_vars(
    vars: dict[str, Any], engine: str, argv: tuple[str, ...], namespace: str
) -> None:
    plan = _plan(**vars)
    assert (plan.engine, plan.docker, plan.containerd_namespace) == (engine, argv, namespace)


@pytest.mark.parametrize(
    ("play", "vars", "become"),
    [
        ("", {}, None),
        ("", {"ansible_become": True}, engines.Become("root")),
        ("", {"ansible_become": "yes", "ansible_become_user": "svc"}, engines.Become("svc")),
        ("", {"ansible_become": "False"}, None),
        ("  become: true\n  become_user: app\n", {}, engines.Become("app")),
        ("  become: false\n", {"ansible_become": True}, None),
    ],
)
def test_plan_become(play: str, vars: dict[str, Any], become: engines.Become | None) -> None:
    assert _plan(play, **vars).become == become


@pytest.mark.parametrize(
    ("vars", "message"),
    [
        ({"engine": "lxc"}, "engine: must be one of docker, podman, containerd"),
        ({"ansible_become": True, "ansible_become_method": "su"}, "only sudo is supported"),
        ({"ansible_become": "maybe"}, "must be true or false"),
        ({"ansible_ssh_common_args": "-o ProxyCommand=nc"}, "ProxyCommand is not supported"),
        ({"containerd_namespace": "a b"}, "not a namespace name"),
    ],
)
def test_plan_rejects(vars: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _plan(**vars)
    assert "inv.yaml:3" in str(info.value)


def test_plan_ssh_vars() -> None:
    plan = _plan(
        ansible_ssh_common_args="-o ProxyJump=root@10.0.0.1 -o ConnectTimeout=3",
        ssh_config="/etc/distrib/ssh_config",
    )
    t = plan.target
    assert (t.proxy_jump, t.ssh_config, t.connect_timeout) == (
        "root@10.0.0.1", "/etc/distrib/ssh_config", 3.0
    )  # fmt: skip
    assert t.explicit == frozenset({"connect_timeout"})
    assert _plan(ansible_port=2200, ansible_user="u").target.explicit == {"port", "user"}
    assert _plan(proxy_jump="b").target.proxy_jump == "b"


def test_play_become_keys_are_validated() -> None:
    with pytest.raises(ConfigError, match="become_method: must be one of sudo"):
        Playbook.from_text("- hosts: all\n  images: [x]\n  become_method: su\n", "p.yaml")


@pytest.mark.parametrize(
    ("loaded", "names"),
    [
        # podman 5.4.2 / 4.3.1 output for a one-image docker 25+ save, a docker 20.10 save,
        # several images on one line (podman 4), a registry-qualified name
        ("Loaded image: docker.io/library/app:1", ["docker.io/library/app:1", "localhost/app:1"]),
        ("Loaded image: localhost/demo/web:1.0", ["localhost/demo/web:1.0"]),
        (
            "Loaded image(s): docker.io/demo/web:1.0, docker.io/demo/worker:1.0",
            ["docker.io/demo/web:1.0", "localhost/demo/web:1.0", "docker.io/demo/worker:1.0",
             "localhost/demo/worker:1.0"],
        ),
        ("Loaded image: quay.io/x/y:2", ["quay.io/x/y:2"]),
    ],
)  # fmt: skip
def test_podman_load_names_localhost_too(tmp_path: Path, loaded: str, names: list[str]) -> None:
    """The load script run by a real sh, with a stand-in podman that prints `loaded` and
    records each tag it is asked for."""
    podman = tmp_path / "podman"
    podman.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = load ]; then echo {shlex.quote(loaded)}; exit 0; fi\n'
        f'[ "$1" = tag ] && echo "$3" >> {tmp_path}/tags\n'
    )
    podman.chmod(0o755)
    engine = engines.Engine("podman", (str(podman),))
    proc = subprocess.run(
        ["sh", "-c", engine.load("/s/a.tar", "none", True, ())], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == loaded
    tags = (tmp_path / "tags").read_text().split() if (tmp_path / "tags").exists() else []
    held = [n for n in names if n not in tags]  # the names the load itself gave
    assert sorted(held + tags) == sorted(names)
