"""The recorded variant metrics must agree with themselves before they decide anything.

`--graph auto` serves a quantized graph on the strength of the manifest's figures: each
task's metric per graph and the paired test of each variant against fp32
(`model_store.graph_choice`). The manifest's hash proves the figures are the ones
published, not that they are true: figures rewritten (and the manifest re-signed) to
make int8 look harmless would have it served. What can be checked without the data is
that the figures are the ones a measurement writes: every labelled task and graph
measured, each value finite and in its metric's range, and each paired test the
arithmetic of its own figures (the discordant rows give the accuracy difference and
the exact p-value; a bootstrap's point loss is the metric difference). A store whose
figures contradict themselves is refused at load, in one line. Torch-free.
"""

from __future__ import annotations

import math
from typing import Any

from model_store.manifest import MANIFEST_FILE, Manifest, StoreError

RANGES = {"accuracy": (0.0, 1.0), "pearson": (-1.0, 1.0), "f1": (0.0, 1.0)}
ABSOLUTE = 1e-6  # figures are written from float64 arithmetic: equal to rounding


def mcnemar_exact(reference_only: int, variant_only: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each discordant row is a
    fair coin; p = P(a split at least as uneven), doubled and capped at 1."""
    n = reference_only + variant_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(reference_only, variant_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= ABSOLUTE + 1e-9 * max(abs(a), abs(b))


def problem_with(manifest: Manifest, metrics: dict[str, Any]) -> str | None:
    """Why the recorded figures contradict themselves or the store, or None."""
    tasks = metrics.get("tasks")
    if not isinstance(tasks, dict):
        return "its variant metrics list no tasks"
    labelled = {t.name: t for t in manifest.tasks if t.kind != "embedding"}
    unknown = sorted(set(tasks) - set(labelled))
    if unknown:
        return f"its variant metrics name {unknown[0]}, which is no labelled task of the store"
    comparisons = metrics.get("comparisons") or {}
    if not isinstance(comparisons, dict):
        return "its paired tests are not a mapping"
    for name, figures in tasks.items():
        problem = _task_problem(manifest, name, figures, comparisons.get(name))
        if problem:
            return f"task {name}: {problem}"
    return None


def _task_problem(manifest: Manifest, name: str, figures: Any, tests: Any) -> str | None:
    if not isinstance(figures, dict):
        return "its figures are not a mapping"
    low, high = RANGES.get(figures.get("metric"), (-math.inf, math.inf))
    for variant in manifest.graphs:
        value = figures.get(variant)
        if value is None:
            continue  # not measured (older stores measured fewer graphs)
        if not _number(value) or not low <= value <= high:
            return f"its {variant} figure {value!r:.40} is not a {figures.get('metric')} value"
    if tests is None:
        return None
    if not isinstance(tests, dict):
        return "its paired tests are not a mapping"
    for variant, test in tests.items():
        if variant not in manifest.graphs or not _number(figures.get(variant)):
            return f"a paired test of {variant!r:.40}, a graph it has no figure for"
        if not _number(figures.get("fp32")):
            return "paired tests without an fp32 figure"
        difference = 100.0 * (figures["fp32"] - figures[variant])
        problem = _test_problem(test, difference, figures.get("examples"))
        if problem:
            return f"the paired test of {variant} against fp32 {problem}"
    return None


def _test_problem(test: Any, difference_points: float, examples: Any) -> str | None:
    if not isinstance(test, dict):
        return "is not a mapping"
    rows = test.get("rows")
    if not _count(rows) or rows == 0 or (_count(examples) and rows != examples):
        return f"counts {rows!r:.20} rows, not the {examples!r:.20} the figures were measured on"
    if not _number(test.get("loss_points")) or not _close(test["loss_points"], difference_points):
        return f"states a loss that is not the figures' difference ({difference_points:.4g} points)"
    if test.get("test") == "mcnemar_exact":
        only_fp32, only_variant = test.get("right_in_fp32_only"), test.get("right_in_variant_only")
        if not (_count(only_fp32) and _count(only_variant)) or only_fp32 + only_variant > rows:
            return "has impossible discordant counts"
        if not _close(difference_points, 100.0 * (only_fp32 - only_variant) / rows):
            return "has discordant rows that do not give the figures' difference"
        p_value = test.get("p_value")
        if not _number(p_value) or not _close(p_value, mcnemar_exact(only_fp32, only_variant)):
            return "states a p-value its discordant rows do not give"
        return None
    if test.get("test") == "paired_bootstrap":
        interval = test.get("loss_interval_points")
        if (
            not isinstance(interval, list)
            or len(interval) != 2
            or not all(_number(v) for v in interval)
            or interval[0] > interval[1]
        ):
            return "has no valid interval"
        return None
    return f"is of an unknown kind {test.get('test')!r:.40}"


def check_variant_metrics(manifest: Manifest, metrics: Any) -> None:
    """StoreError in one line when `metrics` (the manifest's variant_metrics) contradict
    themselves; nothing to check when they are absent or say they are unavailable."""
    if not isinstance(metrics, dict) or "unavailable" in metrics:
        return
    problem = problem_with(manifest, metrics)
    if problem:
        raise StoreError(
            f"{manifest.directory / MANIFEST_FILE}: {problem}: the recorded figures "
            "contradict themselves (publish the version again rather than editing it)"
        )
