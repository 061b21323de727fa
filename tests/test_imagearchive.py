"""Image archives as sources (issue 18): detection by content, reading docker-archives, OCI
archives and layouts (plain, gzip, zstd), multi-platform indexes, corrupt and truncated files,
the layer store filled from them (never an engine) and whole archives made from it; the
per-platform choice from tables. Pure: archives built here with tarfile, real gzip/zstd."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from distrib import archived, archivemembers, imagearchive
from distrib.archive import prepare
from distrib.errors import ConfigError, LocalError
from distrib.layerstore import LayerStore
from distrib.platforms import Platform, best_match, refusals
from distrib.playbook import Playbook
from distrib.refs import ImageRef
from tests.archives import (
    Image,
    compress,
    docker_archive,
    layer_tar,
    oci_archive,
    oci_layout,
    sha,
)

BASE = layer_tar({"bin/sh": b"#!base\n" * 200})
APP = layer_tar({"app/run": b"amd64 app\n" * 100})
APP_ARM = layer_tar({"app/run": b"arm64 app\n" * 100})


def web(**kw: object) -> Image:
    return Image([BASE, APP], names=["demo/web:1.0"], **kw)  # type: ignore[arg-type]


def pair() -> list[Image]:
    return [Image([BASE, APP]), Image([BASE, APP_ARM], architecture="arm64")]


# -- telling what a path is --------------------------------------------------------------------


def test_sniff_tells_archives_by_content_not_name(tmp_path: Path) -> None:
    plain = docker_archive(tmp_path / "images.txt", [web()])  # a misleading name
    assert archivemembers.sniff(str(plain)) == "none"
    assert archivemembers.sniff(str(compress(plain, "gzip"))) == "gzip"
    assert archivemembers.sniff(str(compress(plain, "zstd"))) == "zstd"
    assert archivemembers.sniff(str(compress(plain, "xz"))) == "xz"
    assert archivemembers.sniff(str(oci_layout(tmp_path / "layout", [web()]))) == "layout"
    compose = tmp_path / "app.tar.yaml"
    compose.write_text("services:\n  web:\n    image: demo/web:1.0\n")
    assert archivemembers.sniff(str(compose)) is None
    assert not imagearchive.is_archive(str(compose))


# -- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd", "xz"])
def test_docker_archive_names_and_identity(tmp_path: Path, codec: str) -> None:
    plain = docker_archive(tmp_path / "web.tar", [web(), Image([BASE], names=["demo/base:1"])])
    path = plain if codec == "none" else compress(plain, codec)
    images = imagearchive.read(str(path))
    assert [i.names for i in images] == [("demo/web:1.0",), ("demo/base:1",)]
    (variant,) = images[0].variants
    assert variant.config == web().id  # identity: the config digest
    assert variant.diff_ids == (sha(BASE), sha(APP))
    assert variant.platform == Platform("linux", "amd64")
    suffix = {"none": "tar", "gzip": "tar.gz", "zstd": "tar.zst", "xz": "tar.xz"}[codec]
    assert images[0].kind == f"docker-archive ({suffix})"


def test_oci_layout_and_archive_names_from_annotations(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "layout", [web()])
    (image,) = imagearchive.read(str(layout))
    assert image.names == ("demo/web:1.0",) and image.kind == "OCI layout directory"
    tarred = compress(oci_archive(tmp_path / "web.oci.tar", layout), "zstd")
    (image,) = imagearchive.read(str(tarred))
    assert image.names == ("demo/web:1.0",) and image.kind == "OCI archive (tar.zst)"
    assert image.variants[0].config == web().id


def test_a_bare_ref_name_is_a_tag_not_a_name(tmp_path: Path) -> None:
    # skopeo copy ... oci-archive:app.tar:1.0 names a tag only: no repository to ship under
    layout = oci_layout(tmp_path / "layout", [Image([BASE, APP])], ref_name="1.0")
    (image,) = imagearchive.read(str(layout))
    assert image.names == ()


def test_multi_platform_index_is_one_image_with_variants(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "multi", pair(), multi="demo/web:2.0")
    (image,) = imagearchive.read(str(oci_archive(tmp_path / "multi.tar", layout)))
    assert image.names == ("demo/web:2.0",)
    assert [str(p) for p in image.platforms] == ["linux/amd64", "linux/arm64"]
    assert image.describe() == "OCI archive (tar), linux/amd64, linux/arm64"


def test_attestation_manifests_are_left_out(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "multi", pair(), multi="demo/web:2.0")
    index_name = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"][7:]
    index_path = layout / "blobs" / "sha256" / index_name
    doc = json.loads(index_path.read_text())
    doc["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + "0" * 64,
            "size": 1,
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        }
    )
    data = json.dumps(doc).encode()
    index_path.unlink()
    (layout / "blobs" / "sha256" / sha(data)[7:]).write_bytes(data)
    top = json.loads((layout / "index.json").read_text())
    top["manifests"][0]["digest"] = sha(data)
    (layout / "index.json").write_text(json.dumps(top))
    (image,) = imagearchive.read(str(layout))
    assert len(image.variants) == 2


# -- corrupt, truncated, not an archive --------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_truncated_archive_is_an_error_naming_the_file(tmp_path: Path, codec: str) -> None:
    plain = docker_archive(tmp_path / "web.tar", [web()])
    path = plain if codec == "none" else compress(plain, codec)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError) as caught:
        imagearchive.read(str(path))
    assert str(path) in str(caught.value)
    assert "truncated or corrupt" in str(caught.value) or "lacks" in str(caught.value)


def test_a_blob_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "layout", [web()])
    blob = layout / "blobs" / "sha256" / sha(web().config)[7:]
    blob.write_bytes(blob.read_bytes().replace(b"/bin/sh", b"/bin/xx"))
    with pytest.raises(ConfigError, match="does not match its digest") as caught:
        imagearchive.read(str(layout))
    assert str(layout) in str(caught.value)


def test_a_docker_archive_layer_that_is_not_its_diff_id_is_refused(tmp_path: Path) -> None:
    path = docker_archive(tmp_path / "web.tar", [web()])
    data = path.read_bytes().replace(b"amd64 app", b"AMD64 app")
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="is not the layer"):
        imagearchive.read(str(path))


def test_missing_blob_and_empty_archive(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "layout", [web()])
    (layout / "blobs" / "sha256" / web().id[7:]).unlink()
    with pytest.raises(ConfigError, match="lacks the image config"):
        imagearchive.read(str(layout))
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ConfigError, match="holds no image"):
        imagearchive.read(str(empty))


# -- the layer store, filled from archives -----------------------------------------------------


@pytest.mark.parametrize("store_codec", ["gzip", "zstd"])
@pytest.mark.parametrize("kind", ["docker-archive", "oci-gzip-layers", "oci-raw-layers"])
def test_fill_stores_configs_and_layers_and_rebuilds_a_docker_archive(
    tmp_path: Path, store_codec: str, kind: str
) -> None:
    if kind == "docker-archive":
        path = compress(docker_archive(tmp_path / "web.tar", [web()]), "zstd")
    else:
        layout = oci_layout(tmp_path / "layout", [web()], compress=kind == "oci-gzip-layers")
        path = oci_archive(tmp_path / "web.oci.tar", layout)
    (found,) = imagearchive.read(str(path))
    image = archived.image_of(ImageRef.parse("demo/web:1.0"), found)
    store = LayerStore(str(tmp_path / "cache"), codec=store_codec)
    assert not store.has(image)
    archived.fill(store, [image])
    assert store.has(image)
    sized = archived.with_sizes(store, (image,))[0]
    assert sized.size == len(BASE) + len(APP)  # unpacked, for the disk preflight
    archived.fill(store, [image])  # nothing left to read: the archive is not opened
    raw = b"".join(store.raw_archive([image]))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest[0]["RepoTags"] == ["demo/web:1.0"]
        layers = [tar.extractfile(n).read() for n in manifest[0]["Layers"]]  # type: ignore[union-attr]
        assert layers == [BASE, APP]
        assert tar.extractfile(manifest[0]["Config"]).read() == web().config  # type: ignore[union-attr]


def test_a_compressed_layer_that_is_not_its_diff_id_fails_naming_the_file(tmp_path: Path) -> None:
    image = web()
    layout = oci_layout(tmp_path / "layout", [image])
    # the config lists other diffIDs than the (valid, digest-checked) gzip blobs hold
    liar = Image([BASE, layer_tar({"other": b"x"})], names=["demo/web:1.0"])
    config = liar.config
    blobs = layout / "blobs" / "sha256"
    (blobs / liar.id[7:]).write_bytes(config)
    manifest_name = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((blobs / manifest_name[7:]).read_text())
    manifest["config"] = {"mediaType": "x", "digest": liar.id, "size": len(config)}
    data = json.dumps(manifest).encode()
    (blobs / sha(data)[7:]).write_bytes(data)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["digest"] = sha(data)
    (layout / "index.json").write_text(json.dumps(index))
    (found,) = imagearchive.read(str(layout))
    local = archived.image_of(ImageRef.parse("demo/web:1.0"), found)
    store = LayerStore(str(tmp_path / "cache"), codec="gzip")
    with pytest.raises(LocalError) as caught:
        archived.fill(store, [local])
    assert str(layout) in str(caught.value) and "diffID" in str(caught.value)


@pytest.mark.parametrize("codec", ["xz", "none", "gzip"])
def test_whole_archive_made_from_the_store_not_docker_save(tmp_path: Path, codec: str) -> None:
    path = docker_archive(tmp_path / "web.tar", [web()])
    (found,) = imagearchive.read(str(path))
    image = archived.image_of(ImageRef.parse("demo/web:1.0"), found)
    make = lambda: LayerStore(str(tmp_path / "cache"), codec=archived.store_codec(codec))  # noqa: E731
    produce = archived.producer([image], make)
    assert produce is not None
    built = prepare([image], codec, directory=str(tmp_path / "cache"), producer=produce)
    built.wait()
    data = Path(built.path).read_bytes()
    if codec == "xz":
        data = subprocess.run(["xz", "-dc"], input=data, capture_output=True, check=True).stdout
    elif codec == "gzip":
        data = subprocess.run(["gzip", "-dc"], input=data, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["demo/web:1.0"]
    assert archived.producer([image.__class__(image.ref, image.id, (), 0)], make) is None


# -- playbooks ---------------------------------------------------------------------------------


def test_playbook_images_from_an_archive(tmp_path: Path) -> None:
    docker_archive(tmp_path / "web.tar", [web()])
    compress(tmp_path / "web.tar", "zstd")
    book = tmp_path / "site.yaml"
    book.write_text("- hosts: all\n  images: [demo/web:1.0]\n  images_from: web.tar.zst\n")
    (play,) = Playbook.load(str(book)).plays
    (spec,) = play.images  # the archive is where the listed image comes from
    assert spec.archived is not None and spec.archived.file == str(tmp_path / "web.tar.zst")
    found = archived.local_images([play], io.StringIO())
    assert found[spec.ref].origin == str(tmp_path / "web.tar.zst")
    assert found[spec.ref].id == web().id


def test_an_unnamed_archive_needs_a_name(tmp_path: Path) -> None:
    oci_layout(tmp_path / "app", [Image([BASE, APP])], ref_name="1.0")
    book = tmp_path / "site.yaml"
    book.write_text("- hosts: all\n  images_from: [app]\n")
    with pytest.raises(ConfigError) as caught:
        Playbook.load(str(book))
    text = str(caught.value)
    assert text.startswith(f"{book}:2: images_from:") and "holds an image with no name" in text
    book.write_text("- hosts: all\n  images_from:\n    - {file: app, name: demo/app:3}\n")
    (play,) = Playbook.load(str(book)).plays
    assert [str(s.ref) for s in play.images] == ["demo/app:3"]
    book.write_text("- hosts: all\n  images_from:\n    - {file: app, name: Bad Name}\n")
    with pytest.raises(ConfigError, match="images_from.name"):
        Playbook.load(str(book))


def test_a_corrupt_archive_stops_the_playbook_naming_the_file(tmp_path: Path) -> None:
    path = docker_archive(tmp_path / "web.tar", [web()])
    path.write_bytes(path.read_bytes()[:3000])
    book = tmp_path / "site.yaml"
    book.write_text("- hosts: all\n  images_from: web.tar\n")
    with pytest.raises(ConfigError, match="web.tar: truncated or corrupt"):
        Playbook.load(str(book))


# -- each host its own platform's image (tables) ------------------------------------------------

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
V6 = Platform("linux", "arm", "v6")
V7 = Platform("linux", "arm", "v7")


@pytest.mark.parametrize(
    ("offered", "host", "expected"),
    [
        ([AMD64, ARM64], AMD64, 0),
        ([AMD64, ARM64], ARM64, 1),
        ([AMD64, ARM64], Platform("linux", "arm64", "v8"), 1),
        ([AMD64, ARM64], V7, None),
        ([V6, V7, AMD64], V7, 1),
        ([V7, V6], V6, 1),
        ([V6, AMD64], V7, 0),  # a v7 host runs v6
        ([None, ARM64], ARM64, 1),  # naming no platform: last resort
        ([None, AMD64], ARM64, 0),
        ([AMD64, ARM64], None, 0),  # unknown host platform: the first
        ([], AMD64, None),
    ],
)
def test_best_match(
    offered: list[Platform | None], host: Platform | None, expected: int | None
) -> None:
    assert best_match(offered, host) == expected


def test_refusal_names_what_a_multi_platform_source_offers() -> None:
    lines = refusals([("demo/web:2.0", AMD64, (AMD64, ARM64)), ("demo/x:1", AMD64)], V7)
    assert lines == [
        "demo/web:2.0 has no image for linux/arm/v7 (the source offers linux/amd64, linux/arm64)",
        "demo/x:1 is linux/amd64, the host is linux/arm/v7",
    ]


def test_host_jobs_give_each_host_its_platforms_image(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "multi", pair(), multi="demo/web:2.0")
    (found,) = imagearchive.read(str(layout))
    image = archived.image_of(ImageRef.parse("demo/web:2.0"), found)
    facts = {
        "amd1": SimpleNamespace(arch="x86_64"),
        "amd2": SimpleNamespace(arch="x86_64"),
        "arm": SimpleNamespace(arch="aarch64"),
        "pi": SimpleNamespace(arch="armv7l"),
        "old": SimpleNamespace(arch=""),  # a probe that does not say
    }
    made: list[tuple[str, tuple[str, ...]]] = []

    def make(codec: str, images: tuple[object, ...]) -> tuple[str, tuple[str, ...]]:
        job = (codec, tuple(str(i.platform) for i in images))  # type: ignore[attr-defined]
        made.append(job)
        return job

    main, others = archived.host_jobs(list(facts), (image,), facts, {"arm": "zstd"}, "gzip", make)
    assert main == ("gzip", ("linux/amd64",))  # most hosts' platform
    assert others == {"arm": ("zstd", ("linux/arm64",))}  # pi and old: the main job
    assert len(made) == 2  # one job per (codec, platform)
    pi = archived.for_host(image, Platform.of_host("armv7l"))
    assert refusals([(str(pi.ref), pi.platform, pi.offered)], Platform.of_host("armv7l")) == [
        "demo/web:2.0 has no image for linux/arm/v7 (the source offers linux/amd64, linux/arm64)"
    ]
    arm = archived.for_host(image, ARM64)
    assert arm.id == pair()[1].id and arm.ref == image.ref and arm.origin == str(layout)


def test_only_the_platforms_needed_are_read_into_the_store(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "multi", pair(), multi="demo/web:2.0")
    (found,) = imagearchive.read(str(oci_archive(tmp_path / "multi.tar", layout)))
    image = archived.image_of(ImageRef.parse("demo/web:2.0"), found)
    store = LayerStore(str(tmp_path / "cache"), codec="gzip")
    archived.fill(store, [archived.for_host(image, AMD64)])
    assert store.blob(sha(APP)) is not None and store.blob(sha(APP_ARM)) is None
    shutil.rmtree(layout)


def test_each_fake_host_is_shipped_its_own_platforms_image(tmp_path: Path) -> None:
    """Engine tier (fake transport): the jobs host_jobs makes, deployed; a host loads what
    its job's archive holds, so verify passes only with its own platform's image."""
    import hashlib

    from distrib.archive import Archive
    from distrib.engine import FAILED, Job, deploy
    from distrib.plan import HostPlan
    from distrib.target import Target
    from tests.fakes import FakeFleet, FakeHost

    layout = oci_layout(tmp_path / "multi", pair(), multi="demo/web:2.0")
    (found,) = imagearchive.read(str(layout))
    image = archived.image_of(ImageRef.parse("demo/web:2.0"), found)
    amd, arm = pair()
    machines = {"pc": ("x86_64", amd.id), "arm": ("aarch64", arm.id), "pi": ("armv7l", amd.id)}
    hosts = {
        name: FakeHost(name, machine=m, archive_images={"demo/web:2.0": loads})
        for name, (m, loads) in machines.items()
    }
    facts = {name: SimpleNamespace(arch=m) for name, (m, _) in machines.items()}
    data = b"archive" * 100
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)

    def make(codec: str, images: tuple[object, ...]) -> Job:
        made = Archive(str(path), codec, 6, len(data), hashlib.sha256(data).hexdigest(), images)  # type: ignore[arg-type]
        return Job.deploy(made)

    main, others = archived.host_jobs(list(hosts), (image,), facts, {}, "gzip", make)
    job = __import__("dataclasses").replace(main, others=others)
    fleet = FakeFleet(*hosts.values())
    results = {
        name: deploy(HostPlan(name, Target(name, name), ("docker",), "/var/tmp"), job, fleet)
        for name in hosts
    }
    assert results["pc"].status == results["arm"].status == "changed"
    assert results["arm"].images == {"demo/web:2.0": arm.id}
    assert results["pi"].status == FAILED and results["pi"].bytes_sent == 0
    assert results["pi"].message.startswith(
        "demo/web:2.0 has no image for linux/arm/v7 (the source offers linux/amd64, linux/arm64)"
    )


def test_a_registry_play_host_of_another_platform_is_refused_before_pulling() -> None:
    """Registry plays check platforms too (the hosts pull what the registry host pushed)."""
    import threading

    from distrib.archive import LocalImage
    from distrib.plan import HostPlan
    from distrib.target import Target
    from distrib.workflows import steps
    from tests.fakes import FakeFleet, FakeHost

    shipped = LocalImage(
        ImageRef.parse("demo/web:1.0"), "sha256:" + "1" * 64, (), 1, platform=ARM64
    )
    named = LocalImage(ImageRef.parse("r.lab:5000/site/demo/web:1.0"), shipped.id, (), 1)
    target = steps.RegistryTarget("r.lab:5000", False, None, ((shipped, named),))
    host = FakeHost("pc", machine="x86_64")
    result = steps.PullTask(target, steps.PushOutcome(True)).run_on(
        HostPlan("pc", Target("pc", "pc"), ("docker",), "/var/tmp"),
        FakeFleet(host),
        steps.Progress(),
        threading.Event(),
    )
    assert result.status == "failed"
    assert result.message == (
        "demo/web:1.0 is linux/arm64, the host is linux/amd64; nothing was pulled"
    )
    assert not any(" pull " in c for c in host.log)


# -- a registry index with local_pull: which platforms the workstation pulls (tables) ----------


def _local(ref: str, platform: Platform | None, origin: str = "") -> object:
    from distrib.archive import LocalImage

    return LocalImage(
        ImageRef.parse(ref), "sha256:" + "2" * 64, (), 1, platform=platform, origin=origin
    )


@pytest.mark.parametrize(
    ("have", "hosts", "expected"),
    [
        (AMD64, [AMD64, AMD64], []),
        (AMD64, [AMD64, ARM64], ["linux/arm64"]),
        (AMD64, [ARM64, V7, V6, None], ["linux/arm/v7", "linux/arm/v6", "linux/arm64"]),
        (ARM64, [Platform("linux", "arm64", "v8")], []),
        (None, [ARM64], []),  # a config naming no platform runs anywhere
    ],
)
def test_platform_pulls_wanted(
    have: Platform | None, hosts: list[Platform | None], expected: list[str]
) -> None:
    from distrib import platformpull

    image = _local("reg.lab:5000/demo/web:1.0", have)
    got = platformpull.wanted([image], hosts)  # type: ignore[list-item]
    assert [str(p) for _, p in got] == expected
    archive_image = _local("demo/web:1.0", AMD64, origin="web.tar")
    assert platformpull.wanted([archive_image], [ARM64]) == []  # type: ignore[list-item]


def test_platform_pulls_refused_on_a_containerd_store_workstation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docker's containerd store keeps a tag on the whole index: no per-platform pulls there,
    said in one line; the images are left as they are (other hosts then refused)."""
    import io

    from distrib import commands, platformpull

    monkeypatch.setattr(platformpull, "workstation_store", lambda: commands.CONTAINERD_STORE)
    monkeypatch.setattr(platformpull, "pull", lambda *a: pytest.fail("pulled"))
    image = _local("reg.lab:5000/demo/web:1.0", AMD64)
    out = io.StringIO()
    assert platformpull.with_platforms((image,), [AMD64, ARM64], True, out) == (image,)
    assert "classic image store" in out.getvalue()
    monkeypatch.setattr(platformpull, "workstation_store", lambda: pytest.fail("asked"))
    assert platformpull.with_platforms((image,), [AMD64], True, out) == (image,)  # none needed


