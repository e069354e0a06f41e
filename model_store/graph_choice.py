"""Which graph variant `--graph auto` serves: the fastest one that keeps accuracy.

A store records, per graph variant, each task's validation metric, measured when it was
published (`variant_metrics` in the manifest, written by
`training.evaluate.variant_metrics`), and the paired test of the variant against fp32 on
the same rows (`comparisons`: exact McNemar on the discordant rows for classification
and binary tasks, a seeded paired bootstrap interval of the metric difference for
regression; see `training.evaluate.paired_test`). Serving picks the fastest variant for
the hardware that, on every task, loses no accuracy significant at the 5% level AND
loses at most the tolerance in points (hundredths of the metric;
BERT_MTS_GRAPH_TOLERANCE_POINTS, default 1), else fp32. The test keeps noise from
deciding (a difference of 9 sentences in 854 is no evidence); the tolerance keeps a real
but small loss, or a large one that too few rows could not prove, from being served as
if free. A store that records no paired test (published before them) is judged by the
point loss alone, and the reason says so. Without recorded metrics there is nothing to
weigh speed against, so it serves fp32 and says so. The answer carries its reason, with
the deciding test's figures, for the start-up log and `/info`.

A repository keeps its choice across publishes. Whichever variant serves, every task's
answers come from that one graph, so a publish that flipped the choice (a new task's
int8 test failing, a task re-measured on another CPU) would change every other task's
answers too, against the promise that retraining one task never touches another. So a
publish into a repository records the choice it made per provider (`served_graphs`,
written by `training.graph.graph_policy`), carried over from the version before unless
the operator asks for a new one, and `choose_graph` serves that record as it is, as
long as the tolerance it was made at is the one in force; a store without a record (a
fresh build) is decided from its figures as above.

The speed order is measured, not derived (docs/results.md): on a CPU the int8 graph
serves about twice the requests of fp32 (and fp16 runs slower than fp32 there, so it
is never a CPU choice); on CUDA fp16 is the fast one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from model_store.manifest import Manifest, TaskEntry

VARIANT_METRICS_KEY = "variant_metrics"
SERVED_KEY = "served_graphs"  # {provider: {"variant", "reason", "tolerance_points"}}
TOLERANCE_ENVIRONMENT = "BERT_MTS_GRAPH_TOLERANCE_POINTS"
RECORDED = "recorded at publish: "  # how a recorded choice's reason begins
COMPARISONS = "comparisons"  # within variant_metrics: {task: {variant: paired test}}
DEFAULT_TOLERANCE_POINTS = 1.0
SIGNIFICANCE_LEVEL = 0.05
# Fastest first, per provider; fp32 last, the reference every other is held to.
SPEED_ORDER = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32")}


@dataclass(frozen=True)
class GraphChoice:
    """The variant to serve and one line saying why."""

    variant: str
    reason: str


def recorded_metrics(manifest: Manifest) -> dict[str, Any]:
    """The manifest's per-variant validation metrics: {'tasks': {task: {variant: value,
    'metric': name, ...}}, 'comparisons': ..., 'source': ...}, or {'unavailable': why}."""
    recorded = manifest.extra.get(VARIANT_METRICS_KEY)
    if not isinstance(recorded, dict):
        return {"unavailable": "the store records no per-variant validation metrics"}
    return recorded


def labelled_tasks(manifest: Manifest) -> list[TaskEntry]:
    """The tasks a graph's accuracy is weighed on: every kind but embedding, which has
    no validation metric (publishing checks its graphs against PyTorch by cosine)."""
    return [task for task in manifest.tasks if task.kind != "embedding"]


def losses(manifest: Manifest, variant: str) -> dict[str, float] | None:
    """Points each task loses in `variant` against fp32 (negative: it gains), or None
    when some labelled task has no recorded metric for either graph."""
    tasks = recorded_metrics(manifest).get("tasks") or {}
    result = {}
    for task in labelled_tasks(manifest):
        scores = tasks.get(task.name) or {}
        if not isinstance(scores.get("fp32"), int | float):
            return None
        if not isinstance(scores.get(variant), int | float):
            return None
        result[task.name] = 100.0 * (scores["fp32"] - scores[variant])
    return result


def paired_tests(manifest: Manifest, variant: str) -> dict[str, dict[str, Any]] | None:
    """Each labelled task's recorded paired test of `variant` against fp32, or None when
    some task has none (a store published before they were recorded)."""
    comparisons = recorded_metrics(manifest).get(COMPARISONS)
    if not isinstance(comparisons, dict):
        return None
    result = {}
    for task in labelled_tasks(manifest):
        test = (comparisons.get(task.name) or {}).get(variant)
        if not isinstance(test, dict) or test.get("test") not in _SIGNIFICANT:
            return None
        result[task.name] = test
    return result


def _mcnemar_loses(test: dict[str, Any]) -> bool:
    worse = test["right_in_fp32_only"] > test["right_in_variant_only"]
    return worse and test["p_value"] < SIGNIFICANCE_LEVEL


def _bootstrap_loses(test: dict[str, Any]) -> bool:
    return test["loss_interval_points"][0] > 0  # the whole interval is a loss


_SIGNIFICANT = {"mcnemar_exact": _mcnemar_loses, "paired_bootstrap": _bootstrap_loses}


def significant_loss(test: dict[str, Any]) -> bool:
    """Does the recorded paired test show a loss at the 5% level?"""
    return _SIGNIFICANT[test["test"]](test)


def describe(test: dict[str, Any], variant: str) -> str:
    """The test and its figures, in words."""
    if test["test"] == "mcnemar_exact":
        return (
            f"exact McNemar on {test['rows']} rows: {test['right_in_fp32_only']} right in fp32 "
            f"only, {test['right_in_variant_only']} in {variant} only, "
            f"p={test['p_value']:.3g}, disagreement {100 * test['disagreement']:.1f}%"
        )
    low, high = test["loss_interval_points"]
    return (
        f"paired bootstrap on {test['rows']} rows ({test['resamples']} resamples, seed "
        f"{test['seed']}): loss {test['confidence']:.0%} interval [{low:.2f}, {high:.2f}] points"
    )


def provider_key(cuda: bool) -> str:
    return "cuda" if cuda else "cpu"


def recorded_choice(manifest: Manifest, cuda: bool, tolerance_points: float) -> GraphChoice | None:
    """The choice a publish recorded for this provider, if it was made at
    `tolerance_points` and names a graph the store has."""
    record = (manifest.extra.get(SERVED_KEY) or {}).get(provider_key(cuda))
    if not isinstance(record, dict):
        return None
    variant, reason = record.get("variant"), record.get("reason")
    if variant not in manifest.graphs or not isinstance(reason, str):
        return None
    if record.get("tolerance_points") != tolerance_points:
        return None  # the operator changed the tolerance: decide again
    return GraphChoice(variant, RECORDED + reason)


def choose_graph(
    manifest: Manifest, cuda: bool, tolerance_points: float = DEFAULT_TOLERANCE_POINTS
) -> GraphChoice:
    """The choice the repository recorded (`recorded_choice`), else `measured_choice`."""
    return recorded_choice(manifest, cuda, tolerance_points) or measured_choice(
        manifest, cuda, tolerance_points
    )


def measured_choice(
    manifest: Manifest, cuda: bool, tolerance_points: float = DEFAULT_TOLERANCE_POINTS
) -> GraphChoice:
    """The fastest variant for the hardware that loses nothing significant and at most
    `tolerance_points` against fp32 on every task, else fp32; the reason names the
    deciding test and its figures."""
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
    tests = paired_tests(manifest, fast)
    if tests is None:
        return _by_points_alone(fast, lost, tolerance_points)
    rule = f"significance {SIGNIFICANCE_LEVEL:g}, tolerance {tolerance_points:g} points"
    failing = []
    for task in sorted(lost, key=lambda t: -lost[t]):
        figures = f"{task}: loss {lost[task]:.2f} points, {describe(tests[task], fast)}"
        if significant_loss(tests[task]):
            failing.append(f"{figures} (a significant loss)")
        elif lost[task] > tolerance_points:
            failing.append(f"{figures} (not significant, but over the tolerance)")
    if failing:
        return GraphChoice(
            "fp32", f"{fast} loses accuracy against fp32 ({rule}): " + "; ".join(failing)
        )
    worst = max(lost, key=lambda task: lost[task])
    return GraphChoice(
        fast,
        f"{fast} keeps accuracy on every task ({rule}): largest loss {lost[worst]:.2f} "
        f"points ({worst}), {describe(tests[worst], fast)}",
    )


def _by_points_alone(fast: str, lost: dict[str, float], tolerance_points: float) -> GraphChoice:
    worst = max(lost, key=lambda task: lost[task])
    detail = (
        f"largest loss {lost[worst]:.2f} points ({worst}), tolerance {tolerance_points:g}; "
        "the store records no paired test, so by the point loss alone"
    )
    if lost[worst] <= tolerance_points:
        return GraphChoice(fast, f"{fast} is within tolerance of fp32 on every task: {detail}")
    return GraphChoice("fp32", f"{fast} loses too much accuracy against fp32: {detail}")


def tolerance_from_environment() -> float:
    """The tolerance in force where no setting object is at hand (publishing): the
    service's own variable, so both sides decide alike."""
    raw = os.environ.get(TOLERANCE_ENVIRONMENT)
    if raw is None or not raw.strip():
        return DEFAULT_TOLERANCE_POINTS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{TOLERANCE_ENVIRONMENT} must be 0 or more points, got {raw!r:.40}")
    return value
