"""Each graph variant's validation metric per task, measured for the manifest.

`--graph auto` serves the fastest variant that keeps accuracy
(`model_store.graph_choice`), which needs these numbers in the store. They are
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
from model_store.manifest import Manifest
from training.errors import UsageError
from training.evaluate.store import evaluate_store

# The variant_metrics value of a manifest, or a function making it from a staged store.
Metrics = dict[str, Any]
MeasureMetrics = Callable[[Manifest], Metrics]


def unavailable(reason: str) -> Metrics:
    return {"unavailable": reason}


def measure(manifest: Manifest, data_dir: Path | None = None) -> Metrics:
    """Every variant's validation metric per task, or why they could not be measured.
    `data_dir`: look the recorded data files up there, by name."""
    try:
        tasks = evaluate_store(manifest, data_dir, list(manifest.graphs))
    except (OSError, UsageError, ValueError) as err:  # DataError is a ValueError
        return unavailable(f"validation data not readable at publish ({err})")
    return {"source": "measured at publish, on each task's validation split", "tasks": tasks}


def measurer(data_dir: Path | None = None) -> MeasureMetrics:
    return lambda manifest: measure(manifest, data_dir)


def recorded(metrics: Metrics, source: str) -> MeasureMetrics:
    """Metrics measured earlier (the shipped model's), copied in with where they came from."""
    return lambda manifest: {**metrics, "source": source}


def read_metrics(path: Path) -> Metrics:
    if not path.is_file():
        return unavailable(f"{path.name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{path} is not valid JSON: {err}") from err


def write_metrics(path: Path, metrics: Metrics) -> None:
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
