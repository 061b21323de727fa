from __future__ import annotations

import pytest

from distrib.errors import ConfigError
from distrib.playbook import Playbook

GOOD = """\
- name: roll out the web tier
  hosts: web
  images: [demo/web:1.0, demo/worker:1.0]
  compression: gzip
  forks: 10
- hosts: [db, cache]
  images:
    - demo/db:2
  serial: [1, "50%"]
  max_fail_percentage: 25
  any_errors_fatal: true
  remote_tmp: /srv/tmp
  verify: false
  vars: {docker_command: sudo docker}
"""


def test_parses_plays_in_order() -> None:
    book = Playbook.from_text(GOOD, "site.yaml")
    first, second = book.plays
    assert first.name == "roll out the web tier"
    assert [str(i) for i in first.images] == ["demo/web:1.0", "demo/worker:1.0"]
    assert first.compression == "gzip" and first.forks == 10 and first.verify
    assert second.name == "play #2"
    assert second.hosts == "db,cache"
    assert second.serial == (1, "50%")
    assert second.max_fail_percentage == 25.0
    assert second.any_errors_fatal and not second.verify
    assert second.remote_tmp == "/srv/tmp"
    assert second.vars == {"docker_command": "sudo docker"}
    assert second.images[0].where.line == 8


def test_single_mapping_is_one_play() -> None:
    book = Playbook.from_text("hosts: all\nimages: busybox\n", "p.yaml")
    assert [str(i) for i in book.plays[0].images] == ["busybox:latest"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- hosts: a\n  images: [x]\n  forkz: 3\n", r"p.yaml:3: forkz: unknown key"),
        ("- hosts: a\n  images:\n    - ok\n    - 'a;b'\n", r"p.yaml:4: images: invalid image"),
        ("- hosts: a\n  images: [x]\n  forks: 0\n", r"p.yaml:3: forks: must be a whole number"),
        ("- hosts: a\n  images: [x]\n  forks: '3'\n", r"p.yaml:3: forks"),
        ("- hosts: a\n", r"p.yaml:1: play is missing required key 'images'"),
        ("- images: [x]\n", r"p.yaml:1: play is missing required key 'hosts'"),
        ("- hosts: a\n  images: []\n", r"p.yaml:2: images: must be a non-empty list"),
        ("- hosts: a\n  images: [x, x]\n", r"listed twice"),
        (
            "- hosts: a\n  images: [x]\n  compression: lz4\n",
            r"p.yaml:3: compression: must be one of",
        ),
        ("- hosts: a\n  images: [x]\n  serial: 10x\n", r"p.yaml:3: serial"),
        ("- hosts: a\n  images: [x]\n  serial: '0%'\n", r"percentage must be"),
        ("- hosts: a\n  images: [x]\n  max_fail_percentage: 101\n", r"max_fail_percentage"),
        ("- hosts: a\n  images: [x]\n  verify: yes please\n", r"verify: must be true or false"),
        ("- hosts: a\n  images: [x]\n  remote_tmp: tmp\n", r"absolute path"),
        ("- hosts: a\n  images: [x]\n  hosts: b\n", r"p.yaml:3: duplicate key 'hosts'"),
        ("- hosts: a\n  images: [x\n", r"p.yaml:\d+: invalid YAML"),
        ("", r"p.yaml:1: playbook is empty"),
        ("[]", r"playbook has no plays"),
        ("- 3\n", r"play #1 must be a mapping"),
        ("42\n", r"must be a list of plays"),
    ],
)
def test_errors_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Playbook.from_text(text, "p.yaml")


def test_missing_file_is_config_error(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Playbook.load("/nonexistent/playbook.yaml")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("delta: off", "off"),  # YAML 1.1 reads bare `off` as false: the README's spelling
        ("delta: 'off'", "off"),
        ("delta: no", "off"),  # the same false to YAML
        ("delta: auto", "auto"),
    ],
)
def test_documented_enum_spellings_yaml_reads_as_bools(line: str, expected: str) -> None:
    book = Playbook.from_text(f"- hosts: a\n  images: [x]\n  {line}\n", "p.yaml")
    assert book.plays[0].delta == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("delta: on", r"p.yaml:3: delta: must be one of auto, off, not True"),  # no `on` spelling
        ("delta: 0", r"p.yaml:3: delta: must be one of auto, off, not 0"),
        ("delta: [off]", r"p.yaml:3: delta: must be one of"),
        ("transfer: no", r"p.yaml:3: transfer: must be one of auto, staged, stream, not False"),
        ("fanout: yes", r"p.yaml:3: fanout: must be one of direct, relay, auto, not True"),
    ],
)
def test_other_bools_and_types_stay_errors(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Playbook.from_text(f"- hosts: a\n  images: [x]\n  {line}\n", "p.yaml")
