"""The command-line tools as users run them: misuse ends in one readable line and exit
code 2, never a traceback; correct use writes branches that evaluate to JSON."""

from __future__ import annotations

import importlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.commands import ROOT, assert_one_line_error, run
from tests.support.tiny_store import tiny_base_dir

FINETUNE = str(ROOT / "training" / "finetune_top_layers.py")


def test_too_many_layers_names_the_depth_and_the_way_out(data_dir: Path) -> None:
    result = run(FINETUNE, "--task", "sentiment", "--layers", "8", "--data-dir", str(data_dir))
    assert_one_line_error(
        result,
        "--layers 8",
        "has 6 layers",
        "1..6",
        "deeper --base-model",
        "all-mpnet-base-v2 (12 layers, installed on first use",
    )


def test_too_many_layers_of_a_12_layer_base_suggests_no_base_as_deep(tmp_path: Path) -> None:
    base = tiny_base_dir(tmp_path / "bert-12", layers=12)
    result = run(FINETUNE, "--task", "sentiment", "--layers", "20", "--base-model", str(base))
    assert_one_line_error(result, "--layers 20", "has 12 layers", "1..12")
    assert "deeper" not in result.stderr and "all-mpnet-base-v2" not in result.stderr


MISUSE = [
    (["--task", "sentiment", "--layers", "0"], "K must be 1..6"),
    (["--task", "poetry", "--layers", "1"], "poetry is not a preset", "--kind"),
    (["--task", "poetry", "--kind", "poem", "--layers", "1"], "invalid choice: 'poem'"),
    (["--task", "Bad Name", "--kind", "binary", "--layers", "1"], "task name"),
    (
        ["--task", "sentiment", "--kind", "regression", "--range", "0", "1", "--layers", "1"],
        "sentiment is a preset",
        "another name",
    ),
    (["--task", "topic", "--kind", "classification", "--layers", "1"], "at least 2 labels"),
    (["--task", "rating", "--kind", "regression", "--layers", "1"], "value range", "--range LO HI"),
    (["--kind", "binary", "--layers", "1"], "--kind needs --task"),
    (["--task", "match", "--kind", "binary", "--input", "pair", "--layers", "1"], "--train-file"),
    (["--task", "sentiment"], "--layers"),
    (["--task", "sentiment", "--layers", "two"], "invalid int value"),
    (["--layers", "1", "--val-fraction", "1.5"], "--val-fraction"),
    (["--layers", "1", "--base-model", "/nonexistent"], "does not exist"),
    (["--layers", "1", "--cache-dir", "/nonexistent/dir"], "--cache-dir", "no such directory"),
    (["--layers", "1", "--grad-accumulation", "0"], "gradient accumulation must be"),
]


@pytest.mark.parametrize("case", MISUSE, ids=lambda case: " ".join(case[0]))
def test_misuse_is_one_line(case) -> None:
    args, *fragments = case
    assert_one_line_error(run(FINETUNE, *args), *fragments)


def test_missing_data_file(tmp_path: Path) -> None:
    result = run(FINETUNE, "--task", "paraphrase", "--layers", "1", "--data-dir", str(tmp_path))
    assert_one_line_error(result, "quora-train.tsv: file does not exist")


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "mine.csv"
    bad.write_text("text,stars\ngreat movie,4\nterrible movie,\n", encoding="utf-8")
    result = run(
        FINETUNE,
        "--task",
        "sentiment",
        "--layers",
        "1",
        "--train-file",
        str(bad),
        "--text-a-column",
        "text",
        "--label-column",
        "stars",
    )
    assert_one_line_error(result, "mine.csv:3")


def test_a_bad_file_stops_the_run_before_any_training(data_dir: Path, tmp_path: Path) -> None:
    quora = data_dir / "quora-train.tsv"
    quora.write_text(quora.read_text() + "99\tq99\tbroken row\tno label\t\n")
    out = tmp_path / "branches"
    result = run(FINETUNE, "--layers", "1", "--data-dir", str(data_dir), "--out", str(out))
    assert_one_line_error(result, "quora-train.tsv:82", "is_duplicate")
    assert not out.exists()  # sentiment, first in line, was not trained either