@pytest.mark.parametrize(
    ("output", "store"),
    [
        ('overlayfs [["driver-type","io.containerd.snapshotter.v1"]]', "containerd"),
        ('overlay2 [["Backing Filesystem","extfs"],["Supports d_type","true"]]', "classic"),
        ("", ""),
    ],
)
def test_workstation_store_from_docker_info(output: str, store: str) -> None:
    from distrib import commands

    assert commands.docker_store(output) == store


def test_private_tags_are_valid_and_distinct() -> None:
    from distrib import platformpull

    tags = {
        platformpull.private_tag(ImageRef.parse(ref), platform)
        for ref in ("reg.lab:5000/team/Web_App:1.0".lower(), "web", "web@sha256:" + "a" * 64)
        for platform in (ARM64, V7)
    }
    assert len(tags) == 6
    for tag in tags:
        assert ImageRef.parse(tag).name.startswith("distrib-platform/")
    assert platformpull.private_tag(ImageRef.parse("demo/web:1.0"), V7).endswith(
        ":1.0--linux-arm-v7"
    )


def test_local_load_is_asked_for_in_the_play(tmp_path: Path) -> None:
    docker_archive(tmp_path / "web.tar", [web()])
    book = tmp_path / "site.yaml"
    book.write_text("- hosts: all\n  images_from: web.tar\n")
    (play,) = Playbook.load(str(book)).plays
    assert play.local_load is False  # never by default
    book.write_text("- hosts: all\n  images_from: web.tar\n  local_load: yes please\n")
    with pytest.raises(ConfigError, match="site.yaml:3: local_load: must be true or false"):
        Playbook.load(str(book))
    book.write_text("- hosts: all\n  images_from: web.tar\n  local_load: true\n")
    (play,) = Playbook.load(str(book)).plays
    assert archived.local_images([play]) == {}  # loaded, then inspected like any local image


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"io.containerd.image.name": "docker.io/demo/web:1.0"}, ("demo/web:1.0",)),
        ({"org.opencontainers.image.ref.name": "reg.lab:5000/web:2"}, ("reg.lab:5000/web:2",)),
        ({"org.opencontainers.image.ref.name": "2"}, ()),  # a tag only
        ({"org.opencontainers.image.base.name": "docker.io/library/nginx:1.25"},  # zarf
         ("nginx:1.25",)),
        ({"io.containerd.image.name": "a/b:1", "org.opencontainers.image.ref.name": "c/d:2"},
         ("a/b:1",)),
        ({}, ()),
    ],
)  # fmt: skip
def test_names_from_index_annotations(
    annotations: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert imagearchive._names("x.tar", annotations) == expected
    if expected:
        return
    with pytest.raises(ConfigError, match="x.tar: annotation io.containerd.image.name"):
        imagearchive._names("x.tar", {"io.containerd.image.name": "Not A Ref"})


# -- any input: a result or a clear error, never a traceback (issue 19's habit) ------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_KEYS = ["manifests", "digest", "mediaType", "annotations", "config", "layers", "rootfs",
         "diff_ids", "Config", "RepoTags", "Layers", "architecture", "os", "variant",
         "io.containerd.image.name", "org.opencontainers.image.ref.name"]  # fmt: skip
