"""Does a graph variant lose accuracy against fp32? Paired tests on the same rows.

A variant (int8, fp16) and fp32 answer the same validation rows, so their results are
paired: comparing two accuracies as if they came from independent samples wastes that
and calls noise a loss (9 sentences of 854 are 1.05 points, while one standard error of
an accuracy there is about 1.7). What matters is the rows where they disagree:

- classification and binary tasks: the exact McNemar test, a two-sided binomial test
  on the discordant rows (right in fp32 only vs right in the variant only; rows both get
  right or both get wrong say nothing about which graph is better);
- multilabel tasks (micro F1): a paired bootstrap over rows, as for regression;
- regression tasks (Pearson's r): a paired bootstrap, with a fixed seed, of the metric
  difference fp32 - variant over resampled rows, and its 95% percentile interval.

The figures are recorded in the manifest at publish; `model_store.graph_choice` decides
from them (a loss is significant at 5% when p < 0.05 with more rows right in fp32 only,
or when the interval lies above 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from model_store.metric_consistency import mcnemar_exact
from training.evaluate import multilabel

if TYPE_CHECKING:  # the tests themselves need only numpy: torch-free, like graph choice
    from training.evaluate.store import TaskResult

REFERENCE = "fp32"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def predicted_classes(kind: str, outputs: np.ndarray) -> np.ndarray:
    """The class each row is answered with: argmax of the logits, or logit > 0."""
    if kind == "binary":
        return (outputs[:, 0] > 0).astype(np.int64)
    return outputs.argmax(axis=1).astype(np.int64)


def classification_comparison(
    kind: str, labels: np.ndarray, reference: np.ndarray, variant: np.ndarray
) -> dict[str, Any]:
    truth = (labels > 0.5) if kind == "binary" else labels.astype(np.int64)
    ref_pred, var_pred = predicted_classes(kind, reference), predicted_classes(kind, variant)
    ref_right, var_right = ref_pred == truth, var_pred == truth
    reference_only = int(np.sum(ref_right & ~var_right))
    variant_only = int(np.sum(var_right & ~ref_right))
    return {
        "test": "mcnemar_exact",
        "rows": len(labels),
        "right_in_fp32_only": reference_only,
        "right_in_variant_only": variant_only,
        "p_value": mcnemar_exact(reference_only, variant_only),
        "loss_points": 100.0 * (reference_only - variant_only) / len(labels),
        "disagreement": float(np.mean(ref_pred != var_pred)),
    }


def _pearson_rows(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pearson's r of each row of two (resamples, n) arrays (0 where one is constant)."""
    p = predictions - predictions.mean(axis=1, keepdims=True)
    t = targets - targets.mean(axis=1, keepdims=True)
    denominator = np.sqrt((p * p).sum(axis=1) * (t * t).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(axis=1) / denominator
    return np.where(denominator > 0, r, 0.0)


def regression_comparison(
    labels: np.ndarray,
    reference: np.ndarray,
    variant: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Paired bootstrap of Pearson's r, fp32 - variant, in points; the same resampled
    rows for both graphs, which is what makes it paired."""
    targets = labels.astype(np.float64)
    ref, var = reference[:, 0].astype(np.float64), variant[:, 0].astype(np.float64)
    n = len(targets)
    full = _pearson_rows(np.stack([ref, var]), np.stack([targets, targets]))
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    differences = 100.0 * (
        _pearson_rows(ref[rows], targets[rows]) - _pearson_rows(var[rows], targets[rows])
    )
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(differences, [tail, 100 - tail])
    return {
        "test": "paired_bootstrap",
        "rows": n,
        "resamples": resamples,
        "seed": seed,
        "confidence": CONFIDENCE,
        "loss_points": float(100.0 * (full[0] - full[1])),
        "loss_interval_points": [float(low), float(high)],
        "mean_abs_difference": float(np.mean(np.abs(ref - var))),
    }


def compare_with_reference(result: TaskResult, variant: str) -> dict[str, Any]:
    """One task's paired comparison of `variant` with fp32, by the task's kind."""
    kind = result.task.definition.kind
    reference, outputs = result.outputs[REFERENCE], result.outputs[variant]
    if kind == "regression":
        return regression_comparison(result.labels, reference, outputs)
    if kind == "multilabel":
        thresholds = result.task.definition.thresholds
        return multilabel.f1_comparison(result.labels, thresholds, reference, outputs)
    return classification_comparison(kind, result.labels, reference, outputs)


def paired_comparisons(results: list[TaskResult]) -> dict[str, dict[str, Any]]:
    """{task: {variant: comparison}} for every variant other than fp32 (none without it)."""
    return {
        result.name: {
            variant: compare_with_reference(result, variant)
            for variant in result.outputs
            if variant != REFERENCE and REFERENCE in result.outputs
        }
        for result in results
    }
