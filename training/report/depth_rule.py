"""The method's rule for each task's branch depth, applied to the sweep file.

Wei et al. pick each task's K as the smallest number of tuned top layers whose
validation metric keeps a fixed share of full fine-tuning (their headline: 99.6%),
distilling the shallow branch from a deeper one where that helps. A smaller K leaves
more frozen layers shared by every task, so the graph is smaller and an input asked
of several tasks runs more of itself once.

Here: K is the smallest K whose validation metric keeps at least `KEEP` (99%) of the
task's full fine-tuning reference, with or without distillation and with whichever
recipe recorded at that K scores higher (the reference itself is the task's best full
fine-tuning recipe); where several seeds were run, their mean is what counts. The records come
from `docs/report/k_sweep.json` (`benchmarks.k_sweep` and `benchmarks.distill_sweep`).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from training.report.sweep_log import FULL, SweepRecord

KEEP = 0.99
# Recipe keys that vary between the runs of one sweep point; the rest is the recipe.
_POINT_KEYS = ("seed", "teacher")


@dataclass(frozen=True)
class SweepPoint:
    """One (task, K, with or without a teacher) of the sweep: its runs over seeds."""

    task: str
    layers: int
    distilled: bool
    values: tuple[float, ...]
    recipe: str = "{}"  # the base recipe, as sorted JSON

    @property
    def recipe_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in json.loads(self.recipe).items())

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass(frozen=True)
class DepthChoice:
    task: str
    point: SweepPoint | None  # None: no swept K keeps the share
    reference: float

    @property
    def share(self) -> float | None:
        return self.point.mean / self.reference if self.point else None


def base_recipe(record: SweepRecord) -> dict:
    return {k: v for k, v in record.recipe.items() if k not in _POINT_KEYS}


def sweep_points(sweep: Iterable[SweepRecord], recipe: dict | None = None) -> list[SweepPoint]:
    """The partial runs of one base recipe (default: of every recipe), grouped over
    seeds, in (task, K) order."""
    values: dict[tuple[str, int, bool, str], list[float]] = {}
    for record in sweep:
        if record.layers == FULL or (recipe is not None and base_recipe(record) != recipe):
            continue
        text = json.dumps(base_recipe(record), sort_keys=True)
        key = (record.task, int(record.layers), "teacher" in record.recipe, text)
        values.setdefault(key, []).append(record.value)
    return [
        SweepPoint(task, layers, distilled, tuple(found), text)
        for (task, layers, distilled, text), found in sorted(values.items())
    ]


def choose_depths(
    points: Iterable[SweepPoint], full: dict[str, float], keep: float = KEEP
) -> dict[str, DepthChoice]:
    """Per task with a full fine-tuning reference: the rule's K (see the module doc)."""
    by_task: dict[str, dict[int, list[SweepPoint]]] = {}
    for point in points:
        by_task.setdefault(point.task, {}).setdefault(point.layers, []).append(point)
    choices: dict[str, DepthChoice] = {}
    for task, depths in sorted(by_task.items()):
        if task not in full:
            continue
        chosen = None
        for layers in sorted(depths):
            best = max(depths[layers], key=lambda p: (p.mean, not p.distilled))
            if best.mean >= keep * full[task]:
                chosen = best
                break
        choices[task] = DepthChoice(task, chosen, full[task])
    return choices
