"""Keeping hosts tidy (issue 18, item 4): the listing parsers from real engine outputs
(captured on the lab: docker 20.10, podman 4.3, containerd 1.6) and the pure decisions."""

from __future__ import annotations

import pytest

from distrib import cli, engines, tidy
from distrib.errors import ConfigError
from distrib.playbook import Playbook, adhoc_play

DOCKER = (
    "I\tsha256:1e25b4ea3a6f74fc2788b48a89d224790d91ac8a5b0aedfe72e8d91df0c32623\t"
    '2026-12-02T05:21:01.68386442Z\t["tidytest/app:2"]\n'
    "I\tsha256:5946df151efee7e4630c3f432f68bb81f9ed2ded05d3e50b8ffcf385f62157d7\t"
    '2026-12-02T05:21:00.339157127Z\t["tidytest/app:1"]\n'
    "I\tsha256:d8122f4a983bc66b2d3ece5f7a73e8b9ec39f2431450a987d1f45c3b83490ba0\t"
    '2026-12-02T05:21:02.928758498Z\t["tidytest/app:3","tidytest/app:latest"]\n'
    "I\tsha256:9cf82d16ac7b0000000000000000000000000000000000000000000000000000\t"
    "2026-12-02T04:00:00Z\t[]\n"
    "C\tsha256:5946df151efee7e4630c3f432f68bb81f9ed2ded05d3e50b8ffcf385f62157d7\n"
)
PODMAN = (
    "I\t1e25b4ea3a6f74fc2788b48a89d224790d91ac8a5b0aedfe72e8d91df0c32623\t"
    '2026-12-02 05:21:01.68386442 +0000 UTC\t["localhost/tidytest/app:2"]\n'
    "I\t5946df151efee7e4630c3f432f68bb81f9ed2ded05d3e50b8ffcf385f62157d7\t"
    '2026-12-02 05:21:00.339157127 +0000 UTC\t["localhost/tidytest/app:1"]\n'
    "I\td8122f4a983bc66b2d3ece5f7a73e8b9ec39f2431450a987d1f45c3b83490ba0\t"
    '2026-12-02 05:21:02.928758498 +0000 UTC\t["localhost/tidytest/app:3"]\n'
    "C\t5946df151efee7e4630c3f432f68bb81f9ed2ded05d3e50b8ffcf385f62157d7\n"
)
M = "application/vnd.docker.distribution.manifest.v2+json"
CTR = f"""REF                      TYPE                                                 DIGEST                                                                  SIZE    PLATFORMS   LABELS 
docker.io/tidytest/app:1 {M} sha256:53c0977e476ee7b20783f133e82256a03e20938c1ef2bb2d9107dd09789727f1 2.0 MiB linux/amd64 io.cri-containerd.pinned=pinned 
docker.io/tidytest/app:2 {M} sha256:87e93342df776e18fca519879da611b0a383a4b0be878b65a6413c0d5b6ca176 2.0 MiB linux/amd64 -      
docker.io/tidytest/app:3 {M} sha256:82cdcb858187b9b05093ee9a2e2ffabe3ac5f54910aa83f8c2b1a2d244859434 2.0 MiB linux/amd64 -      
--containers--
CONTAINER    IMAGE                       RUNTIME                  
c1           docker.io/tidytest/app:1    io.containerd.runc.v2    
"""  # noqa: W291 (ctr pads its columns)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-02T05:21:01.5Z", 1796188861.5),
        ("2026-12-02 05:21:01.5 +0000 UTC", 1796188861.5),
        ("2026-12-02T07:21:01+02:00", 1796188861.0),
        ("2026-12-02T05:21:01.000000000Z", 1796188861.0),
        ("", 0.0),
        ("yesterday", 0.0),
    ],
)
def test_parse_created(text: str, expected: float) -> None:
    assert tidy.parse_created(text) == pytest.approx(expected)


