"""Semantic checks of a store: fixed probe inputs per task and the answers they must get.

A manifest's hashes prove its files are the ones it was published with, not that the
manifest is right: a store whose task ids were permuted, whose heads were swapped or
whose graph pools otherwise than the branch was trained to would pass them and answer
clients with another task's results. So publishing records, per task, a few fixed
inputs and the raw outputs the merged PyTorch model gives them (`record`), inside the
manifest (covered by its own sha256), and every load runs them through the graph it is
about to serve (`check`): all tasks' probes interleaved in one batch, each row asking
its task by the task id the manifest gives, each task's answers read from the output
the manifest names. Any mix-up of ids, outputs, heads or branches then answers other
values (or another number of rows) and the store is refused in one line.

Tolerances are per graph variant: fp32 must reproduce PyTorch to float rounding; int8
and fp16 lose precision by design, so each is held to the drift measured for it at
publish, task by task (`measured`), and never to more than a fixed cap well below the
difference between two tasks' answers. The measured bound is what makes a quantized
graph safe to serve on another CPU than the one that published it: int8 arithmetic is
not the same on every CPU (AVX2 without VNNI saturates 16-bit sums of u8 x s8
products), and a graph whose answers moved on this CPU beyond what was measured at
publish raises `QuantizationDrift`, which says so (by how much, against what bound)
instead of blaming task ids. Torch-free: the service runs the check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.manifest import Manifest, StoreError
from model_store.tokenizer import EncodedBatch, PairTokenizer

PROBES_KEY = "probes"
# Max |graph - PyTorch| over a task's raw probe outputs (logits or scores) allowed:
# absolute, plus a share of the largest recorded output of that task (int8 quantization
# error grows with the activations' scale; see docs/results.md for the measured drift).
TOLERANCES = {"fp32": 1e-4, "fp16": 5e-2, "int8": 0.05}
RELATIVE_TOLERANCES = {"fp32": 0.0, "fp16": 0.0, "int8": 0.25}
# A quantized variant's bound on the serving CPU, from its drift measured at publish
# (same probe batch, same graph): the drift may double, plus a floor of 0.02 per unit of
# the task's largest answer for float rounding (other kernels, other thread counts) that
# can flip single quantization steps. Moving further means the CPU computes the graph
# differently from the one that measured it (saturation), which the paired tests never
# saw. Always within the fixed cap above.
MEASURED_MARGIN = 2.0
MEASURED_FLOOR = 0.02
MEASURED_KEY = "measured"


class QuantizationDrift(StoreError):
    """A quantized graph's answers moved from the recorded fp32 answers beyond its bound:
    the graph's arithmetic on this CPU, not the task wiring, if fp32 reproduces them."""

    def __init__(self, message: str, task: str, variant: str, difference: float, bound: float):
        super().__init__(message)
        self.task, self.variant, self.difference, self.bound = task, variant, difference, bound


# Written here, not drawn from any data set: short, varied, and the same for every store.
TEXT_PROBES: tuple[str, ...] = (
    "a gentle, funny and moving film",
    "dull and lifeless .",
    "it was fine , i guess",
    "the worst two hours i have spent in a cinema",
)
PAIR_PROBES: tuple[tuple[str, str], ...] = (
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?"),
    ("A man is playing a guitar.", "A dog runs across the field in the sun."),
    ("Is it going to rain tomorrow?", "Will it rain tomorrow?"),
    ("A woman is slicing an onion.", "Someone is cutting an onion."),
)


def default_inputs(pair: bool) -> list[list[str]]:
    """The fixed probe inputs of a task of this shape, as the manifest stores them."""
    return [list(p) for p in PAIR_PROBES] if pair else [[t] for t in TEXT_PROBES]


@dataclass(frozen=True)
class ProbeBatch:
    """Every task's probe rows, interleaved, with the task id each row asks."""

    batch: EncodedBatch
    task_sets: list[list[int]]


def build_batch(
    tokenizer: PairTokenizer, tasks: Sequence[tuple[int, Sequence[Sequence[str]]]]
) -> ProbeBatch:
    """Rows of (task id, its probe inputs), round-robin over the tasks, so each task's
    rows sit between other tasks' rows: a mix-up answers them with another's values."""
    rows, task_sets = [], []
    longest = max((len(inputs) for _, inputs in tasks), default=0)
    for index in range(longest):
        for task_id, inputs in tasks:
            if index < len(inputs):
                texts = inputs[index]
                rows += tokenizer.encode([texts[0]], [texts[1]] if len(texts) > 1 else None)
                task_sets.append([task_id])
    return ProbeBatch(tokenizer.pad(rows), task_sets)


