"""`distrib push` (issue 18): its targets from command-line words (pure), and one push to a
lab host by `root@ADDRESS` with no inventory (lab)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from distrib import cli
from distrib.adhoc import SshTarget, inventory_for, is_host, split_words
from distrib.errors import ConfigError
from tests.conftest import Lab, distrib, local_id

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("root@10.0.0.5", ("root", "10.0.0.5", None)),
        ("deploy@web1.example.com:2222", ("deploy", "web1.example.com", 2222)),
        ("me@[fe80::1]:22", ("me", "fe80::1", 22)),
        ("me@[::1]", ("me", "::1", None)),
        ("a@b@host", ("a@b", "host", None)),  # the last @ splits, as ssh does
    ],
)
def test_ssh_targets(word: str, expected: tuple[str, str, int | None]) -> None:
    target = SshTarget.parse(word)
    assert (target.user, target.address, target.port) == expected


@pytest.mark.parametrize("word", ["@host", "root@", "root@bad host", "root@h:70000", "x y@h"])
def test_bad_targets_name_the_word(word: str) -> None:
    with pytest.raises(ConfigError, match="not a"):
        SshTarget.parse(word)


@pytest.mark.parametrize(
    ("word", "host"),
    [
        ("root@10.0.0.5", True),
        ("demo/web:1.0", False),
        (f"demo/web@{DIGEST}", False),  # a digest's @ is an image's
        (f"registry:5000/app:1@{DIGEST}", False),
        ("root@10.0.0.5:2222", True),
    ],
)
def test_hosts_are_told_from_images(word: str, host: bool) -> None:
    assert is_host(word) is host


def test_split_keeps_the_order_and_needs_an_image() -> None:
    assert split_words(["a:1", "root@h1", "b:2", "root@h2"]) == (
        ["a:1", "b:2"],
        ["root@h1", "root@h2"],
    )
    with pytest.raises(ConfigError, match="no image to push"):
        split_words(["root@h1"])


def test_inventory_of_targets() -> None:
    inv = inventory_for(
        ["root@10.0.0.5", "ops@10.0.0.5:2222", "me@host-b"], known_hosts="/k", private_key="/id"
    )
    hosts = {h.name: dict(h.vars) for h in inv.select("all")}
    assert list(hosts) == ["10.0.0.5_22", "10.0.0.5_2222", "host-b"]
    assert hosts["10.0.0.5_2222"] == {
        "ansible_host": "10.0.0.5",
        "ansible_user": "ops",
        "ansible_port": 2222,
        "known_hosts": "/k",
        "ansible_ssh_private_key_file": "/id",
    }
    assert "known_hosts" not in inventory_for(["me@h"]).select("all")[0].vars  # ssh's default
    with pytest.raises(ConfigError, match="given twice"):
        inventory_for(["root@h", "root@h"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["push", "demo/x:1"], "no hosts to push to"),
        (["push", "demo/x:1", "root@h", "-i", "inv.yaml"], "without an inventory"),
        (["push", "demo/x:1", "root@h", "--serial", "10x"], "<command line>: serial: must be"),
        (["push", "demo/x:1", "root@h", "--remote-tmp", "tmp"], "remote_tmp: must be an absolute"),
    ],
)
def test_push_refuses_bad_input_before_connecting(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DISTRIB_INVENTORY", raising=False)
    monkeypatch.delenv("ANSIBLE_INVENTORY", raising=False)
    assert cli.main(argv) == 5
    assert message in capsys.readouterr().err


@pytest.mark.lab
def test_push_to_a_lab_host_by_user_at_address(lab: Lab, tmp_path: Path) -> None:
    image = "demo/web:1.0"
    lab.remove_images(image)
    data = yaml.safe_load(lab.inventory.read_text())
    settings = data["all"]["vars"]
    address = data["all"]["children"]["lab"]["hosts"]["node1"]["ansible_host"]
    target = f"root@{address}"
    keys = [
        "--known-hosts",
        settings["known_hosts"],
        "--private-key",
        settings["ansible_ssh_private_key_file"],
    ]
    env = {**os.environ, "DISTRIB_INVENTORY": "", "ANSIBLE_INVENTORY": ""}  # no inventory at all
    # without the lab's known_hosts the host key is unknown: refused, nothing shipped
    refused = distrib(
        "push",
        image,
        target,
        "--private-key",
        settings["ansible_ssh_private_key_file"],
        "--known-hosts",
        str(tmp_path / "empty_known_hosts"),
        env=env,
    )
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert lab.image_id("node1", image) is None
    junit = tmp_path / "push.xml"
    proc = distrib(
        "push",
        image,
        target,
        *keys,
        "--compression",
        "zstd",
        "--delta",
        "off",
        "--json",
        "--junit",
        str(junit),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["plays"][0]["hosts"][address]["status"] == "changed"
    assert f"changed: [{address}]" in proc.stderr and "PLAY RECAP" in proc.stderr
    assert lab.image_id("node1", image) == local_id(image)
    assert 'failures="0"' in junit.read_text()
    again = distrib("push", image, target, *keys, env=env)  # idempotent, as run
    assert again.returncode == 0 and f"ok: [{address}]" in again.stdout, again.stderr