@pytest.mark.parametrize(("text", "prefix"), [(DOCKER, ""), (PODMAN, "localhost/")])
def test_parse_listing_docker_and_podman(text: str, prefix: str) -> None:
    held = tidy.parse_listing(text)
    names = sorted(t.name for t in held.tags)
    assert f"{prefix}tidytest/app:1" in names and f"{prefix}tidytest/app:3" in names
    assert all(t.repo == f"{prefix}tidytest/app" for t in held.tags)
    assert all(t.image.startswith("sha256:") for t in held.tags)
    assert held.in_use == {
        "sha256:5946df151efee7e4630c3f432f68bb81f9ed2ded05d3e50b8ffcf385f62157d7"
    }
    one = held.get(f"{prefix}tidytest/app:1")
    assert one is not None and one.created < held.get(f"{prefix}tidytest/app:2").created  # type: ignore[union-attr]


def test_parse_ctr_listing() -> None:
    targets, used = tidy.parse_ctr_listing(CTR)
    assert used == {"docker.io/tidytest/app:1"}
    held = tidy.ctr_host_images(targets, used, {targets["docker.io/tidytest/app:3"][0]: 3.0})
    assert held.get("docker.io/tidytest/app:3").created == 3.0  # type: ignore[union-attr]
    assert held.in_use == {targets["docker.io/tidytest/app:1"][0]}
    assert tidy.config_created(b'{"created": "2026-12-02T05:21:01Z"}') == 1796188861.0
    assert tidy.config_created(b"not json") == 0.0


@pytest.mark.parametrize(
    ("kind", "repo", "stored"),
    [
        ("docker", "tidytest/app", "tidytest/app"),
        ("podman", "tidytest/app", "localhost/tidytest/app"),
        ("containerd", "tidytest/app", "docker.io/tidytest/app"),
        ("containerd", "app", "docker.io/library/app"),
        ("containerd", "reg:5000/app", "reg:5000/app"),
    ],
)
def test_stored_repo(kind: str, repo: str, stored: str) -> None:
    assert tidy.stored_repo(kind, repo) == stored
    assert tidy.split_name(f"{stored}:1") == (stored, "1")


def _host(*tags: tuple[str, str, float], used: tuple[str, ...] = ()) -> tidy.HostImages:
    return tidy.HostImages(
        tuple(tidy.Tagged(f"app:{t}", "app", t, image, created) for t, image, created in tags),
        frozenset(used),
    )


def test_keep_removes_the_oldest_beyond_n() -> None:
    host = _host(("1", "a", 1), ("2", "b", 2), ("3", "c", 3), ("4", "d", 4))
    decided = tidy.plan_removals(host, "app", 2, shipped=["app:4"])
    assert [t.tag for t in decided.kept] == ["4", "3"]
    assert [t.tag for t in decided.remove] == ["2", "1"]


def test_keep_never_removes_what_a_container_uses_nor_the_shipped_image() -> None:
    host = _host(("1", "a", 1), ("2", "b", 2), ("old", "z", 0), ("3", "c", 3), used=("a",))
    # `old` is the image just shipped (an old version rolled out again): kept beyond N
    decided = tidy.plan_removals(host, "app", 1, shipped=["app:old"])
    assert [t.tag for t in decided.remove] == ["2"]
    assert {(t.tag, why) for t, why in decided.spared} == {("1", "used by a container")}
    assert {t.tag for t in decided.kept} == {"3", "old"}


def test_keep_spares_other_names_of_the_shipped_image_and_ranks_ties_by_tag() -> None:
    host = _host(("latest", "c", 3), ("3", "c", 3), ("2", "b", 3))
    decided = tidy.plan_removals(host, "app", 1, shipped=["app:latest"])
    assert [t.tag for t in decided.kept] == ["latest"]
    assert [t.tag for t in decided.remove] == ["2"]
    assert [(t.tag, why) for t, why in decided.spared] == [("3", "same image as one just shipped")]


def test_prev_tags_do_not_count_and_go_with_their_tag() -> None:
    host = _host(
        ("1", "a", 1), ("distrib-prev-1", "z", 0), ("2", "b", 2), ("distrib-prev-2", "y", 0)
    )
    decided = tidy.plan_removals(host, "app", 1)
    assert [t.tag for t in decided.kept] == ["2"]
    assert sorted(t.tag for t in decided.remove) == ["1", "distrib-prev-1"]


