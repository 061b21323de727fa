"""The planner is pure: inventory-like + playbook -> plan, no connections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from distrib.errors import ConfigError
from distrib.plan import (
    STOP_ALL_FAILED,
    STOP_LIMIT,
    STOP_NONE,
    batch_sizes,
    batch_verdict,
    make_plan,
)
from distrib.playbook import Playbook


@dataclass(frozen=True)
class H:
    name: str
    vars: Mapping[str, Any] = field(default_factory=dict)
    source: str = "inv.yaml:1"


class Inv:
    def __init__(self, *hosts: H) -> None:
        self.hosts = hosts

    def select(self, pattern: str, limit: str | None = None) -> Sequence[H]:
        chosen = [h for h in self.hosts if pattern in ("all", h.name)]
        if limit:
            chosen = [h for h in chosen if h.name in limit.split(",")]
        if not chosen:
            raise ConfigError(f"pattern {pattern!r} matches no host")
        return chosen


@pytest.mark.parametrize(
    ("total", "serial", "sizes"),
    [
        (10, [], [10]),
        (10, [3], [3, 3, 3, 1]),
        (10, ["30%"], [3, 3, 3, 1]),
        (10, [1, "50%"], [1, 5, 4]),
        (3, ["10%"], [1, 1, 1]),  # a batch has at least one host
        (7, [1, 2], [1, 2, 2, 2]),  # the last entry repeats
        (4, [0], [4]),
        (0, [2], []),
        (5, [10], [5]),
    ],
)
def test_batch_sizes_like_ansible(total: int, serial: list[int | str], sizes: list[int]) -> None:
    assert batch_sizes(total, serial) == sizes


@pytest.mark.parametrize(
    ("failed", "size", "pct", "fatal", "verdict"),
    [
        (0, 4, None, False, STOP_NONE),
        (1, 4, None, False, STOP_NONE),
        (4, 4, None, False, STOP_ALL_FAILED),  # whole batch failed: stop, but not exit 8
        (1, 4, 25, False, STOP_NONE),  # the percentage must be EXCEEDED
        (2, 4, 25, False, STOP_LIMIT),
        (1, 4, 0, False, STOP_LIMIT),
        (1, 10, None, True, STOP_LIMIT),
    ],
)
def test_failure_limit(
    failed: int, size: int, pct: float | None, fatal: bool, verdict: str
) -> None:
    assert batch_verdict(failed, size, pct, fatal) == verdict


def test_host_settings_with_play_vars_overriding_inventory() -> None:
    inv = Inv(
        H(
            "n1",
            {
                "ansible_host": "10.0.0.1",
                "ansible_port": "2222",
                "ansible_user": "ops",
                "ansible_ssh_private_key_file": "~/k",
                "known_hosts": "/kh",
                "remote_tmp": "/data/tmp",
            },
        ),
        H("n2", {"docker_command": "sudo -n docker"}),
    )
    book = Playbook.from_text(
        "hosts: all\nimages: [x]\nforks: 3\nvars: {connect_timeout: 5}\n", "p.yaml"
    )
    plan = make_plan(inv, book)
    n1, n2 = plan.plays[0].hosts
    assert n1.target.address == "10.0.0.1" and n1.target.port == 2222
    assert n1.target.user == "ops" and n1.target.key_file == "~/k"
    assert n1.target.known_hosts == "/kh" and n1.target.host_key_checking == "yes"
    assert n1.target.connect_timeout == 5.0
    assert n1.remote_tmp == "/data/tmp"
    assert n2.target.address == "n2" and n2.target.port == 22
    assert n2.docker == ("sudo", "-n", "docker")
    assert n2.remote_tmp == "/var/tmp"
    assert plan.plays[0].forks == 3


def test_limit_and_forks_override() -> None:
    plan = make_plan(
        Inv(H("a"), H("b")), Playbook.from_text("hosts: all\nimages: [x]\n"), limit="b", forks=7
    )
    assert [h.name for h in plan.plays[0].hosts] == ["b"]
    assert plan.plays[0].forks == 7


@pytest.mark.parametrize(
    ("vars", "message"),
    [
        ({"ansible_port": "ssh"}, "ansible_port: not a port number"),
        ({"ansible_port": 70000}, "ansible_port: not a port number"),
        ({"host_key_checking": "maybe"}, "host_key_checking: must be one of"),
        ({"remote_tmp": "tmp"}, "remote_tmp: must be an absolute path"),
        ({"connect_timeout": "soon"}, "connect_timeout"),
    ],
)
def test_bad_host_vars_name_the_host_and_source(vars: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"host 'a' \\(defined at inv.yaml:1\\): {message}"):
        make_plan(Inv(H("a", vars)), Playbook.from_text("hosts: all\nimages: [x]\n"))


def test_pattern_matching_nothing_names_play_file_and_line() -> None:
    book = Playbook.from_text(
        "- hosts: all\n  images: [x]\n- hosts: nope\n  images: [x]\n", "p.yaml"
    )
    with pytest.raises(ConfigError, match=r"p.yaml:3: .*'nope' matches no host"):
        make_plan(Inv(H("a")), book)


def test_ansible_host_key_checking_bool() -> None:
    plan = make_plan(
        Inv(H("a", {"ansible_host_key_checking": False})),
        Playbook.from_text("hosts: all\nimages: [x]\n"),
    )
    assert plan.plays[0].hosts[0].target.host_key_checking == "off"
