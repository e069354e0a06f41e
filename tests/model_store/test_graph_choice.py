"""`--graph auto`: the fastest graph whose recorded metrics keep accuracy, else fp32."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_store.graph_choice import COMPARISONS, choose_graph, losses
from model_store.manifest import Manifest, TaskEntry
from service.engine import Engine, EngineConfig
from tests.support.manifests import rewrite_manifest

TASKS = ("sentiment", "paraphrase", "similarity")


def manifest_with(metrics: dict | None, graphs=("fp32", "int8", "fp16")) -> Manifest:
    from training.data.presets import PRESETS  # torch-free: the presets' definitions

    tasks = tuple(
        TaskEntry(PRESETS[name].definition, i, f"{name}_logits", "v1", 1, "cls", {}, 1)
        for i, name in enumerate(TASKS)
    )
    extra = {} if metrics is None else {"variant_metrics": metrics}
    return Manifest(
        directory=Path("."),
        name="test",
        base_model={},
        max_seq_len=32,
        num_layers=2,
        trunk_layers=1,
        input_names=(),
        tasks=tasks,
        graphs={g: f"{g}.onnx" for g in graphs},
        files={},
        created="",
        extra=extra,
    )


def scores(int8_drop: float, fp16_drop: float = 0.0) -> dict:
    """fp32 at 0.8 on every task; int8 and fp16 lower by the given points on similarity."""
    tasks = {name: {"metric": "accuracy", "fp32": 0.8, "int8": 0.8, "fp16": 0.8} for name in TASKS}
    tasks["similarity"]["int8"] = 0.8 - int8_drop / 100
    tasks["similarity"]["fp16"] = 0.8 - fp16_drop / 100
    return {"source": "test", "tasks": tasks}


def mcnemar(fp32_only: int, variant_only: int, rows: int = 1000) -> dict:
    # torch-free (numpy only), so it runs in the serving environment too
    from training.evaluate.paired_test import mcnemar_exact

    return {
        "test": "mcnemar_exact",
        "rows": rows,
        "right_in_fp32_only": fp32_only,
        "right_in_variant_only": variant_only,
        "p_value": mcnemar_exact(fp32_only, variant_only),
        "loss_points": 100 * (fp32_only - variant_only) / rows,
        "disagreement": (fp32_only + variant_only) / rows,
    }


def bootstrap(low: float, high: float) -> dict:
    return {
        "test": "paired_bootstrap",
        "rows": 600,
        "resamples": 2000,
        "seed": 0,
        "confidence": 0.95,
        "loss_points": (low + high) / 2,
        "loss_interval_points": [low, high],
        "mean_abs_difference": 0.01,
    }


def with_tests(sentiment: dict, similarity: dict | None = None) -> dict:
    """Recorded metrics with paired tests: sentiment's int8 loss is its test's, the
    other tasks lose nothing (similarity by the given bootstrap)."""
    similarity = similarity or bootstrap(-0.5, 0.5)
    metrics = scores(similarity["loss_points"])
    metrics["tasks"]["sentiment"]["int8"] = 0.8 - sentiment["loss_points"] / 100
    metrics[COMPARISONS] = {
        "sentiment": {"int8": sentiment},
        "paraphrase": {"int8": mcnemar(4, 4)},
        "similarity": {"int8": similarity},
    }
    return metrics


def test_a_loss_the_paired_test_finds_no_evidence_for_and_within_tolerance_serves_int8() -> None:
    choice = choose_graph(manifest_with(with_tests(mcnemar(12, 4))), cuda=False)
    assert choice.variant == "int8"
    assert "exact McNemar on 1000 rows: 12 right in fp32 only, 4 in int8 only" in choice.reason
    assert "0.80 points (sentiment)" in choice.reason


def test_a_significant_loss_within_the_tolerance_still_serves_fp32() -> None:
    choice = choose_graph(manifest_with(with_tests(mcnemar(9, 0))), cuda=False)  # p = 0.004
    assert choice.variant == "fp32"
    assert "sentiment: loss 0.90 points" in choice.reason and "a significant loss" in choice.reason
    assert choose_graph(manifest_with(with_tests(mcnemar(9, 0))), False, 5).variant == "fp32"


def test_a_loss_over_the_tolerance_serves_fp32_even_when_not_significant() -> None:
    noisy = mcnemar(14, 5, rows=854)  # 1.05 points, p = 0.064
    choice = choose_graph(manifest_with(with_tests(noisy)), cuda=False)
    assert choice.variant == "fp32" and "not significant, but over the tolerance" in choice.reason
    assert "p=0.0636" in choice.reason
    assert choose_graph(manifest_with(with_tests(noisy)), False, 1.1).variant == "int8"


def test_regression_is_decided_by_the_bootstrap_interval() -> None:
    lost = with_tests(mcnemar(0, 0), similarity=bootstrap(0.1, 0.7))  # all of it a loss
    choice = choose_graph(manifest_with(lost), cuda=False)
    assert choice.variant == "fp32" and "similarity: loss 0.40 points" in choice.reason
    assert "interval [0.10, 0.70]" in choice.reason
    kept = with_tests(mcnemar(0, 0), similarity=bootstrap(-0.1, 0.7))
    assert choose_graph(manifest_with(kept), cuda=False).variant == "int8"


def test_cpu_serves_int8_within_the_tolerance() -> None:
    choice = choose_graph(manifest_with(scores(0.4)), cuda=False)
    assert choice.variant == "int8"
    assert "0.40 points (similarity)" in choice.reason and "tolerance 1" in choice.reason
    assert "records no paired test" in choice.reason  # a store published before them


def test_cpu_serves_fp32_when_int8_loses_more_than_the_tolerance() -> None:
    choice = choose_graph(manifest_with(scores(1.5)), cuda=False)
    assert choice.variant == "fp32"
    assert "1.50 points (similarity)" in choice.reason
    # A looser tolerance (the setting) takes it.
    assert choose_graph(manifest_with(scores(1.5)), False, tolerance_points=2).variant == "int8"


def test_a_gain_is_within_any_tolerance() -> None:
    assert losses(manifest_with(scores(-0.5)), "int8")["similarity"] == pytest.approx(-0.5)
    assert choose_graph(manifest_with(scores(-0.5)), False, tolerance_points=0).variant == "int8"


def test_cuda_applies_the_same_rule_to_fp16() -> None:
    assert choose_graph(manifest_with(scores(5.0, 0.1)), cuda=True).variant == "fp16"
    assert choose_graph(manifest_with(scores(0.0, 3.0)), cuda=True).variant == "fp32"


@pytest.mark.parametrize(
    ("metrics", "graphs", "why"),
    [
        (None, ("fp32", "int8"), "records no per-variant validation metrics"),
        ({"unavailable": "data gone"}, ("fp32", "int8"), "data gone"),
        ({"tasks": {"sentiment": {"fp32": 0.8, "int8": 0.8}}}, ("fp32", "int8"), "per task"),
        (scores(0.0), ("fp32",), "no int8 graph"),
    ],
)
def test_fp32_without_what_the_rule_needs(metrics, graphs, why: str) -> None:
    choice = choose_graph(manifest_with(metrics, graphs), cuda=False)
    assert choice.variant == "fp32" and why in choice.reason


def _fp32_and_int8(directory: Path) -> None:
    from tests.support.tiny_store import build_tiny_store

    build_tiny_store(directory, variants=("fp32", "int8"))


def test_engine_serves_what_the_manifest_metrics_allow(stores, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(stores.get("tiny-int8", _fp32_and_int8) / "store", store)
    config = EngineConfig(provider="cpu")

    def record(drop: float):
        rewrite_manifest(store, lambda raw: raw.update(variant_metrics=scores(drop)))

    record(0.2)
    engine = Engine.load(store, config)
    assert engine.variant == "int8" and "within tolerance" in engine.graph_reason
    rewrite_manifest(store, lambda raw: raw.update(variant_metrics=with_tests(mcnemar(9, 0))))
    engine = Engine.load(store, config)
    assert engine.variant == "fp32" and "exact McNemar" in engine.graph_reason
    record(2.0)
    assert Engine.load(store, config).variant == "fp32"
    assert Engine.load(store, EngineConfig(provider="cpu", graph="int8")).variant == "int8"


def test_a_store_without_readable_data_says_so_and_serves_fp32(tiny, tmp_path: Path) -> None:
    """Branches that recorded no data: publishing still works, the manifest says why
    there are no metrics, and auto serves fp32 naming that reason."""
    repository = tmp_path / "repo"
    tiny.publish(repository, tiny.make("sentiment", 0))
    engine = Engine.load(repository, EngineConfig(provider="cpu"))
    recorded = engine.manifest.extra["variant_metrics"]
    assert "validation data not readable" in recorded["unavailable"]
    assert engine.variant == "fp32" and "not readable" in engine.graph_reason