_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20),
    st.sampled_from(["sha256:" + "a" * 64, "blobs/sha256/" + "a" * 64, "demo/web:1.0",
                     imagearchive.INDEX_TYPES[0], "amd64", "linux"]),
)  # fmt: skip
_JSON = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
_SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@_SETTINGS
@given(st.dictionaries(
    st.sampled_from(["index.json", "manifest.json", "blobs/sha256/" + "a" * 64, "x/layer.tar"]),
    _JSON, max_size=4,
))  # fmt: skip
def test_any_documents_give_images_or_a_config_error(docs: dict[str, object]) -> None:
    raw = {name: json.dumps(doc).encode() for name, doc in docs.items()}
    scanned = imagearchive.Scanned(
        {name: sha(data) for name, data in raw.items()}, {n: len(d) for n, d in raw.items()}, raw
    )
    try:
        imagearchive.catalogue("x.tar", scanned)
    except ConfigError as exc:
        assert str(exc).startswith("x.tar")


@_SETTINGS
@given(
    st.sampled_from([b"", b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00"]),
    st.binary(max_size=2048),
)
def test_any_bytes_give_images_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, magic: bytes, body: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "a.tar"
    data = magic + body
    if not magic:  # a tar header at 257, then garbage
        data = (body + b"\0" * 512)[:257] + b"ustar\x0000" + body
    path.write_bytes(data)
    try:
        imagearchive.read(str(path))
    except ConfigError as exc:
        assert str(path) in str(exc)


def test_an_archive_given_as_an_image_word_gets_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    docker_archive(tmp_path / "app.tar", [web()])
    assert archived.missing_hint(ImageRef.parse("app.tar")) == (
        "app.tar is an image archive: ship it with --images-from app.tar"
    )
    assert archived.missing_hint(ImageRef.parse("demo/web:1.0")) is None


@pytest.mark.parametrize(
    "data", [b"\x1f\x8b\x08", b"\x1f\x8b", b"\xfd7zXZ\x00\x00", b"\x28\xb5\x2f\xfd\x00"]
)
def test_a_cut_compressed_header_is_a_config_error(tmp_path: Path, data: bytes) -> None:
    # found by the property test: tarfile's own r|gz raised TypeError on a cut gzip header
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="cut.tar.gz: truncated or corrupt image archive"):
        imagearchive.read(str(path))
