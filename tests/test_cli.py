"""The command-line tools as users run them: misuse ends in one readable line and exit
code 2, never a traceback; correct use writes branches that evaluate to JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .commands import ROOT, assert_one_line_error, run

FINETUNE = str(ROOT / "training" / "finetune_top_layers.py")


def test_too_many_layers_names_the_depth_and_the_way_out(data_dir: Path) -> None:
    result = run(FINETUNE, "--task", "sentiment", "--layers", "8", "--data-dir", str(data_dir))
    assert_one_line_error(
        result,
        "--layers 8",
        "has 6 layers",
        "1..6",
        "deeper --base-model",
        "python -m training.bases install all-mpnet-base-v2",
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--task", "sentiment", "--layers", "0"], "K must be 1..6"),
        (["--task", "poetry", "--layers", "1"], "invalid choice: 'poetry'"),
        (["--task", "sentiment"], "--layers"),
        (["--task", "sentiment", "--layers", "two"], "invalid int value"),
        (["--task", "all", "--layers", "1", "--val-fraction", "1.5"], "--val-fraction"),
        (["--task", "all", "--layers", "1", "--base-model", "/nonexistent"], "does not exist"),
    ],
)
def test_misuse_is_one_line(args: list[str], fragment: str) -> None:
    assert_one_line_error(run(FINETUNE, *args), fragment)


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
    result = run(
        FINETUNE, "--task", "all", "--layers", "1", "--data-dir", str(data_dir), "--out", str(out)
    )
    assert_one_line_error(result, "quora-train.tsv:82", "is_duplicate")
    assert not out.exists()  # sentiment, first in line, was not trained either


def test_train_all_tasks_then_evaluate(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "branches"
    result = run(
        FINETUNE,
        "--task",
        "all",
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
        "training.evaluate",
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
        "training.evaluate",
        "--branch",
        str(tmp_path / "none"),
        "--data",
        str(data_dir / "sst-train.tsv"),
    )
    assert_one_line_error(result, "does not exist")