def test_train_all_tasks_then_evaluate(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "branches"
    result = run(
        FINETUNE,
        "--layers",
        "1",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "1",
        "--limit",
        "40",
        "--max-seq-len",
        "32",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    versions = {
        task: list((out / task).iterdir()) for task in ("sentiment", "paraphrase", "similarity")
    }
    assert all(len(found) == 1 for found in versions.values()), versions
    meta = json.loads((versions["similarity"][0] / "branch.json").read_text())
    assert meta["training_args"]["train_examples"] == 36 and meta["validation"]["examples"] == 4

    evaluated = run(
        "-m",
        "training.commands.evaluate",
        "--branch",
        str(out / "paraphrase"),
        "--data",
        str(data_dir / "quora-train.tsv"),
    )
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["task"] == "paraphrase" and report["examples"] == 80
    assert 0.0 <= report["accuracy"] <= 1.0


def test_evaluate_missing_branch_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    result = run(
        "-m",
        "training.commands.evaluate",
        "--branch",
        str(tmp_path / "none"),
        "--data",
        str(data_dir / "sst-train.tsv"),
    )
    assert_one_line_error(result, "does not exist")


def _topic_file(path: Path, bad_label: str | None = None) -> Path:
    rows = ["text,topic"]
    words = {"sports": "the striker scored", "politics": "the senate voted", "science": "cells"}
    for i in range(30):
        name = list(words)[i % 3]
        rows.append(f"{words[name]} {i},{name if i % 2 else list(words).index(name)}")
    if bad_label is not None:
        rows.append(f"an extra row,{bad_label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


TOPIC = ["--task", "topic", "--kind", "classification", "--labels", "sports,politics,science"]


def test_a_label_outside_the_labels_names_file_and_line(tmp_path: Path) -> None:
    data = _topic_file(tmp_path / "topics.csv", bad_label="cooking")
    result = run(
        FINETUNE, *TOPIC, "--train-file", str(data), "--label-column", "topic", "--layers", "1"
    )
    assert_one_line_error(result, "topics.csv:32", "'cooking'", "sports, politics, science")


def test_regression_values_out_of_range_stop_or_are_skipped(tmp_path: Path) -> None:
    data = tmp_path / "ratings.csv"
    data.write_text("text,stars\n" + "".join(f"film {i},{1 + i % 10}\n" for i in range(20)))
    data.write_text(data.read_text() + "too good,11\n")
    rating = ["--task", "rating", "--kind", "regression", "--range", "1", "10"]
    common = [*rating, "--train-file", str(data), "--label-column", "stars", "--layers", "1"]
    assert_one_line_error(run(FINETUNE, *common), "ratings.csv:22", "outside [1, 10]")
    out = tmp_path / "branches"
    skipped = run(
        FINETUNE, *common, "--skip-bad-rows", "--epochs", "1", "--out", str(out), "--quiet"
    )
    assert skipped.returncode == 0, skipped.stderr
    meta = json.loads(next((out / "rating").iterdir()).joinpath("branch.json").read_text())
    assert meta["training_args"]["skipped_rows"] == 1
    assert meta["definition"] == {
        "name": "rating",
        "kind": "regression",
        "input": "text",
        "range": [1.0, 10.0],
    }


def test_a_pair_task_needs_its_second_column(tmp_path: Path) -> None:
    data = _topic_file(tmp_path / "topics.csv")
    result = run(FINETUNE, *TOPIC, "--input", "pair", "--train-file", str(data), "--layers", "1")
    assert_one_line_error(result, "takes a text pair", "--text-b-column")


def test_a_user_task_trains_from_names_or_indices_and_evaluates_on_its_own_data(
    tmp_path: Path,
) -> None:
    data = _topic_file(tmp_path / "topics.csv")
    out = tmp_path / "branches"
    args = ["--train-file", str(data), "--label-column", "topic", "--layers", "1", "--epochs", "1"]
    result = run(FINETUNE, *TOPIC, *args, "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    (version,) = (out / "topic").iterdir()
    meta = json.loads((version / "branch.json").read_text())
    assert meta["definition"]["labels"] == ["sports", "politics", "science"]
    # Where the branch went, and what it takes on disk.
    size = sum(file.stat().st_size for file in version.iterdir()) / 1e6
    assert result.stdout.strip().endswith(f"), {size:.1f} MB -> {version}"), result.stdout
    assert result.stderr.startswith("base model: "), result.stderr
    assert meta["training_args"]["data"]["columns"]["label"] == "topic"
    # Without --data, evaluation reads the recorded file and columns: its validation split.
    evaluated = run("-m", "training.commands.evaluate", "--branch", str(version))
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["task"] == "topic" and report["examples"] == 3  # 10% of 30


def _console_scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml: each command's name and entry point."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["scripts"]


@pytest.mark.parametrize("script", sorted(_console_scripts()))
def test_each_command_names_itself_by_its_console_script_in_an_error(
    script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module, function = _console_scripts()[script].split(":")
    entry = getattr(importlib.import_module(module), function)
    monkeypatch.setattr(sys, "argv", [script, "--no-such-option"])
    monkeypatch.setattr(signal, "signal", lambda *_args: None)  # leave pytest's handlers
    with pytest.raises(SystemExit) as stopped:
        entry()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"{script}: error: ")


def test_a_python_without_the_project_is_told_to_use_the_environment(tmp_path: Path) -> None:
    """The script run by a Python that lacks the project (`-S`: no site-packages, as a
    system python3): with the checkout's .venv, the hint is to use it, else to make it."""
    (tmp_path / "training").mkdir()
    shutil.copy(FINETUNE, tmp_path / "training")

    def without_project() -> subprocess.CompletedProcess[str]:
        script = ["training/finetune_top_layers.py", "--layers", "1"]
        return subprocess.run(
            [sys.executable, "-I", "-S", *script], cwd=tmp_path, capture_output=True, text=True
        )

    assert_one_line_error(without_project(), "bert-mts-train: error:", "make install")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    result = without_project()
    assert_one_line_error(result, ".venv/bin/python training/finetune_top_layers.py", "activate")
    assert "make install" not in result.stderr
