"""`make serve` / `make model` pick a shipped model by MODEL (dry runs: nothing is
installed or built): the catalogue's default unless told, `MODEL=small` the 6-layer
one, each built if missing into its own repository and served from there."""

from __future__ import annotations

import os
import shutil
import subprocess

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
    # The command the recipe asks for the directory answers the model's repository.
    answer = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), *DIR.split(), "--model", name],
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
