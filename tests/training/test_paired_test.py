"""The paired tests that decide whether a graph variant loses accuracy against fp32."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_store.manifest import TaskEntry
from training.evaluate.paired_test import (
    classification_comparison,
    mcnemar_exact,
    paired_comparisons,
    regression_comparison,
)
from training.evaluate.store import TaskResult
from training.fit.objectives import preset_spec


def test_exact_mcnemar_is_the_two_sided_binomial_on_the_discordant_rows() -> None:
    assert mcnemar_exact(0, 0) == 1.0  # no discordant row: no evidence either way
    assert mcnemar_exact(9, 0) == pytest.approx(2 / 2**9)
    assert mcnemar_exact(3, 3) == 1.0
    # 14 against 5: P(X <= 5 | n=19, 1/2), doubled
    assert mcnemar_exact(14, 5) == pytest.approx(
        2 * sum(math.comb(19, k) for k in range(6)) / 2**19
    )
    assert mcnemar_exact(5, 14) == mcnemar_exact(14, 5)  # two-sided
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in ((14, 5), (30, 12), (1, 7), (100, 80)):
        expected = scipy_stats.binomtest(b, b + c, 0.5).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def logits_for(classes: np.ndarray, num_classes: int = 2) -> np.ndarray:
    out = np.zeros((len(classes), num_classes), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


def test_classification_counts_the_rows_only_one_graph_gets_right() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 1], dtype=np.float32)
    fp32 = labels.astype(np.int64).copy()
    fp32[0] = 1  # fp32 wrong on row 0
    variant = labels.astype(np.int64).copy()
    variant[[1, 2, 5]] = [0, 0, 1]  # the variant wrong on rows 1, 2, 5
    test = classification_comparison(
        "classification", labels, logits_for(fp32), logits_for(variant)
    )
    assert test["right_in_fp32_only"] == 3 and test["right_in_variant_only"] == 1
    assert test["p_value"] == pytest.approx(mcnemar_exact(3, 1))
    assert test["loss_points"] == pytest.approx(100 * 2 / 8)
    assert test["disagreement"] == pytest.approx(4 / 8)


def test_binary_tasks_compare_the_sign_of_the_logit() -> None:
    labels = np.array([1, 0, 1, 0], dtype=np.float32)
    fp32 = np.array([[2.0], [-1.0], [0.5], [-0.2]], dtype=np.float32)
    variant = np.array([[1.5], [-1.2], [-0.1], [0.3]], dtype=np.float32)  # rows 2, 3 flip
    test = classification_comparison("binary", labels, fp32, variant)
    assert (test["right_in_fp32_only"], test["right_in_variant_only"]) == (2, 0)
    assert test["disagreement"] == 0.5


def test_the_bootstrap_interval_is_seeded_and_sees_a_real_loss() -> None:
    rng = np.random.default_rng(1)
    labels = rng.uniform(0, 5, 400).astype(np.float32)
    fp32 = (labels + rng.normal(0, 0.5, 400))[:, None].astype(np.float32)
    same = regression_comparison(labels, fp32, fp32.copy())
    assert same["loss_points"] == 0 and same["loss_interval_points"] == [0.0, 0.0]
    worse = (fp32[:, 0] + rng.normal(0, 1.5, 400))[:, None].astype(np.float32)
    lost = regression_comparison(labels, fp32, worse)
    low, high = lost["loss_interval_points"]
    assert 0 < low <= lost["loss_points"] <= high  # a loss the interval cannot explain away
    assert regression_comparison(labels, fp32, worse) == lost  # same seed, same interval
    slightly = (fp32[:, 0] + rng.normal(0, 0.05, 400))[:, None].astype(np.float32)
    low, high = regression_comparison(labels, fp32, slightly)["loss_interval_points"]
    assert low <= 0 <= high  # noise-level differences are not a significant loss


def test_every_variant_is_compared_with_fp32_by_its_tasks_kind() -> None:
    labels = np.array([0, 1, 2, 3, 4, 0], dtype=np.float32)
    sentiment = TaskEntry(preset_spec("sentiment").definition, 0, "s", "v1", 1, "cls", {}, 1)
    similarity = TaskEntry(preset_spec("similarity").definition, 2, "m", "v1", 1, "cls", {}, 1)
    outputs = logits_for(labels.astype(np.int64), 5)
    scores = labels[:, None] + np.linspace(0, 1, 6, dtype=np.float32)[:, None]
    results = [
        TaskResult(sentiment, labels, {"fp32": outputs, "int8": outputs, "fp16": outputs}),
        TaskResult(similarity, labels, {"fp32": scores, "int8": scores * 0.9}),
    ]
    comparisons = paired_comparisons(results)
    assert set(comparisons["sentiment"]) == {"int8", "fp16"}
    assert comparisons["sentiment"]["int8"]["test"] == "mcnemar_exact"
    assert comparisons["sentiment"]["int8"]["disagreement"] == 0.0
    assert comparisons["similarity"]["int8"]["test"] == "paired_bootstrap"
