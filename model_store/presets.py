"""The preset tasks' definitions, and the checks a store's task definitions must pass.

The preset names are a contract: clients of `/sentiment`, `/paraphrase` and
`/similarity` rely on their labels, ranges and input shapes. So a task carrying a
preset's name must carry exactly the preset's definition, wherever a definition enters
(a publish, a start-up, a reload), not only in training. They live here, torch-free, so
the service checks them without importing training (`training.presets` adds the data
files the presets train on).

A definition that is consistent but wrong for its weights (another pooling or kind than
the branch was trained with) shows in its metric: a publish measures each task's fp32
graph on the branch's validation split, and that must reproduce the validation metric
the branch recorded within `METRIC_TOLERANCE`. The store keeps both numbers, so a load
checks they still agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from model_store.tasks import TaskDefinition

PRESET_DEFINITIONS: dict[str, TaskDefinition] = {
    definition.name: definition
    for definition in (
        TaskDefinition(
            name="sentiment",
            kind="classification",
            input="text",
            label_names=(
                "negative",
                "somewhat negative",
                "neutral",
                "somewhat positive",
                "positive",
            ),
        ),
        TaskDefinition(
            name="paraphrase",
            kind="binary",
            input="pair",
            label_names=("not_paraphrase", "paraphrase"),
        ),
        TaskDefinition(name="similarity", kind="regression", input="pair", value_range=(0.0, 5.0)),
    )
}
# Absolute difference allowed between a branch's recorded validation metric and the
# published fp32 graph's on the same split: packing a branch's weights to int8 moves the
# shipped ones by up to 0.0012 (docs/results.md); a wrong pooling moved one by 0.055.
METRIC_TOLERANCE = 0.01


class DefinitionError(ValueError):
    """A task definition that contradicts a preset or its own weights (one line)."""


def check_presets(definitions: Iterable[TaskDefinition]) -> None:
    """Every definition under a preset's name is that preset's definition."""
    for definition in definitions:
        preset = PRESET_DEFINITIONS.get(definition.name)
        if preset is not None and definition != preset:
            raise DefinitionError(
                f"task {definition.name} is a preset, defined as '{preset.describe()}', but "
                f"this one is '{definition.describe()}': name another definition otherwise"
            )


def metric_mismatch(task: str, recorded: dict[str, Any], measured: Any) -> str | None:
    """Why a task's measured fp32 metric contradicts its branch's recorded one, or None
    (also when either is absent: nothing to compare)."""
    value = recorded.get("value")
    number = (int, float)
    if not isinstance(value, number) or not isinstance(measured, number):
        return None
    if isinstance(value, bool) or isinstance(measured, bool):
        return None
    if abs(float(measured) - float(value)) <= METRIC_TOLERANCE:
        return None
    return (
        f"task {task}: the published graph scores {float(measured):.4f} "
        f"{recorded.get('metric', 'metric')} on the branch's validation split, but the "
        f"branch recorded {float(value):.4f} (tolerance {METRIC_TOLERANCE}): its pooling or "
        "kind does not match the weights it was trained with"
    )


def check_metrics(tasks: Iterable[tuple[str, dict[str, Any]]], variant_metrics: Any) -> None:
    """(task, validation entry) pairs against a manifest's variant_metrics value."""
    measured = variant_metrics.get("tasks") if isinstance(variant_metrics, dict) else None
    if not isinstance(measured, dict):
        return  # unavailable: nothing was measured
    for name, validation in tasks:
        entry = measured.get(name)
        problem = metric_mismatch(
            name, validation, entry.get("fp32") if isinstance(entry, dict) else None
        )
        if problem:
            raise DefinitionError(problem)
