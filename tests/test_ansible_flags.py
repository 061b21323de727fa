"""Flags Ansible users type (issue 17, items 3, 4 and 6), without hosts: -e/--extra-vars and the
precedence of vars, -u/--private-key/-T/-b/--become-user, unmatched patterns (warning, or an
error with --strict), --list-hosts, --syntax-check, password vars held as secrets,
`ansible_connection: local`, and the layout of `--json-format ansible`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from distrib import ansible_json, extravars
from distrib.cli import main
from distrib.engine import CHANGED, FAILED, OK, UNREACHABLE, HostResult
from distrib.errors import ConfigError
from distrib.executor import PlayResult, RunResult
from distrib.inventory import Inventory
from distrib.plan import make_plan
from distrib.playbook import Playbook

INVENTORY = """\
all:
  vars:
    ansible_user: from_all
  children:
    web:
      vars:
        ansible_port: 2200
      hosts:
        web1: {ansible_host: 10.0.0.1}
        web2: {ansible_host: 10.0.0.2, ansible_user: web2_user}
    db:
      hosts:
        db1: {ansible_password: s3cret-inv, ansible_become_password: b3come-inv}
"""


def _inventory() -> Inventory:
    return Inventory.from_yaml_text(INVENTORY, "inv.yaml")


def _playbook(tmp_path: Path, text: str) -> Playbook:
    path = tmp_path / "site.yml"
    path.write_text(textwrap.dedent(text))
    return Playbook.load(str(path))


# --- -e / --extra-vars ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a=1 b=two", {"a": "1", "b": "two"}),
        ("msg='hello world' n=3", {"msg": "hello world", "n": "3"}),
        ('{"ansible_port": 2222, "x": [1, 2]}', {"ansible_port": 2222, "x": [1, 2]}),
        ("{ansible_user: deploy}", {"ansible_user": "deploy"}),
        ("", {}),
    ],
)
def test_extra_vars_inline_forms(value: str, expected: dict[str, Any]) -> None:
    assert extravars.parse(value) == expected


def test_extra_vars_from_a_file_and_later_ones_win(tmp_path: Path) -> None:
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("ansible_user: from_file\nansible_port: 2201\n")
    merged = extravars.parse_all([f"@{vars_file}", "ansible_port=2202"])
    assert merged == {"ansible_user": "from_file", "ansible_port": "2202"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("foo", "'foo' is not key=value"),
        ("./vars.yml", "a file name needs a leading @"),
        ("{a: [}", "-e:1: invalid YAML"),
        ("[1, 2]", "not a mapping of vars"),
        ("@", "no file name after the @"),
        ("@/nonexistent/vars.yml", "/nonexistent/vars.yml: cannot read extra vars file"),
    ],
)
def test_extra_vars_errors_name_the_value(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        extravars.parse(value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "ansible_password=hunter2",
        '{"ansible_become_password": "hunter2"}',
        "ansible_ssh_pass=hunter2",
    ],
)
def test_a_password_on_the_command_line_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        extravars.parse(value)
    assert "refused" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "hunter2" not in str(caught.value.hint)


def test_extra_vars_file_errors_name_file_and_line(tmp_path: Path) -> None:
    listed = tmp_path / "list.yml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yml:1: extra vars must be a mapping"):
        extravars.parse(f"@{listed}")
    vault = tmp_path / "vault.yml"
    vault.write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    with pytest.raises(ConfigError, match="vault-encrypted"):
        extravars.parse(f"@{vault}")


# --- precedence: flags < inventory < play < extra vars ------------------------------------------


def test_precedence_of_flags_inventory_play_and_extra_vars(tmp_path: Path) -> None:
    playbook = _playbook(
        tmp_path,
        """\
        - hosts: web
          images: [demo/web:1.0]
          vars: {ansible_port: 2300}
        """,
    )
    defaults = {
        "ansible_user": "flag_user",
        "ansible_timeout": 3.0,
        "ansible_private_key_file": "/k",
    }
    plan = make_plan(_inventory(), playbook, defaults=defaults)
    web1, web2 = plan.plays[0].hosts
    assert (web1.target.user, web2.target.user) == ("from_all", "web2_user")  # vars beat -u
    assert web1.target.port == 2300  # play vars beat inventory vars
    assert web1.target.connect_timeout == 3.0 and web1.target.key_file == "/k"  # unset: flags
    extra = {"ansible_user": "extra_user", "ansible_port": "2400", "ansible_host": "10.9.9.9"}
    plan = make_plan(_inventory(), playbook, extra_vars=extra, defaults=defaults)
    for host in plan.plays[0].hosts:  # -e beats everything
        assert (host.target.user, host.target.port, host.target.address) == (
            "extra_user",
            2400,
            "10.9.9.9",
        )


def test_become_flag_is_a_default_and_extra_vars_beat_the_play(tmp_path: Path) -> None:
    plain = _playbook(tmp_path, "- hosts: web1\n  images: [demo/web:1.0]\n")
    plan = make_plan(_inventory(), plain, defaults={"ansible_become": True})
    assert plan.plays[0].hosts[0].become is not None
    assert plan.plays[0].hosts[0].become.user == "root"
    plan = make_plan(
        _inventory(), plain, defaults={"ansible_become": True, "ansible_become_user": "ops"}
    )
    assert plan.plays[0].hosts[0].become.user == "ops"
    off = _playbook(tmp_path, "- hosts: web1\n  images: [demo/web:1.0]\n  become: false\n")
    assert (
        make_plan(_inventory(), off, defaults={"ansible_become": True}).plays[0].hosts[0].become
        is None
    )
    forced = make_plan(_inventory(), off, extra_vars={"ansible_become": "yes"})
    assert forced.plays[0].hosts[0].become is not None


# --- passwords and connection: local ------------------------------------------------------------


def test_password_vars_are_secrets_in_the_plan(tmp_path: Path) -> None:
    playbook = _playbook(tmp_path, "- hosts: db1\n  images: [demo/web:1.0]\n  become: true\n")
    host = make_plan(_inventory(), playbook).plays[0].hosts[0]
    assert host.target.password is not None and host.target.password.reveal() == "s3cret-inv"
    assert host.become is not None and host.become.password is not None
    assert host.become.password.reveal() == "b3come-inv"
    shown = repr(host) + str(host)
    assert "s3cret-inv" not in shown and "b3come-inv" not in shown


def test_connection_local_and_unknown_connection(tmp_path: Path) -> None:
    playbook = _playbook(tmp_path, "- hosts: all\n  images: [demo/web:1.0]\n")
    inventory = Inventory.from_ini_text("me ansible_connection=local\nother\n", "inv.ini")
    me, other = make_plan(inventory, playbook).plays[0].hosts
    assert (me.target.connection, other.target.connection) == ("local", "ssh")
    bad = Inventory.from_ini_text("me ansible_connection=winrm\n", "inv.ini")
    with pytest.raises(ConfigError, match=r"ansible_connection: must be one of ssh, .*'winrm'"):
        make_plan(bad, playbook)


# --- patterns that match nothing -----------------------------------------------------------------


def test_unmatched_terms_are_warnings_unless_strict(tmp_path: Path) -> None:
    playbook = _playbook(
        tmp_path,
        """\
        - name: none
          hosts: nosuch
          images: [demo/web:1.0]
        - name: some
          hosts: web:typo:!gone
          images: [demo/web:1.0]
        - name: intersect
          hosts: web:&nothere
          images: [demo/web:1.0]
        """,
    )
    warnings: list[str] = []
    plan = make_plan(_inventory(), playbook, strict=False, warn=warnings.append)
    assert [len(p.hosts) for p in plan.plays] == [0, 2, 0]
    assert warnings == [
        f"Could not match supplied host pattern, ignoring: {term}"
        for term in ("nosuch", "typo", "gone", "nothere")
    ]
    with pytest.raises(ConfigError, match="'nosuch' matches no group or host"):
        make_plan(_inventory(), playbook)  # strict (the default of the pure planner)


def test_a_limit_that_leaves_no_host_stays_an_error(tmp_path: Path) -> None:
    playbook = _playbook(tmp_path, "- hosts: all\n  images: [demo/web:1.0]\n")
    with pytest.raises(ConfigError, match="leave no hosts to target"):
        make_plan(_inventory(), playbook, limit="zzz", strict=False, warn=lambda m: None)
    plan = make_plan(_inventory(), playbook, limit="db1:zzz", strict=False, warn=lambda m: None)
    assert [h.name for h in plan.plays[0].hosts] == ["db1"]


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(INVENTORY)
    playbook = tmp_path / "site.yml"
    playbook.write_text(
        "- name: first\n  hosts: nosuch\n  images: [demo/web:1.0]\n"
        "- name: second\n  hosts: web\n  images: [demo/web:1.0]\n"
    )
    return inventory, playbook


def test_list_hosts_in_ansible_playbooks_layout(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inventory, playbook = files
    assert main(["run", str(playbook), "-i", str(inventory), "--list-hosts"]) == 0
    out, err = capsys.readouterr()
    assert out == (
        f"\nplaybook: {playbook}\n\n"
        "  play #1 (nosuch): first\tTAGS: []\n    pattern: ['nosuch']\n    hosts (0):\n\n"
        "  play #2 (web): second\tTAGS: []\n    pattern: ['web']\n    hosts (2):\n"
        "      web1\n      web2\n"
    )
    assert "[WARNING]: Could not match supplied host pattern, ignoring: nosuch" in err
    assert main(["run", str(playbook), "-i", str(inventory), "--list-hosts", "--strict"]) == 5
    assert "'nosuch' matches no group or host" in capsys.readouterr().err


def test_list_hosts_on_push_and_verify(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inventory, _ = files
    assert (
        main(["verify", "demo/web:1.0", "-i", str(inventory), "--hosts", "db", "--list-hosts"]) == 0
    )
    assert "hosts (1):\n      db1" in capsys.readouterr().out
    assert main(["push", "demo/web:1.0", "-i", str(inventory), "-l", "web2", "--list-hosts"]) == 0
    assert "hosts (1):\n      web2" in capsys.readouterr().out


def test_syntax_check(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, playbook = files
    assert main(["run", str(playbook), "--syntax-check"]) == 0
    assert capsys.readouterr().out == f"\nplaybook: {playbook}\n"
    broken = tmp_path / "broken.yml"
    broken.write_text("- hosts: all\n  images: [demo/web:1.0]\n  bogus: 1\n")
    assert main(["run", str(broken), "--syntax-check"]) == 5
    assert "broken.yml:3" in capsys.readouterr().err


def test_command_line_password_refused(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inventory, playbook = files
    code = main(["run", str(playbook), "-i", str(inventory), "-e", "ansible_password=hunter2"])
    assert code == 5
    err = capsys.readouterr().err
    assert "refused" in err and "hunter2" not in err


def test_bad_timeout_flag(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    inventory, playbook = files
    assert main(["run", str(playbook), "-i", str(inventory), "-T", "0", "--list-hosts"]) == 5
    assert "-T/--timeout" in capsys.readouterr().err


def test_ask_pass_is_the_login_password_and_the_key_passphrase_has_its_own_flag() -> None:
    from distrib.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["run", "p.yml", "-k"])
    assert args.ask_pass and not args.ask_key_passphrase
    args = parser.parse_args(["run", "p.yml", "--ask-key-passphrase", "--ask-pass"])
    assert args.ask_pass and args.ask_key_passphrase
    with pytest.raises(SystemExit):  # one source of the login password
        parser.parse_args(["run", "p.yml", "-k", "--connection-password-file", "f"])


# --- --json-format ansible -----------------------------------------------------------------------


def _run() -> RunResult:
    run = RunResult()
    play = PlayResult("ship")
    for name, status in (("a", CHANGED), ("b", OK), ("c", FAILED), ("d", UNREACHABLE)):
        result = HostResult(name)
        result.status, result.message = status, f"{status} message"
        play.hosts.append(result)
    run.plays.append(play)
    run.plays.append(PlayResult("empty"))
    return run


def test_ansible_json_document_counts_like_ansibles_recap() -> None:
    doc = ansible_json.document(
        _run(),
        [("ship", "site.yml:1"), ("empty", "site.yml:5")],
        "distrib.images.distribute",
        "distribute images",
        [1000.0, 1001.5],
        1002.0,
    )
    assert list(doc) == ["custom_stats", "global_custom_stats", "plays", "stats"]
    first, empty = doc["plays"]
    assert first["play"]["name"] == "ship" and first["play"]["path"] == "site.yml:1"
    assert first["play"]["duration"] == {
        "end": "1970-01-01T00:16:41.500000Z",
        "start": "1970-01-01T00:16:40.000000Z",
    }
    assert empty["tasks"] == []
    hosts = first["tasks"][0]["hosts"]
    assert hosts["a"]["changed"] is True and hosts["a"]["failed"] is False
    assert hosts["c"]["failed"] is True and hosts["c"]["msg"] == "failed message"
    assert hosts["d"]["unreachable"] is True
    assert doc["stats"]["a"] == {
        "changed": 1,
        "failures": 0,
        "ignored": 0,
        "ok": 1,
        "rescued": 0,
        "skipped": 0,
        "unreachable": 0,
    }
    assert doc["stats"]["b"]["ok"] == 1 and doc["stats"]["c"]["failures"] == 1
    assert doc["stats"]["d"]["unreachable"] == 1 and doc["stats"]["d"]["ok"] == 0
    json.dumps(doc)  # plain JSON
