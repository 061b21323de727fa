"""Pure tests of the commit / backup / restore / registry workflows: names, playbook keys,
remote command builders and their parsers (tables of real outputs from docker 20.10 and
docker-registry 2.8 on this machine), backup archive reading, and the registry plan expansion.
No hosts, no mocks."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shlex
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from distrib import commands
from distrib.archive import LocalImage
from distrib.engine import Job
from distrib.errors import ConfigError
from distrib.lab.registry import config_data
from distrib.plan import HostPlan, Plan, PlayPlan
from distrib.playbook import Playbook
from distrib.refs import ImageRef
from distrib.target import Target
from distrib.workflows import archives, flow, spec, steps

# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, ok",
    [
        ("web", True),
        ("My_Web.1", True),
        ("a-b", True),
        ("875fc9430959", True),  # an ID prefix
        ("w", False),  # docker wants two characters at least
        ("-web", False),
        ("web app", False),
        ("web;rm", False),
        ("../x", False),
        ("", False),
    ],
)
def test_container_names(name: str, ok: bool) -> None:
    if ok:
        assert spec.check_container(name) == name
    else:
        with pytest.raises(ConfigError, match="invalid container name"):
            spec.check_container(name)


@pytest.mark.parametrize(
    "container, repository",
    [
        ("web", "distrib-backup/web"),
        ("db_1", "distrib-backup/db_1"),
        ("a.b-c", "distrib-backup/a.b-c"),
        # folded (uppercase, separator runs) plus a hash of the real name: never a collision
        ("Web", "distrib-backup/web-" + hashlib.sha256(b"Web").hexdigest()[:8]),
        ("a-_b", "distrib-backup/a-b-" + hashlib.sha256(b"a-_b").hexdigest()[:8]),
        ("x..", "distrib-backup/x-" + hashlib.sha256(b"x..").hexdigest()[:8]),
    ],
)
def test_backup_repository(container: str, repository: str) -> None:
    assert spec.backup_repository(container) == repository
    ImageRef.parse(f"{repository}:20260509T101500Z")  # always a valid reference


def test_backup_names_differ_for_web_and_Web() -> None:
    assert spec.backup_repository("web") != spec.backup_repository("Web")


@pytest.mark.parametrize(
    "text, expected",
    [("node1", "node1"), ("web01.example.com", "web01.example.com"), ("a/b", "a_b"),
     ("..", "_.."), (".hidden", "_.hidden"), ("h:22", "h_22")],
)  # fmt: skip
def test_safe_file_part(text: str, expected: str) -> None:
    assert spec.safe_file_part(text) == expected


@pytest.mark.parametrize(
    "text, error",
    [
        ("demo/snap:1", None),
        ("demo/snap", None),  # :latest
        ("Demo/snap:1", "lowercase"),
        ("demo/snap@sha256:" + "a" * 64, "digest"),
        ("demo snap:1", "white space"),
    ],
)
def test_commit_ref(text: str, error: str | None) -> None:
    if error is None:
        assert spec.check_commit_ref(text).tag
    else:
        with pytest.raises(ConfigError, match=error):
            spec.check_commit_ref(text)


@pytest.mark.parametrize(
    "registry, ok",
    [
        ("10.213.4.11:5000", True),
        ("registry.example.internal", True),
        ("localhost:5000", True),
        ("localhost", True),
        ("[::1]:5000", True),
        ("myregistry", False),  # docker would read it as a path component
        ("http://10.0.0.5:5000", False),
        ("10.0.0.5:5000/team", False),
        ("", False),
        ("reg;rm -rf /:5000", False),
    ],
)
def test_registry_addresses(registry: str, ok: bool) -> None:
    if ok:
        assert spec.check_registry(registry) == registry
    else:
        with pytest.raises(ConfigError):
            spec.check_registry(registry)


@pytest.mark.parametrize(
    "ref, registry, namespace, expected",
    [
        ("demo/web:1.0", "10.0.0.5:5000", None, "10.0.0.5:5000/demo/web:1.0"),
        ("demo/web:1.0", "10.0.0.5:5000", "site", "10.0.0.5:5000/site/demo/web:1.0"),
        ("web", "reg.internal", "a/b", "reg.internal/a/b/web:latest"),
        ("old.reg:5000/team/app:2", "10.0.0.5:5000", None, "10.0.0.5:5000/team/app:2"),
        ("docker.io/library/nginx:1", "10.0.0.5:5000", None, "10.0.0.5:5000/library/nginx:1"),
    ],
)
def test_registry_ref(ref: str, registry: str, namespace: str | None, expected: str) -> None:
    assert str(spec.registry_ref(ImageRef.parse(ref), registry, namespace)) == expected


@pytest.mark.parametrize(
    "namespace, ok", [("site", True), ("team/app", True), ("/site/", True), ("Site", False),
                      ("a//b", False), ("a_-b", False)],
)  # fmt: skip
def test_namespaces(namespace: str, ok: bool) -> None:
    if ok:
        assert spec.check_namespace(namespace) == namespace.strip("/")
    else:
        with pytest.raises(ConfigError):
            spec.check_namespace(namespace)


# --- playbook keys ---------------------------------------------------------------------------


def test_commit_play_needs_no_images_and_keeps_every_field() -> None:
    book = Playbook.from_text(
        "- hosts: lab\n"
        "  commit:\n"
        "    host: node1\n"
        "    container: web\n"
        "    image: demo/snap:1\n"
        "    message: after the fix\n"
        "    author: Ops <ops@example.test>\n",
        "p.yaml",
    )
    play = book.plays[0]
    assert play.images == ()
    assert play.commit is not None
    assert (play.commit.host, play.commit.container, str(play.commit.image)) == (
        "node1",
        "web",
        "demo/snap:1",
    )
    assert (play.commit.message, play.commit.author) == ("after the fix", "Ops <ops@example.test>")


REGISTRY_PLAY = "- hosts: lab\n  images: [demo/web:1.0]\n  registry: 10.0.0.5:5000\n"


@pytest.mark.parametrize(
    "text, where",
    [
        ("- hosts: lab\n  commit: {host: n, container: web, image: x:1, tag: 2}\n",
         "p.yaml:2: commit.tag: unknown key"),
        ("- hosts: lab\n  commit:\n    host: n\n    container: web\n    image: X:1\n",
         "p.yaml:5: commit.image:"),
        ("- hosts: lab\n  commit:\n    host: n\n    container: 'a b'\n    image: x:1\n",
         "p.yaml:4: commit.container: invalid container name"),
        ("- hosts: lab\n  commit: {host: n, image: x:1}\n",
         "p.yaml:2: commit: missing required key 'container'"),
        ("- hosts: lab\n  commit: web\n", "p.yaml:2: commit: must be a mapping"),
        ("- hosts: lab\n  images: [x:1]\n  commit: {host: n, container: web, image: x:1}\n",
         "p.yaml:2: images: x:1 is made by the play's commit step"),
        ("- hosts: lab\n  images: [x:1]\n  namespace: site\n",
         "p.yaml:3: namespace: only meaningful with registry:"),
        ("- hosts: lab\n  images: [x:1]\n  pull: true\n", "p.yaml:3: pull: only meaningful"),
        (REGISTRY_PLAY + "  insecure: yes please\n", "p.yaml:4: insecure: must be true or false"),
        (REGISTRY_PLAY.replace("10.0.0.5:5000", "http://10.0.0.5:5000"),
         "p.yaml:3: registry: registry 'http://10.0.0.5:5000': give HOST[:PORT] without a scheme"),
        ("- hosts: lab\n  images: ['x@sha256:" + "a" * 64 + "']\n  registry: r.internal\n",
         "p.yaml:2: images: x@sha256:"),
        ("- hosts: lab\n", "p.yaml:1: play is missing required key 'images'"),
    ],
)  # fmt: skip
def test_playbook_key_errors_name_file_line_and_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        Playbook.from_text(text, "p.yaml")
    assert str(info.value).startswith(where), str(info.value)


# --- command builders and parsers ------------------------------------------------------------

DOCKER = ["docker"]


def test_container_inspect_and_its_parser() -> None:
    command = commands.container_inspect(DOCKER, ["web", "nope"])
    assert "-- web" in command and "-- nope" in command
    # real output (docker 20.10): a missing container prints an empty line, then our "-"
    stdout = "web\t875fc9430959ac7a48\tdemo/web:1.0\nnope\t\n-\n"
    assert commands.parse_container_inspect(stdout) == {
        "web": ("875fc9430959ac7a48", "demo/web:1.0"),
        "nope": None,
    }


@pytest.mark.parametrize(
    "message, author, tail",
    [
        (None, None, ["commit", "--", "web", "demo/snap:1"]),
        ("it's done; rm -rf /", None, ["commit", "--message", "it's done; rm -rf /", "--", "web", "demo/snap:1"]),
        ("", "Ops <o@x>", ["commit", "--message", "", "--author", "Ops <o@x>", "--", "web", "demo/snap:1"]),
    ],
)  # fmt: skip
def test_commit_argv_quotes_everything(
    message: str | None, author: str | None, tail: list[str]
) -> None:
    argv = commands.commit_argv(DOCKER, "web", ImageRef.parse("demo/snap:1"), message, author)
    assert argv == ["docker", *tail]
    assert shlex.split(commands.join(argv)) == argv  # the remote shell sees exactly these


@pytest.mark.parametrize(
    "stdout, image_id",
    [
        ("sha256:1542c7fada46e42ecd38ae0c71a79dc802bd2079153e433fe57247b340f1e0c7\n",
         "sha256:1542c7fada46e42ecd38ae0c71a79dc802bd2079153e433fe57247b340f1e0c7"),
        ("WARNING: something\nsha256:abc\n", "sha256:abc"),
    ],
)  # fmt: skip
def test_parse_commit(stdout: str, image_id: str) -> None:
    assert commands.parse_commit(stdout) == image_id


def test_parse_commit_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        commands.parse_commit("Error response from daemon: No such container: web\n")


@pytest.mark.parametrize(
    "codec, tools, argv",
    [
        ("gzip", {"pigz", "gzip"}, ["pigz", "-6", "-c"]),
        ("gzip", {"gzip"}, ["gzip", "-6", "-c"]),
        ("zstd", {"zstd"}, ["zstd", "-6", "-T0", "-q", "-c"]),
    ],
)
def test_host_compressor(codec: str, tools: set[str], argv: list[str]) -> None:
    assert commands.host_compressor(codec, 6, tools) == argv


def test_host_compressor_without_zstd() -> None:
    with pytest.raises(ValueError, match="no zstd"):
        commands.host_compressor("zstd", 3, {"gzip"})


HASH = "ac7b16d165ddca3dfa20e5ffb5dbd3ac2a61122068f0c12254b6d528de6b9ed2"


@pytest.mark.parametrize(
    "stderr, sha, failed, messages",
    [
        (f"{HASH}  -\n", HASH, {}, ""),
        ("Error response from daemon: reference does not exist\n"
         f"distrib-status save 1\n{HASH}  -\n",
         HASH, {"save": 1}, "Error response from daemon: reference does not exist"),
        ("distrib-status send 141\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  -\n",
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", {"send": 141}, ""),
        ("", None, {}, ""),
    ],
)  # fmt: skip
def test_parse_save_stream(
    stderr: str, sha: str | None, failed: dict[str, int], messages: str
) -> None:
    report = commands.parse_save_stream(stderr)
    assert (report.sha256, report.failed, report.messages) == (sha, failed, messages)
    assert report.ok == (sha is not None and not failed)


def test_save_stream_really_hashes_what_it_sends(tmp_path: Path) -> None:
    """The pipeline under dash (Debian's /bin/sh, no pipefail) with `docker` replaced by a
    script: stdout carries the compressed bytes, stderr the sha256 of exactly those."""
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\n[ "$1" = save ] && printf \'image bytes %s\' "$3"\n')
    fake.chmod(0o755)
    command = commands.save_stream([str(fake)], ["demo/web:1.0"], ["gzip", "-1", "-c"])
    proc = subprocess.run(["sh", "-c", command], capture_output=True, check=True)
    report = commands.parse_save_stream(proc.stderr.decode())
    assert report.ok
    assert report.sha256 == hashlib.sha256(proc.stdout).hexdigest()
    assert gzip.decompress(proc.stdout) == b"image bytes demo/web:1.0"


def test_save_stream_reports_a_failing_save(tmp_path: Path) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Error: no such image' >&2\nexit 1\n")
    fake.chmod(0o755)
    command = commands.save_stream([str(fake)], ["x:1"], ["gzip", "-c"])
    proc = subprocess.run(["sh", "-c", command], capture_output=True)
    report = commands.parse_save_stream(proc.stderr.decode())
    assert report.failed == {"save": 1} and not report.ok
    assert "no such image" in report.messages


# real `docker info --format '{{json .RegistryConfig}}'` of a lab host started with
# --insecure-registry 10.213.4.0/24, and of a stock docker 20.10
LAB_INFO = (
    'config={"IndexConfigs":{"docker.io":{"Mirrors":[],"Name":"docker.io","Official":true,'
    '"Secure":true}},"InsecureRegistryCIDRs":["10.213.4.0/24","127.0.0.0/8"],"Mirrors":[]}\n'
    "addresses=10.213.4.11 \n"
)
STOCK_INFO = LAB_INFO.replace('"10.213.4.0/24",', "")
NAMED_INFO = (
    'config={"IndexConfigs":{"reg.internal:5000":{"Name":"reg.internal:5000","Secure":false}},'
    '"InsecureRegistryCIDRs":["127.0.0.0/8"]}\naddresses=10.9.9.9 \n'
)


@pytest.mark.parametrize(
    "info, registry, plain",
    [
        (LAB_INFO, "10.213.4.11:5000", True),
        (STOCK_INFO, "10.213.4.11:5000", False),
        (STOCK_INFO, "127.0.0.1:5000", True),  # docker's default
        (STOCK_INFO, "localhost:5000", False),  # unresolved name: not in a CIDR here
        (STOCK_INFO.replace("10.213.4.11", "127.0.0.1"), "localhost:5000", True),
        (NAMED_INFO, "reg.internal:5000", True),  # explicit index config wins
        (NAMED_INFO, "other.internal:5000", False),
        ("config=not json\naddresses=\n", "10.0.0.5:5000", False),
    ],
)
def test_docker_allows_plain_http(info: str, registry: str, plain: bool) -> None:
    settings = commands.parse_registry_probe(info)
    assert commands.docker_allows_plain_http(registry, settings) is plain


def test_registry_session_keeps_the_password_out_of_the_command() -> None:
    command = commands.registry_session(
        DOCKER, "10.0.0.5:5000", "/var/tmp", [["push", "10.0.0.5:5000/a:1"]], "ops"
    )
    assert "--password-stdin" in command and "--password " not in command
    assert '--config "$d" push 10.0.0.5:5000/a:1' in command
    assert "trap 'rm -rf -- \"$d\"' EXIT" in command
    assert "/var/tmp/distrib.login-XXXXXX" in command  # found by the stale-dir sweep too
    plain = commands.registry_session(
        DOCKER, "r.internal", "/var/tmp", [["pull", "r.internal/a:1"]]
    )
    assert plain == "docker pull r.internal/a:1"


def test_registry_session_login_really_gets_stdin_and_cleans_up(tmp_path: Path) -> None:
    """Run the generated script with a fake docker that records what it gets: the password
    arrives on stdin (never argv), the config dir exists during the steps and not after."""
    log = tmp_path / "log"
    fake = tmp_path / "docker"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "argv: $*" >> {log}\n'
        'if [ "$3" = login ]; then echo "stdin: $(cat)" >> ' + str(log) + "; fi\n"
        f'[ -d "$2" ] && echo "config dir exists" >> {log}\n'
    )
    fake.chmod(0o755)
    command = commands.registry_session(
        [str(fake)], "10.0.0.5:5000", str(tmp_path), [["push", "10.0.0.5:5000/a:1"]], "ops"
    )
    subprocess.run(["sh", "-c", command], input=b"pa55 word", check=True)
    text = log.read_text()
    assert "stdin: pa55 word" in text
    assert "pa55" not in "".join(line for line in text.splitlines() if line.startswith("argv"))
    assert text.count("config dir exists") == 2
    assert not list(tmp_path.glob("distrib.login-*"))  # removed by the trap


def test_parse_push_real_output() -> None:
    stdout = (
        "The push refers to repository [10.213.4.11:5000/x/worker]\n"
        "d44f75efaf9e: Preparing\n4e3fe77f2002: Mounted from site/demo/worker\n"
        "7: digest: sha256:c0c65eaff592db3ec936c970db283d5aaade389049a9007ab19661123213f91b size: 946\n"
        "The push refers to repository [10.213.4.11:5000/x/web]\n"
        "4e3fe77f2002: Layer already exists\n"
        "1.0: digest: sha256:aaaa size: 527\n"
    )
    assert commands.parse_push(stdout) == [
        "sha256:c0c65eaff592db3ec936c970db283d5aaade389049a9007ab19661123213f91b",
        "sha256:aaaa",
    ]


def test_lab_registry_config() -> None:
    data = config_data("10.213.4.11", 5000, "/lab/data", "/lab/htpasswd")
    assert data["http"] == {"addr": "10.213.4.11:5000"}
    assert data["auth"] == {"htpasswd": {"realm": "distrib-lab", "path": "/lab/htpasswd"}}
    assert "auth" not in config_data("10.213.4.11", 5000, "/lab/data", None)


def test_credentials_never_print_the_password() -> None:
    creds = steps.Credentials("ops", b"s3cret")
    assert "s3cret" not in repr(creds) and "s3cret" not in str(creds)


# --- backup archives -----------------------------------------------------------------------------


def _docker_save_archive(
    path: Path, tags: list[str], compress: bool = True
) -> tuple[str, list[str]]:
    """A small archive in `docker save`'s classic layout; returns (image id, diff ids)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        data = b"hello\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{config_hex}.json", "RepoTags": tags, "Layers": ["abc/layer.tar"]}]
    ).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for name, blob in (
            ("abc/layer.tar", layer_bytes),
            (f"{config_hex}.json", config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            t.addfile(info, io.BytesIO(blob))
    path.write_bytes(gzip.compress(raw.getvalue()) if compress else raw.getvalue())
    return f"sha256:{config_hex}", [diff_id]


def test_open_backup_reads_ids_from_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "web-20260509T101500Z.tar.gz"
    image_id, diff_ids = _docker_save_archive(path, ["distrib-backup/web:20260509T101500Z"])
    backup = archives.open_backup(str(path))
    assert backup.metadata is None
    (image,) = backup.archive.images
    assert (str(image.ref), image.id, list(image.diff_ids)) == (
        "distrib-backup/web:20260509T101500Z",
        image_id,
        diff_ids,
    )
    assert image.size > 0
    assert backup.archive.codec == "gzip"
    assert backup.archive.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_backup_of_a_containerd_store_image_records_the_config_digest(tmp_path: Path) -> None:
    """docker's containerd store prints a manifest digest on commit: the backup's identity
    is read from the fetched archive instead (the config digest that restore checks)."""
    from distrib.errors import TransferError
    from distrib.refs import ImageRef
    from distrib.workflows import steps

    path = tmp_path / "web-20260509T101500Z.tar.gz"
    ref = ImageRef.parse("distrib-backup/web:20260509T101500Z")
    image_id, _ = _docker_save_archive(path, [str(ref)])
    assert steps.archived_config_digest("node3", str(path), "gzip", ref) == image_id
    with pytest.raises(TransferError, match="does not hold distrib-backup/db"):
        steps.archived_config_digest(
            "node3", str(path), "gzip", ImageRef.parse("distrib-backup/db:1")
        )


def _metadata(path: Path, **changes: Any) -> Path:
    doc = {
        "format": 1,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "size": path.stat().st_size,
        "codec": "gzip",
        **changes,
    }
    meta = Path(archives.metadata_path(str(path)))
    meta.write_text(json.dumps(doc))
    return meta


def test_open_backup_checks_the_metadata(tmp_path: Path) -> None:
    path = tmp_path / "web-1.tar.gz"
    image_id, _ = _docker_save_archive(path, ["a/web:1"])
    _metadata(path, image_id=image_id)
    assert archives.open_backup(str(path)).metadata_file == str(tmp_path / "web-1.json")


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"sha256": "0" * 64}, "corrupt or a different file"),
        ({"size": 1}, "truncated or a different file"),
        ({"codec": "zstd"}, "is gzip-compressed but"),
        ({"image_id": "sha256:" + "1" * 64}, "does not hold image"),
    ],
)
def test_open_backup_refuses_a_mismatch(
    tmp_path: Path, changes: dict[str, Any], error: str
) -> None:
    path = tmp_path / "web-1.tar.gz"
    _docker_save_archive(path, ["a/web:1"])
    _metadata(path, **changes)
    with pytest.raises(archives.ArchiveError, match=error) as info:
        archives.open_backup(str(path))
    assert info.value.exit_code == 5


