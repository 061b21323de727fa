"""ansible-playbook's vault flags on distrib's commands (issue 17): --vault-password-file,
--vault-id and -J open vault-encrypted inventories, group_vars and `-e @FILE` through
ansible-core, as ansible-playbook does; without a secret, or without ansible-core, one clear
line. Hosts are never contacted (`distrib inventory`, `distrib plan`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from distrib import ansible_core, api, cli_args
from distrib.cli import main

CORPUS = Path(__file__).parent / "data" / "ansible_corpus" / "vault"
PASSWORD_FILE = CORPUS / "vault-pass.txt"

pytestmark = pytest.mark.skipif(not ansible_core.available(), reason="needs ansible-core")


@pytest.fixture(autouse=True)
def _ansible_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTRIB_INVENTORY_PARSER", "ansible")
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)


def _encrypt(text: str, password: str) -> str:
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([("default", VaultSecret(password.encode()))])
    return bytes(vault.encrypt(text.encode())).decode()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_inventory_with_vault_values_opens_with_the_password_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["inventory", "--list", "-i", str(CORPUS / "hosts.yml")]
    code, out, err = _run([*argv, "--vault-password-file", str(PASSWORD_FILE)], capsys)
    assert code == 0, err
    assert "v1" in json.loads(out)["_meta"]["hostvars"]
    code, out, err = _run([*argv, "--vault-id", f"default@{PASSWORD_FILE}"], capsys)
    assert code == 0, err
    code, out, err = _run(argv, capsys)  # no secret: one clear line, no traceback
    assert code != 0 and "Traceback" not in err and "vault" in err.lower(), err


def test_a_wrong_vault_password_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not-the-password\n")
    argv = ["inventory", "--list", "-i", str(CORPUS / "hosts.yml"), "--vault-password-file"]
    code, _, err = _run([*argv, str(wrong)], capsys)
    assert code != 0 and "Traceback" not in err and "decrypt" in err.lower(), err
    assert "not-the-password" not in err


def test_extra_vars_file_encrypted_with_vault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    h1: {ansible_host: 10.9.0.1}\n")
    book = tmp_path / "site.yml"
    book.write_text("- hosts: all\n  images: [demo/web:1.0]\n")
    secret = tmp_path / "secret.yml"
    secret.write_text(_encrypt("ansible_user: from_vault\nansible_port: 2299\n", "pw-e"))
    password = tmp_path / "pw.txt"
    password.write_text("pw-e\n")
    args = argparse.Namespace(extra_vars=[f"@{secret}"], vault_password_file=[str(password)])
    inputs = api.Inputs(cli_args.options(args))  # -e is read by the API, vault through the flags
    assert inputs.extra_vars() == {"ansible_user": "from_vault", "ansible_port": 2299}
    plan = ["plan", str(book), "-i", str(inventory), "-e", f"@{secret}", "--json"]
    code, out, err = _run(plan, capsys)  # refused before any host is contacted
    assert code != 0 and "--vault-password-file" in err and "Traceback" not in err, err


def test_vault_flags_without_ansible_core_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ansible_core, "available", lambda: False)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    h1: {}\n")
    book = tmp_path / "site.yml"
    book.write_text("- hosts: all\n  images: [demo/web:1.0]\n")
    secret = tmp_path / "secret.yml"
    secret.write_text(_encrypt("ansible_user: x\n", "pw"))
    argv = ["plan", str(book), "-i", str(inventory), "-e", f"@{secret}"]
    code, _, err = _run([*argv, "--vault-password-file", str(PASSWORD_FILE)], capsys)
    assert code != 0 and "distrib[ansible]" in err and "Traceback" not in err, err


def test_inventory_playbook_dir_reads_its_group_vars(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inv" / "hosts.yml"
    inventory.parent.mkdir()
    inventory.write_text("all:\n  hosts:\n    h1: {ansible_host: 10.9.0.1}\n")
    beside = tmp_path / "play" / "group_vars"
    beside.mkdir(parents=True)
    (beside / "all.yml").write_text("ansible_port: 2345\n")
    argv = ["inventory", "--list", "-i", str(inventory)]
    for reader in ("ansible", "builtin"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DISTRIB_INVENTORY_PARSER", reader)
            code, out, err = _run([*argv, "--playbook-dir", str(tmp_path / "play")], capsys)
            assert code == 0, err
            assert json.loads(out)["_meta"]["hostvars"]["h1"]["ansible_port"] == 2345, reader
            code, out, err = _run(argv, capsys)
            assert "ansible_port" not in json.loads(out)["_meta"]["hostvars"]["h1"], reader
