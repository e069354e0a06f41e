"""`make serve` / `make model` pick a shipped model by MODEL (dry runs: nothing is
installed or built): the catalogue's default unless told, `MODEL=small` the 6-layer
one, each built if missing into its own repository and served from there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model_store.locations import model_repository
from tests.support.commands import ROOT

MAKE = shutil.which("make")
BUILD = "-m training.commands.default_model build"
DIR = "-m training.commands.default_model dir"


def dry_run(*args: str) -> list[str]:
    # Under `make test` the parent make's MAKEFLAGS/MAKELEVEL would make this one print
    # "make[2]: Entering directory" lines around the recipe: a top-level run, as users do.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(
        [MAKE, "-n", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
@pytest.mark.parametrize("model", [None, "small"])
def test_serve_builds_the_model_if_missing_then_serves_its_repository(model: str | None) -> None:
    lines = dry_run("serve", *([f"MODEL={model}"] if model else []))
    name = model or "default"
    (build,) = [line for line in lines if BUILD in line]
    assert f"--model {name}" in build and build.endswith("--if-missing")
    (serve,) = [line for line in lines if "-m service" in line]
    assert serve.startswith("exec ") and lines[-1] == serve
    assert f'--model-dir "$(.venv/bin/python {DIR} --model {name} )"' in serve
    assert lines.index(build) < lines.index(serve)
    # The command the recipe asks for the directory answers the model's repository (run
    # by this interpreter: .venv's under `make test`, and a checkout may have none).
    answer = subprocess.run(
        [sys.executable, *DIR.split(), "--model", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert answer.stdout.strip() == str(model_repository(name))


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_model_builds_only_and_model_dir_overrides_the_repository() -> None:
    lines = dry_run("model", "MODEL=small", "MODEL_DIR=/srv/models/small")
    assert not any("-m service" in line for line in lines)
    (build,) = [line for line in lines if BUILD in line]
    assert "--model small --out /srv/models/small --if-missing" in build


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_a_first_serve_says_what_each_step_does_before_it_starts(tmp_path: Path) -> None:
    """On a fresh machine (no environment yet) every long step, the installs and the
    build, is announced with what it is and how big, and pip shows its own progress:
    the first `make serve` was silent for 4.5 minutes under `pip install --quiet`."""
    lines = [line for line in dry_run("serve", f"VENV={tmp_path / 'venv'}") if line.strip()]
    commands = [line for line in lines if not line.startswith("#")]
    steps = [i for i, line in enumerate(commands) if " -m pip install " in line]
    steps.append(next(i for i, line in enumerate(commands) if BUILD in line))
    assert len(steps) == 3, commands  # torch, the project, the model's build
    for step in steps:
        announced = commands[step - 1]
        assert announced.startswith('echo "==> '), (announced, commands[step])
    for step in steps[:2]:
        assert "--quiet" not in commands[step] and " -q" not in commands[step], commands[step]
        assert " MB" in commands[step - 1] or " GB" in commands[step - 1], commands[step - 1]