@pytest.mark.parametrize(
    "content, error",
    [
        (b"not an archive at all" * 40, "not a docker archive"),
        (gzip.compress(b"x" * 1000), "not a readable docker archive"),
    ],
)
def test_open_backup_refuses_garbage(tmp_path: Path, content: bytes, error: str) -> None:
    path = tmp_path / "x.tar.gz"
    path.write_bytes(content)
    with pytest.raises(archives.ArchiveError, match=error):
        archives.open_backup(str(path))


def test_untagged_archive_cannot_be_restored(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    _docker_save_archive(path, [], compress=False)
    with pytest.raises(archives.ArchiveError, match="no tagged image"):
        archives.open_backup(str(path))


@pytest.mark.parametrize(
    "archive, meta",
    [("b/web-1.tar.gz", "b/web-1.json"), ("web.tar.zst", "web.json"), ("x.tar", "x.json"),
     ("x.bin", "x.bin.json")],
)  # fmt: skip
def test_metadata_path(archive: str, meta: str) -> None:
    assert archives.metadata_path(archive) == meta


def test_tampered_config_is_detected() -> None:
    config = json.dumps({"rootfs": {"diff_ids": ["sha256:aa"]}}).encode()
    name = "0" * 64 + ".json"
    manifest = [{"Config": name, "RepoTags": ["a:1"], "Layers": []}]
    with pytest.raises(archives.ArchiveError, match="does not match its digest"):
        archives.images_from_manifest(manifest, {name: config}, {})


# --- registry plays: the plan expansion ----------------------------------------------------------


def _host(name: str) -> HostPlan:
    return HostPlan(name, Target(name, name), ("docker",), "/var/tmp")


def test_registry_play_becomes_push_then_pull() -> None:
    book = Playbook.from_text(
        "- name: site\n  hosts: lab\n  images: [demo/web:1.0]\n  registry: 10.0.0.5:5000\n"
        "  namespace: site\n  pull: true\n  insecure: true\n"
        "- name: plain\n  hosts: lab\n  images: [demo/web:1.0]\n",
        "p.yaml",
    )
    hosts = (_host("node1"), _host("node2"))
    plan = Plan(tuple(PlayPlan(p, hosts, (hosts,), 10) for p in book.plays))
    image = LocalImage(ImageRef.parse("demo/web:1.0"), "sha256:abc", ("sha256:l1",), 10)
    jobs = {0: Job((image,)), 1: Job((image,))}
    registry_host = _host("node9")
    f = flow.Flow(False, registries={0: flow.RegistrySetup(registry_host, None)})
    new_plan, new_jobs, step = f.expand(plan, jobs)
    names = [p.play.name for p in new_plan.plays]
    assert names == ["site: push to 10.0.0.5:5000", "site", "plain"]
    assert [h.name for h in new_plan.plays[0].hosts] == ["node9"]
    push, pull = new_jobs[0], new_jobs[1]
    assert isinstance(push, steps.PushTask) and isinstance(pull, steps.PullTask)
    assert push.outcome is pull.outcome  # the pull waits on this very push
    ((shipped, named),) = push.target.pairs
    assert str(named.ref) == "10.0.0.5:5000/site/demo/web:1.0"
    assert (named.id, named.diff_ids) == (shipped.id, shipped.diff_ids)
    assert new_jobs[2] is jobs[1]
    assert step is steps.dispatch


def test_plain_playbooks_are_left_alone() -> None:
    book = Playbook.from_text("- hosts: lab\n  images: [demo/web:1.0]\n", "p.yaml")
    plan = Plan((PlayPlan(book.plays[0], (), (), 10),))
    jobs = {0: Job(())}
    assert flow.Flow(False).expand(plan, jobs) == (plan, jobs, None)


def test_a_failed_push_skips_the_pulls() -> None:
    outcome = steps.PushOutcome(False, "the push to r.internal failed on node1")
    target = steps.RegistryTarget("r.internal", False, None, ())
    seen: list[str] = []

    def connect(_target: Target) -> Any:
        seen.append("connected")
        raise AssertionError("a skipped host is never connected")

    result = steps.PullTask(target, outcome).run_on(
        _host("node2"), connect, steps.Progress(), __import__("threading").Event()
    )
    assert (result.status, seen) == ("skipped", [])
    assert "the push to r.internal failed on node1" in result.message


def test_credentials_from_vars(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_bytes(b"s3cret\n")
    book = Playbook.from_text(REGISTRY_PLAY, "p.yaml")
    creds = flow._credentials(
        {"registry_username": "ops", "registry_password_file": str(password)}, book.plays[0]
    )
    assert creds == steps.Credentials("ops", b"s3cret")
    with pytest.raises(ConfigError, match="p.yaml:1: registry_password_file .*No such file"):
        flow._credentials(
            {"registry_username": "ops", "registry_password_file": str(tmp_path / "no")},
            book.plays[0],
        )
    with pytest.raises(ConfigError, match="registry_username is not"):
        flow._credentials({"registry_password_file": str(password)}, book.plays[0])


# --- the steps' engine commands (issue 15 item 2): per engine kind, from tables ----------------

from distrib import engines  # noqa: E402
from distrib.workflows import hostcmds  # noqa: E402

DOCKER_E = engines.Engine()
PODMAN_E = engines.Engine(engines.PODMAN, ("podman",))
CTR_E = engines.Engine(engines.CONTAINERD, ("ctr",), "k8s.io")
SNAP = ImageRef.parse("demo/snap:1")
REG = ImageRef.parse("10.0.0.5:5000/site/demo/snap:1")


@pytest.mark.parametrize(
    "kind, step, credentials, refused",
    [
        ("docker", "commit", False, None),
        ("docker", "push", True, None),
        ("podman", "backup", False, None),
        ("podman", "pull", True, None),
        ("containerd", "commit", False, "ctr has no commit"),
        ("containerd", "backup", False, "ctr has no commit"),
        ("containerd", "commit step", False, "ctr has no commit"),
        ("containerd", "push", False, None),
        ("containerd", "pull", False, None),
        ("containerd", "push", True, "--user USER:PASSWORD"),
        ("containerd", "pull", True, "--user USER:PASSWORD"),
    ],
)
def test_refusals_are_one_line_naming_the_engine(
    kind: str, step: str, credentials: bool, refused: str | None
) -> None:
    why = hostcmds.refusal(kind, step, credentials)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why and "\n" not in why
        assert why.startswith(f"{step} is not supported on {kind} hosts: ")
        assert why.endswith("; nothing was done")


@pytest.mark.parametrize(
    "engine, message, author, command",
    [
        (DOCKER_E, "it's", None, "docker commit --message 'it'\"'\"'s' -- web demo/snap:1"),
        (PODMAN_E, None, "Ops <o@x>", "podman commit --quiet --format docker --author "
         "'Ops <o@x>' -- web localhost/demo/snap:1"),
        (PODMAN_E, "m", None, "podman commit --quiet --format docker --message m -- web "
         "localhost/demo/snap:1"),
    ],
)  # fmt: skip
def test_commit_commands(
    engine: engines.Engine, message: str | None, author: str | None, command: str
) -> None:
    assert hostcmds.commit(engine, "web", SNAP, message, author) == command


@pytest.mark.parametrize(
    "kind, stdout, image_id",
    [
        ("docker", "sha256:" + "a" * 64 + "\n", "sha256:" + "a" * 64),
        # podman 5.4 --quiet prints the bare ID
        ("podman", "2346bbf162c2a1db01efe94f3284471d06c5cfb9fd393625abd40e148bdde32d\n",
         "sha256:2346bbf162c2a1db01efe94f3284471d06c5cfb9fd393625abd40e148bdde32d"),
    ],
)  # fmt: skip
def test_parse_commit_per_engine(kind: str, stdout: str, image_id: str) -> None:
    assert hostcmds.parse_commit(kind, stdout) == image_id


def test_parse_podman_commit_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="unexpected podman commit output"):
        hostcmds.parse_commit("podman", "Error: no container web\n")


def test_podman_container_inspect_parses_like_docker() -> None:
    script = hostcmds.container_inspect(PODMAN_E, ["web", "db"])
    assert "podman container inspect --format '{{.Id}}\t{{.ImageName}}' -- web" in script
    out = "web\t0874663\tlocalhost/demo/web:1.0\ndb\t-\n"  # as podman 5.4 prints it
    assert commands.parse_container_inspect(out) == {
        "web": ("0874663", "localhost/demo/web:1.0"), "db": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    "engine, saved",
    [(DOCKER_E, "docker save -- demo/snap:1"), (PODMAN_E, "podman save -- localhost/demo/snap:1")],
)
def test_save_stream_names_the_image_as_the_engine_does(
    engine: engines.Engine, saved: str
) -> None:
    assert saved in hostcmds.save_stream(engine, SNAP, ["gzip", "-1", "-c"])


@pytest.mark.parametrize(
    "engine, insecure, auth, expected",
    [
        (DOCKER_E, True, False, ["docker tag demo/snap:1 10.0.0.5:5000/site/demo/snap:1",
                                  "docker push 10.0.0.5:5000/site/demo/snap:1"]),
        (PODMAN_E, True, True, [
            "podman tag localhost/demo/snap:1 10.0.0.5:5000/site/demo/snap:1",
            'podman push --authfile "$d/auth.json" --tls-verify=false '
            "10.0.0.5:5000/site/demo/snap:1"]),
        (PODMAN_E, False, False, ["podman tag localhost/demo/snap:1 10.0.0.5:5000/site/demo/snap:1",
                                  "podman push 10.0.0.5:5000/site/demo/snap:1"]),
        (CTR_E, True, False, [
            "ctr -n k8s.io images tag --force docker.io/demo/snap:1 10.0.0.5:5000/site/demo/snap:1",
            "ctr -n k8s.io images push --plain-http 10.0.0.5:5000/site/demo/snap:1 >/dev/null"]),
    ],
)  # fmt: skip
def test_push_commands(
    engine: engines.Engine, insecure: bool, auth: bool, expected: list[str]
) -> None:
    assert hostcmds.push_commands(engine, [(SNAP, REG)], insecure, auth) == expected


def test_containerd_pull_tags_and_pins_both_names() -> None:
    assert hostcmds.pull_commands(CTR_E, [(SNAP, REG)], False, False) == [
        "ctr -n k8s.io images pull 10.0.0.5:5000/site/demo/snap:1 >/dev/null",
        "ctr -n k8s.io images tag --force 10.0.0.5:5000/site/demo/snap:1 docker.io/demo/snap:1",
        "ctr -n k8s.io images label 10.0.0.5:5000/site/demo/snap:1 "
        "io.cri-containerd.pinned=pinned >/dev/null",
        "ctr -n k8s.io images label docker.io/demo/snap:1 io.cri-containerd.pinned=pinned "
        ">/dev/null",
    ]


def test_podman_login_reads_the_password_from_stdin_into_a_private_authfile() -> None:
    steps = hostcmds.pull_commands(PODMAN_E, [(SNAP, REG)], True, True)
    script = hostcmds.registry_session(PODMAN_E, "10.0.0.5:5000", "/var/tmp", steps, True, "ops")
    assert script.startswith("umask 077 && d=$(mktemp -d -- /var/tmp/distrib.login-XXXXXX)")
    assert "trap 'rm -rf -- \"$d\"' EXIT" in script
    assert (
        'podman login --authfile "$d/auth.json" --tls-verify=false --username ops '
        "--password-stdin 10.0.0.5:5000 >/dev/null && podman pull --authfile" in script
    )
    assert hostcmds.registry_session(PODMAN_E, "r:1", "/t", ["a", "b"], True, None) == "a && b"
    with pytest.raises(ValueError, match="--user USER:PASSWORD"):
        hostcmds.registry_session(CTR_E, "r:1", "/t", ["a"], True, "ops")


def test_podman_login_really_gets_stdin_and_cleans_up(tmp_path: Path) -> None:
    """A fake `podman` that records its argv and stdin: the password reaches login's stdin
    only, and the private dir is gone afterwards."""
    fake = tmp_path / "podman"
    log = tmp_path / "log"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\ncase "$1" in login) cat >> {log}; echo >> {log};; esac\n')
    fake.chmod(0o755)
    engine = engines.Engine(engines.PODMAN, (str(fake),))
    steps = hostcmds.push_commands(engine, [(SNAP, REG)], True, True)
    script = hostcmds.registry_session(engine, "r:1", str(tmp_path), steps, True, "ops")
    done = subprocess.run(["sh", "-c", script], input=b"s3cret", capture_output=True)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert lines[0].startswith("login --authfile ") and "s3cret" not in lines[0]
    assert lines[1] == "s3cret" and "s3cret" not in "".join(lines[2:])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("distrib.")] == []


def test_a_local_download_gets_the_become_line_on_stdin_only() -> None:
    """A backup through sudo with a password streams its save back with sudo's line on stdin
    (transport and the local connection alike)."""
    from distrib import transport

    session = transport.connect(Target(name="me", address="localhost", connection="local"))
    try:
        got = bytearray()
        result = session.download("read -r p; printf '%s' \"$p\" | wc -c", got.extend,
                                  stdin=b"pw-line\n")  # fmt: skip
        assert result.ok and got.decode().strip() == "7"
        plain = session.download("cat", got.extend)  # no stdin: EOF at once
        assert plain.ok
    finally:
        session.close()
