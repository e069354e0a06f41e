"""How a task trains and is scored: loss, metric and label parsing, from its kind.

The task itself is data (`model_store.tasks.TaskDefinition`, read from branch.json or
given on the command line); this module only maps its kind to the torch loss, the
numpy metric that picks the best epoch, and the parser of labels in its data file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from model_store.tasks import TaskDefinition
from training.data.labels import (
    LabelParser,
    binary_label,
    label_set,
    named_class_label,
    score_label,
)
from training.data.presets import PRESETS
from training.evaluate import multilabel


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


def _multilabel_cross_entropy(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Independent sigmoids: binary cross-entropy per label, on the bitmask's bits."""
    bits = torch.arange(outputs.shape[1], device=labels.device)
    targets = ((labels.long().unsqueeze(1) >> bits) & 1).to(outputs.dtype)
    return F.binary_cross_entropy_with_logits(outputs, targets)


@dataclass(frozen=True)
class _MicroF1:
    """Micro F1 at the definition's thresholds (0.5 until tuned after training)."""

    thresholds: tuple[float, ...]

    def __call__(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        return multilabel.f1_scores(outputs, labels, self.thresholds)["micro_f1"]


def _mean_squared_error(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs[:, 0], labels.float())


@dataclass(frozen=True)
class TaskSpec:
    """A task definition with what training needs of it; built by `task_spec`."""

    definition: TaskDefinition
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Callable[[np.ndarray, np.ndarray], float]
    parse_label: LabelParser

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def kind(self) -> str:
        return self.definition.kind

    @property
    def pair(self) -> bool:
        return self.definition.pair

    @property
    def num_outputs(self) -> int:
        return self.definition.num_outputs

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.definition.label_names

    @property
    def metric_name(self) -> str:
        return self.definition.metric_name


def _not_trained(*_args: object) -> float:
    raise ValueError("an embedding task is the base's own pooled output: it is not trained")


def task_spec(definition: TaskDefinition) -> TaskSpec:
    """Loss, metric and label parser follow from the kind (as `problem_type` does in
    transformers): cross-entropy and accuracy, logistic loss and accuracy, or squared
    error and Pearson's r with labels checked against the range. An embedding is never
    trained: its spec only carries the definition (merging and export need nothing else)."""
    if definition.kind == "embedding":
        return TaskSpec(definition, _not_trained, _not_trained, _not_trained)
    if definition.kind == "classification":
        return TaskSpec(
            definition,
            _cross_entropy,
            accuracy_of_classes,
            named_class_label(definition.label_names),
        )
    if definition.kind == "multilabel":
        return TaskSpec(
            definition,
            _multilabel_cross_entropy,
            _MicroF1(definition.thresholds),
            label_set(definition.label_names),
        )
    if definition.kind == "binary":
        return TaskSpec(
            definition,
            _binary_cross_entropy,
            accuracy_of_logit,
            binary_label(definition.label_names),
        )
    low, high = definition.value_range or (0.0, 0.0)
    return TaskSpec(definition, _mean_squared_error, pearson, score_label(low, high))


PRESET_SCORE_TASKS = ("sentiment", "paraphrase", "similarity")


def overall_score(metrics: Mapping[str, float]) -> float:
    """The project's one-number summary of the three preset tasks, as in the literature:
    `(sentiment_acc + paraphrase_acc + (similarity_pearson + 1) / 2) / 3`.

    Pearson's r is mapped from [-1, 1] onto [0, 1] so that all three terms share the
    accuracies' scale. Other tasks have no place in this benchmark figure.
    """
    missing = [task for task in PRESET_SCORE_TASKS if task not in metrics]
    if missing:
        raise ValueError(f"the overall score needs every preset; missing {', '.join(missing)}")
    similarity = (metrics["similarity"] + 1) / 2
    return (metrics["sentiment"] + metrics["paraphrase"] + similarity) / 3


def preset_spec(name: str) -> TaskSpec:
    """The training view of a preset task (benchmarks and tests train presets by name)."""
    return task_spec(PRESETS[name].definition)
