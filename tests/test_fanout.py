"""`fanout: auto` (issue 16): the rule from a table, the rate parser, the play keys."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from distrib.errors import ConfigError
from distrib.playbook import Playbook
from distrib.relay import fanout

MB = 1_000_000


@pytest.mark.parametrize(
    ("payload", "hosts", "uplink", "expected"),
    [
        # small image on a LAN-class link: the tree's setup costs more than it saves
        (4 * MB, 32, "1gbit", "direct"),  # 4 MB × 31 ÷ 125 MB/s = 1.0 s ≤ 5 s
        (4 * MB, 4, "200mbit", "direct"),  # 0.5 s
        (4 * MB, 32, "200mbit", "direct"),  # 5.0 s: the bench's 32-host case, where direct won
        (4 * MB, 64, "200mbit", "relay"),  # 10.1 s > 5 s
        (4 * MB, 64, "50mbit", "relay"),
        # a medium image pays from 2 hosts on a slow uplink, from 6 on a gigabit one
        (100 * MB, 2, "100mbit", "relay"),  # 8.0 s
        (100 * MB, 2, "1gbit", "direct"),  # 0.8 s
        (100 * MB, 6, "1gbit", "direct"),  # 4.0 s
        (100 * MB, 8, "1gbit", "relay"),  # 5.6 s
        # one host: nothing to relay, whatever the payload
        (10_000 * MB, 1, "1mbit", "direct"),
        (10_000 * MB, 0, "1mbit", "direct"),
        # at the threshold exactly: direct (the tree must pay, not break even)
        (125 * MB, 2, "200mbit", "direct"),  # 5.0 s
    ],
)
def test_choose_from_a_table(payload: int, hosts: int, uplink: str, expected: str) -> None:
    choice = fanout.choose(payload, hosts, fanout.parse_rate(uplink))
    assert choice.fanout == expected
    assert ("cannot pay" in choice.reason) == (expected == "direct" and hosts >= 2)


def test_reason_shows_the_numbers() -> None:
    choice = fanout.choose(4 * MB, 64, fanout.parse_rate("200mbit"))
    assert choice.reason == (
        "4.0 MB × 63 more hosts ÷ 200mbit = 10.1s of uplink saved > 5s relay setup"
    )


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [("200mbit", 25e6), ("1gbit", 125e6), ("500kbit", 62_500), ("8", 1), ("1.5Gbit", 187.5e6)],
)
def test_parse_rate(text: str, bytes_per_s: float) -> None:
    assert fanout.parse_rate(text) == bytes_per_s


@pytest.mark.parametrize("text", ["", "fast", "0mbit", "-3mbit", "200mb/s", "1tbit"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a link rate"):
        fanout.parse_rate(text)


def test_for_play_keeps_explicit_fanouts_and_names_an_assumed_uplink() -> None:
    relay = SimpleNamespace(fanout="relay", uplink=None)
    assert fanout.for_play(relay, 1, 1).fanout == "relay"
    assert fanout.for_play(SimpleNamespace(fanout="direct"), 64, 10**9).fanout == "direct"
    auto = fanout.for_play(SimpleNamespace(fanout="auto", uplink=None), 64, 4 * MB)
    assert auto.fanout == "direct" and "uplink assumed" in auto.reason
    shaped = fanout.for_play(SimpleNamespace(fanout="auto", uplink="200mbit"), 64, 4 * MB)
    assert shaped.fanout == "relay" and "assumed" not in shaped.reason


def test_payload_bytes_estimated_from_images_else_archive() -> None:
    archive = SimpleNamespace(size_hint=1234)
    images = [SimpleNamespace(size=6_000), SimpleNamespace(size=4_000)]
    job = SimpleNamespace(archive=None, images=images, codec="gzip")
    assert fanout.payload_bytes(job) == 3_500  # compressed: 0.35 of the images
    assert fanout.payload_bytes(SimpleNamespace(archive=archive, images=images)) == 3_500
    assert fanout.payload_bytes(SimpleNamespace(images=images, codec="none")) == 10_000
    assert fanout.payload_bytes(SimpleNamespace(archive=archive, images=())) == 1234


@pytest.mark.parametrize(
    ("image_mb", "hosts", "expected"),
    # bench/scale.py's cases at 200 mbit/s: demo/web (6.2 MB, 2.16 MB sent), where direct was
    # faster at 8, 16 and 32 hosts; demo/medium (103 MB, 33.9 MB sent) where relay was faster
    [(6.2, 8, "direct"), (6.2, 16, "direct"), (6.2, 32, "direct"), (103, 16, "relay")],
)
def test_bench_cases(image_mb: float, hosts: int, expected: str) -> None:
    job = SimpleNamespace(images=[SimpleNamespace(size=int(image_mb * MB))], codec="gzip")
    play = SimpleNamespace(fanout="auto", uplink="200mbit")
    assert fanout.for_play(play, hosts, fanout.payload_bytes(job)).fanout == expected


def test_playbook_keys() -> None:
    play = Playbook.from_text(
        "- hosts: all\n  images: [a:1]\n  fanout: auto\n  uplink: 200mbit\n  relay_roots: 2\n",
        "b.yaml",
    ).plays[0]
    assert (play.fanout, play.uplink, play.relay_roots) == ("auto", "200mbit", 2)
    default = Playbook.from_text("- hosts: all\n  images: [a:1]\n  fanout: relay\n").plays[0]
    assert (default.relay_roots, default.uplink) == (1, None)
    for bad, key in (("uplink: fast", "uplink"), ("relay_roots: 0", "relay_roots")):
        with pytest.raises(ConfigError) as err:
            Playbook.from_text(f"- hosts: all\n  images: [a:1]\n  {bad}\n", "b.yaml")
        assert "b.yaml:3" in str(err.value) and key in str(err.value)
    with pytest.raises(ConfigError, match="keep"):
        Playbook.from_text("- hosts: all\n  images: [a:1]\n  fanout: auto\n  keep: 2\n", "b.yaml")
