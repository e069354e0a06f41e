"""Publishing one task measures only that task's variant metrics, on its own data: the
other tasks' recorded figures are carried over, and equal what a full measurement of
the new version gives (the parity check of this shortcut). The publish prints what
concerns what it published, with its parity figures explained."""

from __future__ import annotations

from pathlib import Path

from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from tests.support.commands import ROOT, run
from tests.support.tiny_store import TinyBranches
from training.evaluate.variant_metrics import measure

WORDS = ["calm", "storm", "bright", "dark", "warm", "cold", "quiet", "loud"]


def write_files(directory: Path) -> tuple[Path, Path]:
    topics = ["text,topic"] + [
        f"{WORDS[i % 8]} {WORDS[(i * 3) % 8]} {i},{['sports', 'science'][i % 2]}" for i in range(40)
    ]
    topics.insert(7, "a row whose label is not a topic,poetry")  # skipped, and said so
    ratings = ["text,score"] + [
        f"{WORDS[i % 8]} and {WORDS[(i * 5) % 8]} {i},{(i % 6) * 0.8:.1f}" for i in range(40)
    ]
    (directory / "topics.csv").write_text("\n".join(topics) + "\n", encoding="utf-8")
    (directory / "ratings.csv").write_text("\n".join(ratings) + "\n", encoding="utf-8")
    return directory / "topics.csv", directory / "ratings.csv"


def train(tiny: TinyBranches, out: Path, *args: str) -> Path:
    result = run(
        str(ROOT / "training" / "finetune_top_layers.py"),
        *args,
        *("--base-model", str(tiny.base_dir), "--max-seq-len", "32", "--val-fraction", "0.25"),
        *("--layers", "1", "--epochs", "1", "--out", str(out), "--quiet"),
    )
    assert result.returncode == 0, result.stderr
    return out / args[args.index("--task") + 1]


def publish(tiny: TinyBranches, repository: Path, *args: str):
    result = run(
        *("-m", "training.commands.store", "publish", "--store", str(repository)),
        *("--base-model", str(tiny.base_dir), *args),
    )
    assert result.returncode == 0, result.stderr
    return result


def test_one_task_is_measured_and_the_others_carried_over(tiny: TinyBranches, tmp_path) -> None:
    topics, ratings = write_files(tmp_path)
    topic = ("--task", "topic", "--kind", "classification", "--labels", "sports,science")
    topic_branch = train(
        tiny,
        tmp_path / "b",
        *topic,
        "--train-file",
        str(topics),
        "--label-column",
        "topic",
        "--skip-bad-rows",
    )
    rating = ("--task", "rating", "--kind", "regression", "--range", "0", "4")
    rating_args = (*rating, "--train-file", str(ratings), "--label-column", "score")
    first_rating = train(tiny, tmp_path / "b", *rating_args)
    repository = tmp_path / "repo"
    created = publish(
        tiny,
        repository,
        *("--create", "--branch", str(topic_branch), "--branch", str(first_rating)),
        "--embedding",  # no labels: neither measured nor carried over, as in a full measure
    )
    assert "topics.csv:8" in created.stderr  # both tasks measured: topic's file read
    first = load_manifest(resolve_store(repository))
    assert set(first.extra["variant_metrics"]["tasks"]) == {"topic", "rating"}

    retrained = train(tiny, tmp_path / "b2", *rating_args, "--seed", "1")
    result = publish(tiny, repository, "--branch", str(retrained))
    assert "skipping bad row" not in result.stdout + result.stderr  # topic's file not read
    second = load_manifest(resolve_store(repository))
    recorded = second.extra["variant_metrics"]
    assert "topic carried over from" in recorded["source"]
    assert "rating measured now" in recorded["source"]
    assert recorded["tasks"]["topic"] == first.extra["variant_metrics"]["tasks"]["topic"]
    assert recorded["tasks"]["rating"] != first.extra["variant_metrics"]["tasks"]["rating"]
    full = measure(second)  # every task, every graph, from scratch
    for task in ("topic", "rating"):
        for variant in ("fp32", "int8"):
            assert recorded["tasks"][task][variant] == full["tasks"][task][variant], task
        assert recorded["tasks"][task]["examples"] == full["tasks"][task]["examples"]
    # The paired tests `--graph auto` decides by: carried over with the figures for the
    # unchanged task, computed for the new one, both equal to a full measurement's.
    assert recorded["comparisons"] == full["comparisons"]
    assert (
        recorded["comparisons"]["topic"] == first.extra["variant_metrics"]["comparisons"]["topic"]
    )
    assert set(recorded["comparisons"]["rating"]) == {"int8"}

    out = result.stdout
    assert "fp32 graph: outputs within" in out and "(tolerance 0.0001)" in out
    assert "int8 graph: output drift up to" in out and "judged by the metric" in out
    assert "rating pearson on" in out and "points)" in out
    assert "topic accuracy" not in out  # not what this publish changed
    assert "--graph auto serves" in out
