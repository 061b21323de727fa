"""`distrib completion`: scripts generated from the parser by shtab, checked by real shells."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from distrib import cli
from distrib.completion import script


def _complete(bash_script: Path, *words: str) -> list[str]:
    """What bash offers for the last of `words` (as if TAB was pressed after it)."""
    line = " ".join(words)
    program = (
        f"source {bash_script}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n"
        f"_shtab_distrib distrib {words[-1]} {words[-2]}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return proc.stdout.split()


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "distrib.bash"
    path.write_text(script(cli.build_parser(), "bash"))
    return path


def test_bash_completion_is_valid_bash(bash_script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(bash_script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bash_completes_subcommands_and_their_options(bash_script: Path) -> None:
    assert _complete(bash_script, "distrib", "ru") == ["run"]
    assert "completion" in _complete(bash_script, "distrib", "comp")
    assert _complete(bash_script, "distrib", "run", "--chec") == ["--check"]
    assert _complete(bash_script, "distrib", "completion", "z") == ["zsh"]


def test_the_command_prints_each_shell(capsys: pytest.CaptureFixture[str]) -> None:
    for shell, marker in (
        ("bash", "_shtab_distrib"),
        ("zsh", "#compdef distrib"),
        ("fish", "complete -c distrib"),
    ):
        assert cli.main(["completion", shell]) == 0
        assert marker in capsys.readouterr().out


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_parse_their_script(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here")
    path = tmp_path / f"distrib.{shell}"
    path.write_text(script(cli.build_parser(), shell))
    proc = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "tcsh"]) == 5  # argparse usage errors exit with EXIT_CONFIG
    assert "invalid choice: 'tcsh'" in capsys.readouterr().err
