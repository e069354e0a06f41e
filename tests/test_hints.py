"""Commands printed in hints run as printed in the environment that printed them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from training.hints import module_command, python_command

from .commands import ROOT, assert_one_line_error, run

FINETUNE = str(ROOT / "training" / "finetune_top_layers.py")


def test_the_hint_names_an_interpreter_that_has_the_project(tmp_path: Path) -> None:
    result = run(FINETUNE, "--task", "sentiment", "--layers", "8")
    assert_one_line_error(result, "-m training.bases install all-mpnet-base-v2")
    line = result.stderr.strip()
    hint = line[line.rindex("(12 layers: ") + len("(12 layers: ") : line.rindex(")")]
    interpreter = shlex.split(hint)[: shlex.split(hint).index("-m")]
    # What a user would do: paste the printed command in the same shell (same PATH).
    check = subprocess.run(
        [*interpreter, "-c", "import training.bases, torch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, (hint, check.stderr)


def test_python_is_named_only_when_path_finds_this_interpreter(tmp_path, monkeypatch) -> None:
    other = tmp_path / "bin"
    other.mkdir()
    (other / "python").symlink_to("/bin/true")
    monkeypatch.setenv("PATH", f"{other}{os.pathsep}/usr/bin:/bin")
    assert python_command() not in ("python", "python3")
    assert Path(python_command()).absolute() == Path(sys.executable).absolute()
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin")
    assert python_command() in ("python", "python3")
    assert module_command("training.store", "list").endswith(" -m training.store list")
