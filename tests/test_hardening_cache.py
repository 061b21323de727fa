"""Issue 19: a corrupt workstation cache entry (a cached archive, a layer-store blob or
config) is caught as it is read for a host, removed, rebuilt, and that host retries once in
the same run: the run succeeds and the host's line names the bad entry. Engine against fake
hosts, `docker save` from a stand-in (tests/test_layerstore.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distrib import archive as archives
from distrib.archive import Archive
from distrib.engine import CHANGED, FAILED, Job, deploy
from distrib.layerstore import LayerStore
from tests.fakes import FakeFleet, FakeHost
from tests.fakes import loads as fake_loads
from tests.test_engine import host
from tests.test_layerstore import docker_saving, fake_save, layer  # noqa: F401 (a fixture)

REBUILT = "rebuilt on the workstation and sent again: "


def flip(path: str | Path) -> None:
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def saves(calls: Path) -> int:
    return calls.read_text().count("x") if calls.exists() else 0


@pytest.fixture
def stored(
    tmp_path: Path,
    docker_saving: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[LayerStore, archives.LocalImage]:
    image, save = fake_save(tmp_path, [layer(5000, "base"), layer(3000, "lib"), layer(700, "app")])
    monkeypatch.setenv("FAKE_SAVE", str(save))
    monkeypatch.setenv("DISTRIB_CACHE_DIR", str(tmp_path / "cache"))
    store = LayerStore(str(tmp_path / "cache"))
    store.ensure([image])
    return store, image


@pytest.mark.parametrize("step_bytes", [None, 1], ids=["whole", "steps"])
def test_a_corrupt_blob_is_stored_again_and_the_host_retries(
    stored: tuple[LayerStore, archives.LocalImage], docker_saving: Path, step_bytes: int | None  # noqa: F811
) -> None:
    store, image = stored
    if step_bytes:
        store.step_bytes = step_bytes  # every layer its own loading step
    blob = store.blob(image.diff_ids[1])
    assert blob is not None
    flip(blob.path)
    h = FakeHost("a", archive_images={"demo/x:1": image.id})
    result = deploy(host("a"), Job((image,), None, store=store), FakeFleet(h))
    assert result.status == CHANGED, result.message
    assert REBUILT in result.message
    assert f"the layer store's blob of {image.diff_ids[1][:19]} is corrupt" in result.message
    assert saves(docker_saving) == 2, "stored again: one more docker save"
    assert store.has(image) and h.images == {"demo/x:1": image.id}
    assert not h.files and not h.dirs, "nothing left of the first attempt"


def test_a_corrupt_config_is_stored_again_and_the_host_retries(
    stored: tuple[LayerStore, archives.LocalImage], docker_saving: Path  # noqa: F811
) -> None:
    store, image = stored
    Path(store.config_path(image.id)).write_bytes(b'{"os":"linux"}')
    h = FakeHost("a", archive_images={"demo/x:1": image.id})
    result = deploy(host("a"), Job((image,), None, store=store), FakeFleet(h))
    assert result.status == CHANGED, result.message
    assert f"{REBUILT}the layer store's config of demo/x:1 is corrupt" in result.message
    assert saves(docker_saving) == 2


def test_an_entry_corrupt_again_after_the_rebuild_fails_the_host(
    stored: tuple[LayerStore, archives.LocalImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One retry only: a store that cannot hold a good copy is a failure, never a loop."""
    store, image = stored
    blob = store.blob(image.diff_ids[0])
    assert blob is not None
    flip(blob.path)
    ensure = store.ensure

    def ensure_then_spoil(images: object, abort: object = None) -> int:
        added = ensure(images, abort)  # type: ignore[arg-type]
        flip(store.blob_path(image.diff_ids[0]))
        return added

    monkeypatch.setattr(store, "ensure", ensure_then_spoil)
    h = FakeHost("a", archive_images={"demo/x:1": image.id})
    result = deploy(host("a"), Job((image,), None, store=store), FakeFleet(h))
    assert result.status == FAILED
    assert "is corrupt" in result.message and not fake_loads(h.log)


def cached_archive(store: tuple[LayerStore, archives.LocalImage], tmp_path: Path) -> Archive:
    _, image = store
    built = archives.prepare([image], "gzip", directory=str(tmp_path / "cache"))
    built.wait()
    flip(built.path)
    found = archives.find_cached([image], "gzip", directory=str(tmp_path / "cache"))
    assert found is not None and found.cached
    return found


def test_a_corrupt_cached_archive_is_rebuilt_and_the_host_retries(
    stored: tuple[LayerStore, archives.LocalImage], tmp_path: Path, docker_saving: Path  # noqa: F811
) -> None:
    _, image = stored
    archive = cached_archive(stored, tmp_path)
    before = saves(docker_saving)
    h = FakeHost("a", archive_images={"demo/x:1": image.id})
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED, result.message
    assert f"{REBUILT}the archive {archive.path} does not match its record" in result.message
    assert saves(docker_saving) == before + 1
    again = archives.find_cached([image], "gzip", directory=str(tmp_path / "cache"))
    assert again is not None and again.sha256 == archive.sha256, "the new entry is recorded"
    assert b"".join(again.chunks()) == Path(archive.path).read_bytes()


