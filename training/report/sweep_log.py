"""The K-sweep results file: one record per (task, branch depth, recipe) training run.

The sweep benchmark appends to it and the accuracy report plots from it, so the chart
in the report is drawn from the same runs as the table in docs/results.md. A re-run of
the same (task, K, recipe) replaces its old record instead of adding a duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from model_store.atomic import atomic_write_text

FULL = "full"  # the `layers` value of a full fine-tuning run (embeddings tuned too)


@dataclass(frozen=True)
class SweepRecord:
    task: str
    layers: int | str  # 1..L, or FULL
    metric: str
    value: float
    best_epoch: int
    minutes: float
    recipe: dict  # the TrainConfig fields that were not the K: lr, epochs, pooling, ...

    @property
    def key(self) -> tuple[str, str, str]:
        return self.task, str(self.layers), json.dumps(self.recipe, sort_keys=True)


def load_sweep(path: Path) -> list[SweepRecord]:
    if not path.is_file():
        return []
    return [SweepRecord(**raw) for raw in json.loads(path.read_text(encoding="utf-8"))["runs"]]


def record_sweep(path: Path, records: Iterable[SweepRecord]) -> None:
    """Add or replace records, then write the file atomically (temp file, rename)."""
    merged = {record.key: record for record in load_sweep(path)}
    merged.update((record.key, record) for record in records)
    runs = sorted(merged.values(), key=lambda r: (r.task, r.layers == FULL, str(r.layers)))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"runs": [asdict(r) for r in runs]}, indent=1) + "\n")
