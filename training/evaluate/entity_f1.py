"""Entity-level F1, strict (exact span and type), and its paired test between graphs.

The usual CoNLL scoring (conlleval, seqeval): an entity counts as found only when a
predicted entity has exactly its type and span; precision = found / predicted, recall =
found / gold, F1 their harmonic mean, pooled over all sentences (micro). Entities here
are character spans (`training.data.entity_files`, `model_store.entity_spans`), which
is the same as token chunks once the words are fixed, and needs no tag scheme.

Comparing two graph variants on the same sentences is a paired bootstrap over
sentences (F1 does not decompose over rows, so McNemar does not apply): resample the
sentences, recompute both F1s from the resampled counts, and report the interval of
the difference in points, in the shape of the regression tasks' comparison
(`training.evaluate.paired_test`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Span = tuple[int, int, str]  # start, end, type


@dataclass(frozen=True)
class EntityScore:
    precision: float
    recall: float
    f1: float
    found: int
    predicted: int
    gold: int


def counts(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> np.ndarray:
    """Per sentence: (found, predicted, gold) entity counts, an (n, 3) integer array."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    return np.array(
        [
            [len(set(g) & set(p)), len(set(p)), len(set(g))]
            for g, p in zip(gold, predicted, strict=True)
        ],
        dtype=np.int64,
    ).reshape(-1, 3)


def _f1(totals: np.ndarray) -> np.ndarray:
    """F1 from (..., 3) totals of (found, predicted, gold): 2 found / (predicted + gold),
    which equals 2PR/(P+R) and is 0 when nothing is predicted or gold."""
    found, predicted, gold = totals[..., 0], totals[..., 1], totals[..., 2]
    denominator = predicted + gold
    return np.where(denominator > 0, 2.0 * found / np.maximum(denominator, 1), 0.0)


def entity_f1(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> EntityScore:
    """Micro precision, recall and F1 over all sentences."""
    found, n_predicted, n_gold = (int(v) for v in counts(gold, predicted).sum(axis=0))
    return EntityScore(
        precision=found / n_predicted if n_predicted else 0.0,
        recall=found / n_gold if n_gold else 0.0,
        f1=float(_f1(np.array([found, n_predicted, n_gold]))),
        found=found,
        predicted=n_predicted,
        gold=n_gold,
    )


def f1_comparison(
    gold: Sequence[Sequence[Span]],
    reference: Sequence[Sequence[Span]],
    variant: Sequence[Sequence[Span]],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap over sentences of F1, reference - variant, in points."""
    comparison = counts_comparison(
        counts(gold, reference), counts(gold, variant), resamples, seed, confidence
    )
    comparison["disagreement"] = float(
        np.mean([set(r) != set(v) for r, v in zip(reference, variant, strict=True)])
    )
    return comparison


def counts_comparison(
    ref: np.ndarray,
    var: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap over rows of micro F1 from per-row (found, predicted, gold)
    counts, reference - variant, in points: the same resampled rows for both."""
    n = len(ref)
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    differences = 100.0 * (_f1(ref[rows].sum(axis=1)) - _f1(var[rows].sum(axis=1)))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(differences, [tail, 100 - tail])
    loss = 100.0 * float(_f1(ref.sum(axis=0)) - _f1(var.sum(axis=0)))
    return {
        "test": "paired_bootstrap",
        "rows": n,
        "resamples": resamples,
        "seed": seed,
        "confidence": confidence,
        "loss_points": loss,
        "loss_interval_points": [float(low), float(high)],
    }
