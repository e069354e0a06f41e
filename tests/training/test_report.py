"""The accuracy report: its numbers, its plots and its all-or-nothing output directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from tests.support.commands import assert_one_line_error, run
from tests.support.tiny_store import build_tiny_store
from training.evaluate.store import store_outputs
from training.fit.objectives import overall_score
from training.report.page import SWEEP_COPY, ModelSource, write_report
from training.report.plots import calibration_bins, confusion_matrix
from training.report.sweep_log import FULL, SweepRecord, load_sweep, record_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RECIPE = {"epochs": 3, "lr": 1e-4}


def test_overall_score_maps_pearson_onto_the_accuracy_scale() -> None:
    score = overall_score({"sentiment": 0.5, "paraphrase": 0.8, "similarity": 0.6})
    assert score == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    with pytest.raises(ValueError, match="missing similarity"):
        overall_score({"sentiment": 0.5, "paraphrase": 0.8})


def test_confusion_matrix_and_calibration_bins() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    probabilities = np.array([0.05, 0.15, 0.95, 0.95])
    mean_p, observed, counts, ece = calibration_bins(probabilities, np.array([0, 0, 1, 0.0]))
    assert mean_p.tolist() == pytest.approx([0.05, 0.15, 0.95])
    assert observed.tolist() == [0.0, 0.0, 0.5]
    assert counts.tolist() == [1, 1, 2]
    assert ece == pytest.approx((0.05 + 0.15 + 2 * 0.45) / 4)


def test_sweep_file_replaces_a_rerun_instead_of_duplicating_it(tmp_path: Path) -> None:
    path = tmp_path / "sweep.json"
    record_sweep(path, [SweepRecord("similarity", 2, "pearson", 0.8, 3, 1.0, RECIPE)])
    record_sweep(path, [SweepRecord("similarity", 2, "pearson", 0.81, 2, 1.1, RECIPE)])
    record_sweep(path, [SweepRecord("similarity", FULL, "pearson", 0.85, 3, 2.0, RECIPE)])
    assert [(r.layers, r.value) for r in load_sweep(path)] == [(2, 0.81), (FULL, 0.85)]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("report"), variants=("fp32", "int8"))


def _sweep_file(directory: Path) -> Path:
    path = directory / "sweep.json"
    records = [
        SweepRecord(task, layers, metric, 0.5 + 0.01 * i, 3, 1.0, RECIPE)
        for task, metric in (
            ("sentiment", "accuracy"),
            ("paraphrase", "accuracy"),
            ("similarity", "pearson"),
        )
        for i, layers in enumerate((1, 2, FULL))
    ]
    # Two seeds of a distilled K=1 sentiment student keep 99% of full FT (0.52) on average.
    teacher = {"version": "v", "layers": 2}
    records += [
        SweepRecord("sentiment", 1, "accuracy", value, 3, 1.0, {**RECIPE, **extra})
        for value, extra in (
            (0.519, {"teacher": teacher}),
            (0.513, {"teacher": teacher, "seed": 1}),
        )
    ]
    record_sweep(path, records)
    return path


def test_report_writes_the_page_and_reproducible_plots(
    tiny_store: Path, data_dir: Path, tmp_path: Path
) -> None:
    sweep = _sweep_file(tmp_path)
    out = tmp_path / "report"
    index = write_report(tiny_store, data_dir, sweep, out, None)
    page = index.read_text()
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == [
        "k_sweep.png",
        "paraphrase_calibration.png",
        "sentiment_confusion.png",
        "similarity_residuals.png",
        "trade_off.png",
    ]
    for name in pictures:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
        assert f'src="{name}"' in page
    assert "shipped fp32 / full fine-tuning" in page and "0.862" in page  # literature column
    # Each variant's metric next to fp32's, and which graph auto serves, and why.
    assert "int8 - fp32 (points)" in page
    assert "Served by default" in page and "on a CPU: <b>" in page
    assert load_sweep(out / SWEEP_COPY) == load_sweep(sweep)
    # The depth rule, applied: sentiment's distilled K=1 mean (0.516) keeps 99.2% of 0.52.
    assert "<td>sentiment</td><td>0.5200</td><td>1</td><td>distilled</td><td>0.5160</td>" in page
    assert "<td>paraphrase</td><td>0.5200</td><td>none of the swept K</td>" in page

    first = {name: (out / name).read_bytes() for name in pictures}
    write_report(tiny_store, data_dir, sweep, out, None)  # replaces the directory whole
    assert {name: (out / name).read_bytes() for name in pictures} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "report", "sweep.json"]


def test_report_without_sweep_runs_is_a_one_line_error(
    tiny_store: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = run(
        "-m",
        "training.commands.report",
        "--store",
        str(tiny_store),
        "--data-dir",
        str(data_dir),
        "--sweep",
        str(tmp_path / "none.json"),
        "--out",
        str(out),
    )
    assert_one_line_error(result, "holds no sweep runs")
    assert not out.exists()


def test_report_shows_other_models_beside_it_with_their_own_k_sweep(
    tiny_store: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A compared model (here the same tiny store under another name, with a sweep of
    two recipes, as a 12-layer model's is) gets its columns per task, its overall score
    and its own K chart drawn from every recorded run."""
    other_sweep = tmp_path / "other.json"
    students = {**RECIPE, "epochs": 2, "teacher": {"version": "v", "layers": 8}}
    record_sweep(
        other_sweep,
        [
            SweepRecord("sentiment", 8, "accuracy", 0.55, 1, 60.0, {**RECIPE, "epochs": 1}),
            SweepRecord("sentiment", 3, "accuracy", 0.54, 2, 30.0, students),
        ],
    )
    out = tmp_path / "report"
    source = ModelSource("big", tiny_store, other_sweep)
    page = write_report(
        tiny_store, data_dir, _sweep_file(tmp_path), out, None, [source], "small"
    ).read_text()
    assert "The shipped models side by side" in page
    assert (out / "k_sweep_big.png").read_bytes().startswith(PNG_MAGIC)
    # Its sweep file travels with the report: a sweep kept inside the report's folder
    # (as docs/report/k_sweep_base.json is) survives the report replacing that folder.
    assert load_sweep(out / other_sweep.name) == load_sweep(other_sweep)
    inside = out / other_sweep.name
    again = write_report(
        tiny_store,
        data_dir,
        _sweep_file(tmp_path),
        out,
        None,
        [ModelSource("big", tiny_store, inside)],
        "small",
    )
    assert again.is_file() and load_sweep(inside) == load_sweep(other_sweep)
    assert 'src="k_sweep_big.png"' in page and "K sweep of big: " in page
    manifest = load_manifest(resolve_store(tiny_store))
    results = {r.name: r.metric("fp32") for r in store_outputs(manifest, data_dir, ["fp32"])}
    layers = {t.name: t.layers for t in manifest.tasks}
    for task, value in results.items():
        cell = f"<td>{layers[task]}</td><td>{value:.4f}</td>"
        # Both models' K and fp32 metric, then the literature.
        assert f"<tr><td>{task}</td><td>" in page and page.count(cell * 2) >= 1, task
    overall = f"{overall_score(results):.4f}"
    assert (
        f"<td>overall</td><td>score</td><td></td><td>{overall}</td><td></td><td>{overall}</td>"
        in page
    )
    # Without compared models there is no such section.
    alone = write_report(tiny_store, data_dir, _sweep_file(tmp_path), out, None).read_text()
    assert "side by side" not in alone and not (out / "k_sweep_big.png").exists()