def record(inputs: dict[str, list[list[str]]], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The manifest's probes value: per task its inputs and the reference raw outputs."""
    return {
        "source": "merged PyTorch model at publish; raw head outputs",
        "tolerances": {v: [TOLERANCES[v], RELATIVE_TOLERANCES[v]] for v in TOLERANCES},
        "tasks": {
            name: {
                "inputs": inputs[name],
                "outputs": [[float(v) for v in row] for row in np.asarray(outputs[name])],
            }
            for name in inputs
        },
    }


def _recorded(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """The manifest's probes, checked for shape; StoreError in one line otherwise."""
    where = manifest.directory / "manifest.json"
    probes = manifest.extra.get(PROBES_KEY)
    if not isinstance(probes, dict) or not isinstance(probes.get("tasks"), dict):
        raise StoreError(
            f"{where} records no probe answers: publish it again with this version "
            "(a store is only served once its answers are checked)"
        )
    tasks = probes["tasks"]
    names = [task.name for task in manifest.tasks]
    if sorted(tasks) != sorted(names):
        raise StoreError(
            f"{where}: probes recorded for {', '.join(sorted(tasks)) or 'no task'}, "
            f"but the store serves {', '.join(names)}"
        )
    for task in manifest.tasks:
        entry = tasks[task.name]
        inputs, outputs = entry.get("inputs"), entry.get("outputs")
        shape = 2 if task.pair else 1
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(
                isinstance(i, list) and len(i) == shape and all(isinstance(s, str) for s in i)
                for i in inputs
            )
        ):
            raise StoreError(f"{where}: task {task.name}'s probe inputs are malformed")
        if (
            not isinstance(outputs, list)
            or len(outputs) != len(inputs)
            or not all(
                isinstance(row, list)
                and row
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in row)
                for row in outputs
            )
        ):
            raise StoreError(f"{where}: task {task.name}'s probe answers are malformed")
    return tasks


def tolerance_for(variant: str, expected: np.ndarray, measured: float | None = None) -> float:
    """The largest difference a variant may show on a task whose reference answers are
    `expected`; unknown variants get int8's (the loosest). `measured`: the drift this
    variant showed on the task at publish, which narrows a quantized variant's bound."""
    known = variant if variant in TOLERANCES else "int8"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    cap = TOLERANCES[known] + RELATIVE_TOLERANCES[known] * scale
    if known == "fp32" or measured is None:
        return cap
    return min(cap, MEASURED_MARGIN * measured + MEASURED_FLOOR * max(1.0, scale))


def measured_drift(manifest: Manifest, variant: str) -> dict[str, float]:
    """Per task, the drift `variant` showed at publish (empty for stores published
    before it was recorded, which keep the fixed caps)."""
    probes = manifest.extra.get(PROBES_KEY)
    recorded = probes.get(MEASURED_KEY) if isinstance(probes, dict) else None
    values = recorded.get(variant) if isinstance(recorded, dict) else None
    if not isinstance(values, dict):
        return {}
    return {
        str(task): float(value)
        for task, value in values.items()
        if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
    }


RunGraph = Callable[[EncodedBatch, np.ndarray], dict[str, np.ndarray]]


def differences(
    manifest: Manifest, tokenizer: PairTokenizer, run: RunGraph
) -> dict[str, tuple[float, np.ndarray]]:
    """Run every task's recorded probes through `run` (a session's run: batch, mask ->
    outputs by task name); per task, the largest difference from the recorded answers
    and those answers. StoreError when a task answers another shape."""
    from model_store.runtime import task_mask  # runtime imports onnxruntime: load it late

    tasks = _recorded(manifest)
    probe = build_batch(tokenizer, [(t.task_id, tasks[t.name]["inputs"]) for t in manifest.tasks])
    outputs = run(probe.batch, task_mask(probe.task_sets, len(manifest.tasks)))
    found = {}
    for task in manifest.tasks:
        expected = np.asarray(tasks[task.name]["outputs"], dtype=np.float64)
        actual = np.asarray(outputs[task.name], dtype=np.float64)
        if actual.shape != expected.shape:
            raise StoreError(
                f"{manifest.directory}: task {task.name} does not answer its own probes "
                f"(the graph gives {actual.shape[0]} rows of {actual.shape[-1]} values where "
                f"{expected.shape[0]} rows of {expected.shape[-1]} were recorded): task ids, "
                "outputs or heads do not match the branches it was published from"
            )
        found[task.name] = (float(np.abs(actual - expected).max()), expected)
    return found


def check(
    manifest: Manifest, tokenizer: PairTokenizer, run: RunGraph, variant: str
) -> dict[str, float]:
    """Compare every task's probe answers with the recorded ones; per task, the
    difference. An fp32 graph that misses raises StoreError naming the first task (its
    wiring is wrong); a quantized one raises QuantizationDrift, whose cause the caller
    tells apart by checking the fp32 graph (`service.engine`, `training.graph.merge`)."""
    measured = measured_drift(manifest, variant)
    found = differences(manifest, tokenizer, run)
    for task in manifest.tasks:
        difference, expected = found[task.name]
        tolerance = tolerance_for(variant, expected, measured.get(task.name))
        if difference <= tolerance:
            continue
        if variant == "fp32":
            raise StoreError(
                f"{manifest.directory}: task {task.name} does not reproduce its recorded "
                f"probe answers with the fp32 graph (max difference {difference:.3g}, "
                f"tolerance {tolerance:.3g}): task ids, heads or pooling do not match the "
                "branches it was published from"
            )
        at_publish = measured.get(task.name)
        source = (
            f"{at_publish:.3g} measured at publish"
            if at_publish is not None
            else "the fixed cap; no drift was recorded at publish"
        )
        raise QuantizationDrift(
            f"{manifest.directory}: quantization moved task {task.name}'s probe answers by "
            f"{difference:.3g} with the {variant} graph on this CPU (bound {tolerance:.3g}, "
            f"from {source})",
            task.name,
            variant,
            difference,
            tolerance,
        )
    return {name: difference for name, (difference, _) in found.items()}


def worst(drift: dict[str, float]) -> float:
    """The largest of a check's per-task differences (0 for none)."""
    return max(drift.values(), default=0.0)
