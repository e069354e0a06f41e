"""Multilabel scoring: micro and macro F1, per-label thresholds tuned on validation, and
the paired bootstrap of micro F1 that compares a graph variant with fp32.

Labels arrive as `training.data.labels.label_set` bitmasks (one float per row); outputs
as logits, one per label. Numpy only: the variant comparison runs without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.evaluate.entity_f1 import counts_comparison

# A label with fewer positive validation rows than this keeps the 0.5 threshold: tuning
# on a handful of rows fits their noise (one row moves the best cut anywhere).
MIN_POSITIVES_TO_TUNE = 5
DEFAULT_THRESHOLD = 0.5
# Tuned thresholds stay inside (0, 1), so a task definition always accepts them.
_LOWEST, _HIGHEST = 0.01, 0.99


def multi_hot(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """(rows, labels) booleans from the rows' bitmasks."""
    masks = np.asarray(labels).astype(np.int64)
    return (masks[:, None] >> np.arange(num_labels)) & 1 == 1


def probabilities(outputs: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(outputs, dtype=np.float64)))


def decide(outputs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Each label on where its probability is at or over its threshold (as served)."""
    return probabilities(outputs) >= np.asarray(thresholds, dtype=np.float64)


def row_counts(truth: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """Per row: (labels right, labels predicted, labels true), an (n, 3) array."""
    return np.stack(
        [(truth & decided).sum(axis=1), decided.sum(axis=1), truth.sum(axis=1)], axis=1
    ).astype(np.int64)


def _f1(found: np.ndarray, predicted: np.ndarray, gold: np.ndarray) -> np.ndarray:
    denominator = predicted + gold
    return np.where(denominator > 0, 2.0 * found / np.maximum(denominator, 1), 0.0)


def micro_f1(truth: np.ndarray, decided: np.ndarray) -> float:
    found, predicted, gold = row_counts(truth, decided).sum(axis=0)
    return float(_f1(np.array(found), np.array(predicted), np.array(gold)))


def macro_f1(truth: np.ndarray, decided: np.ndarray) -> float:
    """Mean of the labels' F1 (a label neither true nor predicted anywhere scores 0)."""
    found = (truth & decided).sum(axis=0)
    return float(np.mean(_f1(found, decided.sum(axis=0), truth.sum(axis=0))))


def f1_scores(outputs: np.ndarray, labels: np.ndarray, thresholds: Sequence[float]) -> dict:
    truth = multi_hot(labels, len(thresholds))
    decided = decide(outputs, thresholds)
    return {"micro_f1": micro_f1(truth, decided), "macro_f1": macro_f1(truth, decided)}


def tune_thresholds(outputs: np.ndarray, labels: np.ndarray, num_labels: int) -> tuple[float, ...]:
    """Per label, the threshold that maximises that label's F1 on these rows; 0.5 for a
    label with fewer than MIN_POSITIVES_TO_TUNE positive rows. Candidates are the
    midpoints between consecutive distinct probabilities (a cut no row sits on); of
    equal F1, the one nearest 0.5."""
    truth = multi_hot(labels, num_labels)
    chances = probabilities(outputs)
    chosen = []
    for label in range(num_labels):
        positives = truth[:, label]
        if positives.sum() < MIN_POSITIVES_TO_TUNE:
            chosen.append(DEFAULT_THRESHOLD)
            continue
        values = np.unique(chances[:, label])
        cuts = np.clip((values[:-1] + values[1:]) / 2, _LOWEST, _HIGHEST)
        cuts = np.unique(np.append(cuts, DEFAULT_THRESHOLD))
        decided = chances[:, label][:, None] >= cuts[None, :]
        found = (decided & positives[:, None]).sum(axis=0)
        f1 = _f1(found, decided.sum(axis=0), np.full(len(cuts), positives.sum()))
        best = np.flatnonzero(f1 == f1.max())
        chosen.append(float(cuts[best[np.argmin(np.abs(cuts[best] - DEFAULT_THRESHOLD))]]))
    return tuple(chosen)


def f1_comparison(
    labels: np.ndarray, thresholds: Sequence[float], reference: np.ndarray, variant: np.ndarray
) -> dict[str, Any]:
    """Paired bootstrap over rows of micro F1, fp32 - variant, in points."""
    truth = multi_hot(labels, len(thresholds))
    ref, var = decide(reference, thresholds), decide(variant, thresholds)
    comparison = counts_comparison(row_counts(truth, ref), row_counts(truth, var))
    comparison["disagreement"] = float(np.mean((ref != var).any(axis=1)))
    return comparison
