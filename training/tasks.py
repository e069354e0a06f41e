"""The three tasks: their outputs, losses, validation metrics and label parsing.

A task is data, not a class hierarchy: one `TaskSpec` per task says how many outputs
its head has, which loss trains it, which metric picks the best epoch, and how to turn
raw outputs into predictions. Everything task-specific elsewhere reads it from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from training.data import LabelParser, binary_label, class_label, score_label

SIMILARITY_RANGE = (0.0, 5.0)


def accuracy_of_classes(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(outputs.argmax(axis=1) == labels.astype(np.int64)))


def accuracy_of_logit(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((outputs[:, 0] > 0) == (labels > 0.5)))


def pearson(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Pearson's r; 0.0 when either side is constant (r is undefined there)."""
    predictions = outputs[:, 0].astype(np.float64)
    targets = labels.astype(np.float64)
    if predictions.std() == 0 or targets.std() == 0:
        return 0.0
    return float(np.corrcoef(predictions, targets)[0, 1])


def _cross_entropy(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, labels.long())


def _binary_cross_entropy(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(outputs[:, 0], labels.float())


def _mean_squared_error(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs[:, 0], labels.float())


@dataclass(frozen=True)
class TaskSpec:
    """Everything that differs between tasks."""

    name: str
    kind: str  # "classification" | "binary" | "regression": how outputs are read
    pair: bool  # cross-encoded sentence pair, or a single sentence
    num_outputs: int
    label_names: tuple[str, ...]
    metric_name: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Callable[[np.ndarray, np.ndarray], float]
    parse_label: LabelParser


TASKS: dict[str, TaskSpec] = {
    "sentiment": TaskSpec(
        name="sentiment",
        kind="classification",
        pair=False,
        num_outputs=5,
        label_names=("negative", "somewhat negative", "neutral", "somewhat positive", "positive"),
        metric_name="accuracy",
        loss=_cross_entropy,
        metric=accuracy_of_classes,
        parse_label=class_label(5),
    ),
    "paraphrase": TaskSpec(
        name="paraphrase",
        kind="binary",
        pair=True,
        num_outputs=1,
        label_names=("not_paraphrase", "paraphrase"),
        metric_name="accuracy",
        loss=_binary_cross_entropy,
        metric=accuracy_of_logit,
        parse_label=binary_label(),
    ),
    "similarity": TaskSpec(
        name="similarity",
        kind="regression",
        pair=True,
        num_outputs=1,
        label_names=(),
        metric_name="pearson",
        loss=_mean_squared_error,
        metric=pearson,
        parse_label=score_label(*SIMILARITY_RANGE),
    ),
}


def overall_score(metrics: Mapping[str, float]) -> float:
    """The project's one-number summary over the three tasks:
    `(sentiment_acc + paraphrase_acc + (similarity_pearson + 1) / 2) / 3`.

    Pearson's r is mapped from [-1, 1] onto [0, 1] so that all three terms share the
    accuracies' scale.
    """
    missing = [task for task in TASKS if task not in metrics]
    if missing:
        raise ValueError(f"the overall score needs every task; missing {', '.join(missing)}")
    similarity = (metrics["similarity"] + 1) / 2
    return (metrics["sentiment"] + metrics["paraphrase"] + similarity) / 3
