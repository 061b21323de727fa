"""ansible.cfg read like Ansible (issue 17): values compared with `ansible-config dump` itself;
the search order and the errors (file:line and key) checked directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from distrib import ansible_cfg
from distrib.errors import ConfigError

DATA = Path(__file__).parent / "data" / "ansible_cfg"
BIN = Path(sys.executable).parent
HAVE_ANSIBLE = (BIN / "ansible-config").exists()

# distrib's name -> ansible-core's (base config), or ("ssh", option) for the ssh plugin's view
ANSIBLE_NAMES: dict[str, Any] = {
    "inventory": "DEFAULT_HOST_LIST",
    "remote_user": "DEFAULT_REMOTE_USER",
    "remote_port": "DEFAULT_REMOTE_PORT",
    "private_key_file": "DEFAULT_PRIVATE_KEY_FILE",
    "forks": "DEFAULT_FORKS",
    "become": "DEFAULT_BECOME",
    "become_user": "DEFAULT_BECOME_USER",
    "become_method": "DEFAULT_BECOME_METHOD",
    "become_ask_pass": "DEFAULT_BECOME_ASK_PASS",
    "ask_pass": "DEFAULT_ASK_PASS",
    "vault_password_file": "DEFAULT_VAULT_PASSWORD_FILE",
    "host_key_checking": ("ssh", "host_key_checking"),
    "timeout": ("ssh", "timeout"),
}
CASES = {
    "full": ("full.cfg", {}),
    "full+env": (
        "full.cfg",
        {
            "ANSIBLE_REMOTE_USER": "envuser",
            "ANSIBLE_FORKS": "7",
            "ANSIBLE_SSH_TIMEOUT": "5",
            "ANSIBLE_HOST_KEY_CHECKING": "yes",
            "ANSIBLE_BECOME": "0",
        },
    ),
    "minimal": ("minimal.cfg", {}),
}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}


def _dump(name: str) -> dict[str, Any]:
    cfg, extra = CASES[name]
    env = {**_clean_env(), **extra, "ANSIBLE_CONFIG": str(DATA / cfg)}
    values: dict[str, Any] = {}
    for argv in (["--only-changed"], ["--only-changed", "-t", "connection"]):
        out = subprocess.run(
            [str(BIN / "ansible-config"), "dump", *argv, "--format", "json"],
            capture_output=True, text=True, env=env, check=True, timeout=60,
        ).stdout  # fmt: skip
        for entry in json.loads(out):
            if "name" in entry:
                values[entry["name"]] = entry["value"]
            for option in entry.get("ssh", []):
                values[("ssh", option["name"])] = option["value"]
    return values


@pytest.fixture(scope="module")
def dumps() -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(CASES, pool.map(_dump, CASES)))


@pytest.mark.skipif(not HAVE_ANSIBLE, reason="ansible-core is not installed in this venv")
@pytest.mark.parametrize("case", list(CASES))
def test_settings_like_ansible_config_dump(dumps: dict[str, dict[str, Any]], case: str) -> None:
    cfg, extra = CASES[case]
    env = {**_clean_env(), **extra, "ANSIBLE_CONFIG": str(DATA / cfg)}
    mine = ansible_cfg.load(env)
    assert mine.path == str(DATA / cfg)
    theirs = dumps[case]
    for name, ansible_name in ANSIBLE_NAMES.items():
        assert mine.get(name) == theirs.get(ansible_name), name


def test_host_defaults_and_origins() -> None:
    env = {"ANSIBLE_CONFIG": str(DATA / "full.cfg"), "ANSIBLE_REMOTE_USER": "envuser"}
    cfg = ansible_cfg.load(env)
    assert cfg.host_defaults() == {
        "ansible_user": "envuser",
        "ansible_port": 2222,
        "ansible_private_key_file": str(DATA / "keys" / "id_ed25519"),
        "ansible_host_key_checking": False,
        "ansible_timeout": 45,  # [ssh_connection] wins over [defaults]
        "ansible_become": True,
        "ansible_become_user": "app",
        "ansible_become_method": "sudo",
    }
    assert cfg.forks == 20
    assert cfg.inventory == [str(DATA / "inv" / "hosts.ini"), os.path.expanduser("~/other.yml")]
    assert cfg.settings["remote_user"].origin == "$ANSIBLE_REMOTE_USER"
    assert cfg.settings["forks"].origin == f"{DATA / 'full.cfg'}:7"


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(ansible_cfg, "SYSTEM_CONFIG", str(tmp_path / "etc-ansible.cfg"))
    assert ansible_cfg.find_config_file({}, str(work)) is None
    (tmp_path / "etc-ansible.cfg").write_text("[defaults]\n")
    assert ansible_cfg.find_config_file({}, str(work)) == str(tmp_path / "etc-ansible.cfg")
    (home / ".ansible.cfg").write_text("[defaults]\n")
    assert ansible_cfg.find_config_file({}, str(work)) == str(home / ".ansible.cfg")
    (work / "ansible.cfg").write_text("[defaults]\n")
    assert ansible_cfg.find_config_file({}, str(work)) == str(work / "ansible.cfg")
    work.chmod(0o777)  # a world-writable project dir is skipped, as Ansible does
    assert ansible_cfg.find_config_file({}, str(work)) == str(home / ".ansible.cfg")
    work.chmod(0o755)
    env = {"ANSIBLE_CONFIG": str(DATA)}  # a directory: its ansible.cfg (none here: skipped)
    assert ansible_cfg.find_config_file(env, str(work)) == str(work / "ansible.cfg")
    env = {"ANSIBLE_CONFIG": str(DATA / "minimal.cfg")}
    assert ansible_cfg.find_config_file(env, str(work)) == str(DATA / "minimal.cfg")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[defaults]\nforks = many\n", "ansible.cfg:2: [defaults] forks: must be an integer, got 'many'"),
        ("[privilege_escalation]\n\nbecome = perhaps\n", "ansible.cfg:3: [privilege_escalation] become: must be a boolean"),
        ("forks = 3\n", "ansible.cfg:1: invalid ansible.cfg: File contains no section headers"),
        ("[defaults]\nforks = 1\nforks = 2\n", "ansible.cfg:3: invalid ansible.cfg: While reading from"),
    ],
)
def test_errors_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ansible_cfg.parse(text, "ansible.cfg")
    assert str(info.value).startswith(message), str(info.value)


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"\$ANSIBLE_FORKS \(ANSIBLE_FORKS\): must be an integer"):
        ansible_cfg.parse("", None, {"ANSIBLE_FORKS": "x"})


def test_no_file_no_settings() -> None:
    cfg = ansible_cfg.parse("", None, {})
    assert cfg.settings == {} and cfg.host_defaults() == {} and cfg.forks is None


def test_cli_applies_ansible_cfg_and_playbook_vars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """distrib run: inventory, remote_user and forks from ./ansible.cfg; group_vars/ beside the
    playbook; a flag beats ansible.cfg, an inventory var beats both."""
    import argparse
    import dataclasses

    from distrib import api, cli_args
    from distrib.api import inputs
    from distrib.plan import make_plan
    from distrib.playbook import Playbook

    (tmp_path / "hosts.ini").write_text("[web]\nw1 ansible_host=10.9.0.1\nw2 ansible_user=own\n")
    (tmp_path / "pb" / "group_vars").mkdir(parents=True)
    (tmp_path / "pb" / "group_vars" / "web.yml").write_text("ansible_port: 2345\n")
    (tmp_path / "pb" / "site.yml").write_text("- hosts: web\n  images: [demo:1]\n")
    (tmp_path / "ansible.cfg").write_text(
        "[defaults]\ninventory = hosts.ini\nremote_user = cfguser\nforks = 3\n"
    )
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith(("ANSIBLE_", "DISTRIB_INVENTORY"))]:
        if name != "DISTRIB_INVENTORY_PARSER":
            monkeypatch.delenv(name)
    monkeypatch.setattr(inputs, "_cfg_cache", [])
    args = argparse.Namespace(
        inventory=None, playbook=str(tmp_path / "pb" / "site.yml"), forks=None, user=None
    )
    playbook = Playbook.load(args.playbook)
    read = api.Inputs(cli_args.options(args))
    plan = make_plan(
        read.inventory(), playbook, forks=read.forks(playbook), defaults=read.flag_defaults()
    )
    w1, w2 = (h.target for h in plan.plays[0].hosts)
    assert (w1.address, w1.port, w1.user) == ("10.9.0.1", 2345, "cfguser")
    assert w2.user == "own"
    assert plan.plays[0].forks == 3
    read = api.Inputs(dataclasses.replace(read.options, user="flaguser", forks=9))
    assert read.flag_defaults()["ansible_user"] == "flaguser"
    assert read.forks(playbook) == 9
