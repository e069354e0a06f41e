"""Each graph variant's validation metric per task, measured for the manifest.

`--graph auto` serves the fastest variant that keeps accuracy
(`model_store.graph_choice`), which needs these numbers in the store: each variant's
metric, and its paired test against fp32 on the same rows (`comparisons`: the test,
its figures and the disagreement with fp32, per task and variant). They are
measured when a store is published, from the data every task's branch recorded (its
file, columns and validation split; `training.evaluate.store`), through each variant's
graph in ONNX Runtime. When that data cannot be read (another machine, a branch that
recorded none) the store says why instead, and auto serves fp32.

The shipped model is built where the data may be absent (`make serve` on a laptop), so
its metrics are measured once, when its checksums are recorded, and committed next to
them (`models/shipped/variant_metrics.json`); the build copies them in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_store.atomic import atomic_write_text
from model_store.graph_choice import COMPARISONS
from model_store.manifest import Manifest
from training.errors import UsageError
from training.evaluate.paired_test import paired_comparisons
from training.evaluate.store import metrics_by_task, store_outputs

# Per task and variant, the paired test against fp32 on the same rows
# (`training.evaluate.paired_test`): the key `model_store.graph_choice` reads.
COMPARISONS_KEY = COMPARISONS

# The variant_metrics value of a manifest, or a function making it from a staged store.
Metrics = dict[str, Any]
MeasureMetrics = Callable[[Manifest], Metrics]


def unavailable(reason: str) -> Metrics:
    return {"unavailable": reason}


def measure(manifest: Manifest, data_dir: Path | None = None) -> Metrics:
    """Every variant's validation metric per task, or why they could not be measured.
    `data_dir`: look the recorded data files up there, by name."""
    try:
        results = store_outputs(manifest, data_dir, list(manifest.graphs))
    except (OSError, UsageError, ValueError) as err:  # DataError is a ValueError
        return unavailable(f"validation data not readable at publish ({err})")
    return {
        "source": "measured at publish, on each task's validation split",
        "tasks": metrics_by_task(results),
        COMPARISONS_KEY: paired_comparisons(results),
    }


def measurer(data_dir: Path | None = None) -> MeasureMetrics:
    return lambda manifest: measure(manifest, data_dir)


def recorded(metrics: Metrics, source: str) -> MeasureMetrics:
    """Metrics measured earlier (the shipped model's), copied in with where they came from."""
    return lambda manifest: {**metrics, "source": source}


def recordable(metrics: Metrics) -> Metrics:
    """What the shipped model keeps of measured metrics: the figures, not their source."""
    return {key: value for key, value in metrics.items() if key != "source"}


def read_metrics(path: Path) -> Metrics:
    if not path.is_file():
        return unavailable(f"{path.name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{path} is not valid JSON: {err}") from err


def write_metrics(path: Path, metrics: Metrics) -> None:
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
