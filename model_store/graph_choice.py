"""Which graph variant `--graph auto` serves: the fastest one that keeps accuracy.

A store records, per graph variant, each task's validation metric, measured when it
was published (`variant_metrics` in the manifest, written by `training.evaluate.variant_metrics`).
Serving picks the fastest variant for the hardware whose metric is within a tolerance
of fp32's on every task (in points: hundredths of the metric), else fp32. Without
recorded metrics there is nothing to weigh speed against, so it serves fp32 and says
so. The answer carries its reason, for the start-up log and `/info`.

The speed order is measured, not derived (docs/results.md): on a CPU the int8 graph
serves about twice the requests of fp32 (and fp16 runs slower than fp32 there, so it
is never a CPU choice); on CUDA fp16 is the fast one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model_store.manifest import Manifest

VARIANT_METRICS_KEY = "variant_metrics"
DEFAULT_TOLERANCE_POINTS = 1.0
# Fastest first, per provider; fp32 last, the reference every other is held to.
SPEED_ORDER = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32")}


@dataclass(frozen=True)
class GraphChoice:
    """The variant to serve and one line saying why."""

    variant: str
    reason: str


def recorded_metrics(manifest: Manifest) -> dict[str, Any]:
    """The manifest's per-variant validation metrics: {'tasks': {task: {variant: value,
    'metric': name, ...}}, 'source': ...}, or {'unavailable': why}."""
    recorded = manifest.extra.get(VARIANT_METRICS_KEY)
    if not isinstance(recorded, dict):
        return {"unavailable": "the store records no per-variant validation metrics"}
    return recorded


def losses(manifest: Manifest, variant: str) -> dict[str, float] | None:
    """Points each task loses in `variant` against fp32 (negative: it gains), or None
    when some labelled task has no recorded metric for either graph. Embedding tasks have
    no validation metric (publishing checks their graphs against PyTorch by cosine)."""
    tasks = recorded_metrics(manifest).get("tasks") or {}
    result = {}
    for task in manifest.tasks:
        if task.kind == "embedding":
            continue
        scores = tasks.get(task.name) or {}
        if not isinstance(scores.get("fp32"), int | float):
            return None
        if not isinstance(scores.get(variant), int | float):
            return None
        result[task.name] = 100.0 * (scores["fp32"] - scores[variant])
    return result


def choose_graph(
    manifest: Manifest, cuda: bool, tolerance_points: float = DEFAULT_TOLERANCE_POINTS
) -> GraphChoice:
    """The fastest variant for the hardware within `tolerance_points` of fp32 on every
    task, else fp32; the reason names the deciding numbers."""
    fast = SPEED_ORDER["cuda" if cuda else "cpu"][0]
    if fast not in manifest.graphs:
        return GraphChoice("fp32", f"the store has no {fast} graph")
    unavailable = recorded_metrics(manifest).get("unavailable")
    if unavailable:
        return GraphChoice("fp32", f"{unavailable}, so the {fast} graph's accuracy is unknown")
    lost = losses(manifest, fast)
    if lost is None:
        return GraphChoice("fp32", f"the store records no validation metric of {fast} per task")
    if not lost:
        return GraphChoice("fp32", f"no labelled task to weigh the {fast} graph's accuracy on")
    worst = max(lost, key=lambda task: lost[task])
    detail = f"largest loss {lost[worst]:.2f} points ({worst}), tolerance {tolerance_points:g}"
    if lost[worst] <= tolerance_points:
        return GraphChoice(fast, f"{fast} is within tolerance of fp32 on every task: {detail}")
    return GraphChoice("fp32", f"{fast} loses too much accuracy against fp32: {detail}")