def test_previous_version_rule() -> None:
    host = _host(("1", "a", 1), ("2", "b", 2), ("3", "c", 3), ("latest", "c", 3))
    assert tidy.previous_version(host, "app:3").tag == "2"  # most recent older tag
    assert tidy.previous_version(host, "app:latest").tag == "2"  # same image is not a version
    assert tidy.previous_version(host, "app:3", to="1").tag == "1"
    recorded = _host(("1", "a", 1), ("3", "c", 3), ("distrib-prev-3", "b", 2))
    assert tidy.previous_version(recorded, "app:3").tag == "distrib-prev-3"
    with pytest.raises(tidy.NoPrevious, match="no previous version of app:1"):
        tidy.previous_version(host, "app:1")
    with pytest.raises(tidy.NoPrevious, match="app:9 is not on this host"):
        tidy.previous_version(host, "app:3", to="9")
    with pytest.raises(tidy.NoPrevious, match="--to"):
        tidy.previous_version(host, "app:7")


@pytest.mark.parametrize(
    ("stdout", "removed", "failed"),
    [
        ("removed\tapp:1\nremoved\tapp:2\n", ["app:1", "app:2"], {}),
        (
            "removed\tapp:1\nfailed\tapp:2\tError response from daemon: conflict: unable to "
            "remove repository reference \"app:2\" (must force) - container 1 is using its "
            "referenced image\n",
            ["app:1"],
            {"app:2": 'Error response from daemon: conflict: unable to remove repository '
             'reference "app:2" (must force) - container 1 is using its referenced image'},
        ),
        ("failed\tapp:3\t\n", [], {"app:3": "refused"}),
    ],
)  # fmt: skip
def test_parse_removal(stdout: str, removed: list[str], failed: dict[str, str]) -> None:
    assert tidy.parse_removal(stdout) == (removed, failed)


def test_commands_quote_names_and_never_force() -> None:
    rm = tidy.removal("docker", ["sudo -n docker"], ["app:1"])
    assert "'sudo -n docker' rmi app:1" in rm and " -f" not in rm
    assert "ctr -n k8s.io images rm docker.io/x/app:1" in tidy.removal(
        "containerd", ["ctr", "-n", "k8s.io"], ["docker.io/x/app:1"]
    )
    back = tidy.repoint("containerd", ["ctr", "-n", "k8s.io"], "docker.io/x/a:1", "docker.io/x/a:0")
    assert back.index("a:distrib-swap-1") < back.index(
        "tag --force docker.io/x/a:0 docker.io/x/a:1"
    )
    assert engines.PINNED in back


def test_containerd_import_is_pinned() -> None:
    ctr = engines.Engine(engines.CONTAINERD, ("ctr",))
    for script in (ctr.load_from_stdin(), ctr.load("/t/a.tar", "none", True, ())):
        assert "images import" in script
        assert 'ctr -n k8s.io images label "$n" io.cri-containerd.pinned=pinned' in script
    assert "label" not in engines.Engine(engines.DOCKER).load_from_stdin()


def test_keep_in_playbooks_and_push() -> None:
    book = Playbook.from_text("- hosts: all\n  images: [app:1]\n  keep: 3\n", "p.yaml")
    assert book.plays[0].keep == 3
    assert Playbook.from_text("- hosts: all\n  images: [app:1]\n", "p.yaml").plays[0].keep is None
    with pytest.raises(ConfigError, match="p.yaml:3.*keep.*needs verify"):
        Playbook.from_text(
            "- hosts: all\n  images: [app:1]\n  keep: 2\n  verify: false\n", "p.yaml"
        )
    with pytest.raises(ConfigError, match="whole number from 1"):
        Playbook.from_text("- hosts: all\n  images: [app:1]\n  keep: 0\n", "p.yaml")
    with pytest.raises(ConfigError, match="relay"):
        adhoc_play("all", ["app:1"], keep=2, fanout="relay")
    assert adhoc_play("all", ["app:1"], keep=2).keep == 2


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["prune", "app", "--keep", "0"], "--keep must be at least 1"),
        (["prune", "app:1", "--keep", "2"], "name a repository, without a tag"),
        (["rollback", "app"], "name the tag to roll back"),
        (["rollback", "app:1", "--to", "Bad Tag"], "--to 'Bad Tag'"),
    ],
)
def test_tidy_commands_refuse_bad_input_before_connecting(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*argv, "-i", "nowhere.yaml"]) == 5
    assert words in capsys.readouterr().err
