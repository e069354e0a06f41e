"""Commands printed in hints run as printed in the environment that printed them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from model_store.hints import module_command, python_command, script_command
from tests.support.commands import ROOT, assert_one_line_error, run

FINETUNE = str(ROOT / "training" / "finetune_top_layers.py")


def test_the_hint_names_a_command_that_runs_in_this_environment(tmp_path: Path) -> None:
    result = run(FINETUNE, "--task", "sentiment", "--layers", "8")
    assert_one_line_error(result, "bert-mts-bases install all-mpnet-base-v2")
    line = result.stderr.strip()
    hint = line[line.rindex("ahead of time: ") + len("ahead of time: ") : line.rindex(")")]
    command = shlex.split(hint)[:-2]  # less "install all-mpnet-base-v2"
    # What a user would do: paste the printed command in the same shell (same PATH).
    check = subprocess.run(
        [*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, (hint, check.stderr)
    assert "install" in check.stdout


def test_python_is_named_only_when_path_finds_this_interpreter(tmp_path, monkeypatch) -> None:
    other = tmp_path / "bin"
    other.mkdir()
    (other / "python").symlink_to("/bin/true")
    monkeypatch.setenv("PATH", f"{other}{os.pathsep}/usr/bin:/bin")
    assert python_command() not in ("python", "python3")
    assert Path(python_command()).absolute() == Path(sys.executable).absolute()
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin")
    assert python_command() in ("python", "python3")
    assert module_command("model_store", "list").endswith(" -m model_store list")


def test_a_script_is_named_bare_only_when_path_finds_this_environments(monkeypatch) -> None:
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "bert-mts-store").is_file():
        pytest.skip("the project's console scripts are not installed beside this interpreter")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    printed = script_command("bert-mts-store", "list")
    assert printed.endswith(" list") and printed != "bert-mts-store list"
    assert Path(printed.split()[0]).absolute() == (bin_dir / "bert-mts-store").absolute()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    assert script_command("bert-mts-store", "list") == "bert-mts-store list"