def test_hosts_sharing_a_corrupt_archive_share_one_rebuild(
    stored: tuple[LayerStore, archives.LocalImage], tmp_path: Path, docker_saving: Path  # noqa: F811
) -> None:
    from distrib.executor import run_plan
    from distrib.inventory import Inventory
    from distrib.plan import make_plan
    from distrib.playbook import Playbook

    _, image = stored
    archive = cached_archive(stored, tmp_path)
    before = saves(docker_saving)
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("all:\n  hosts:\n    a: {}\n    b: {}\n    c: {}\n")
    plan = make_plan(
        Inventory.load([str(inventory)]), Playbook.from_text("- hosts: all\n  images: [demo/x:1]\n")
    )
    fleet = FakeFleet(*(FakeHost(n, archive_images={"demo/x:1": image.id}) for n in "abc"))
    run = run_plan(plan, {0: Job.deploy(archive)}, fleet)
    results = run.plays[0].hosts
    assert [r.status for r in results] == [CHANGED] * 3, [r.message for r in results]
    assert any(REBUILT in r.message for r in results)
    assert saves(docker_saving) == before + 1, "one rebuild for every host that hit it"


def test_a_corrupt_file_outside_the_cache_is_not_rebuilt(
    stored: tuple[LayerStore, archives.LocalImage], tmp_path: Path
) -> None:
    """A backup given by path is reported, never rebuilt nor removed (it is the only copy)."""
    _, image = stored
    backup = tmp_path / "web.tar.gz"
    backup.write_bytes(b"x" * 1000)
    archive = Archive(str(backup), "gzip", 6, 1000, "0" * 64, [image], cached=True)
    h = FakeHost("a", archive_images={"demo/x:1": image.id})
    result = deploy(host("a"), Job.deploy(archive), FakeFleet(h))
    assert result.status == FAILED and "does not match its record" in result.message
    assert REBUILT not in result.message and backup.exists()


def test_a_blob_removed_under_a_reader_is_a_corrupt_entry_not_a_lost_link(
    stored: tuple[LayerStore, archives.LocalImage],
) -> None:
    """Another host's reader found the blob corrupt and removed it just before this one
    opened it: this host rebuilds and retries too (it was "connection lost": an OSError
    from the archive's reader looked like the link's)."""
    from distrib.errors import CorruptEntry

    store, image = stored
    archive = store.assemble([image])
    blob = store.blob(image.diff_ids[0])
    assert blob is not None
    Path(blob.path).unlink()
    with pytest.raises(CorruptEntry, match="was removed as it was about to be read"):
        b"".join(archive.chunks())


def test_hosts_sharing_a_corrupt_blob_all_succeed(
    stored: tuple[LayerStore, archives.LocalImage], tmp_path: Path, docker_saving: Path  # noqa: F811
) -> None:
    from distrib.executor import run_plan
    from distrib.inventory import Inventory
    from distrib.plan import make_plan
    from distrib.playbook import Playbook

    store, image = stored
    blob = store.blob(image.diff_ids[0])
    assert blob is not None
    flip(blob.path)
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("all:\n  hosts:\n" + "".join(f"    {n}: {{}}\n" for n in "abcdef"))
    plan = make_plan(
        Inventory.load([str(inventory)]), Playbook.from_text("- hosts: all\n  images: [demo/x:1]\n")
    )
    fleet = FakeFleet(*(FakeHost(n, archive_images={"demo/x:1": image.id}) for n in "abcdef"))
    run = run_plan(plan, {0: Job((image,), None, store=store)}, fleet)
    results = run.plays[0].hosts
    assert [r.status for r in results] == [CHANGED] * 6, [r.message for r in results]
    assert store.has(image)


def test_a_host_that_asks_after_another_found_the_archive_corrupt_rebuilds_too(
    stored: tuple[LayerStore, archives.LocalImage], tmp_path: Path, docker_saving: Path  # noqa: F811
) -> None:
    """Seen in CI: host B asked the archive's size/sha256 after host A's read had found it
    corrupt and before A restarted the build; B got "building the archive failed" and
    failed. Whoever asks then is told it is a corrupt entry, rebuilds (or joins the rebuild)
    and retries."""
    from distrib.errors import CorruptEntry

    _, image = stored
    archive = cached_archive(stored, tmp_path)
    with pytest.raises(CorruptEntry):
        b"".join(archive.chunks())  # host A's read finds it
    with pytest.raises(CorruptEntry):
        archive.wait()  # host B, before anyone rebuilt it
    h = FakeHost("b", archive_images={"demo/x:1": image.id})
    result = deploy(host("b"), Job.deploy(archive), FakeFleet(h))
    assert result.status == CHANGED, result.message
    assert REBUILT in result.message
