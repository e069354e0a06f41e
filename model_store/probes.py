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
and fp16 lose precision by design, so they are allowed the drift measured on the
shipped model with a wide margin (docs/results.md), still well below the difference
between two tasks' answers. Torch-free: the service runs the check.
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


def tolerance_for(variant: str, expected: np.ndarray) -> float:
    """The largest difference a variant may show on a task whose reference answers are
    `expected`; unknown variants get int8's (the loosest)."""
    known = variant if variant in TOLERANCES else "int8"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    return TOLERANCES[known] + RELATIVE_TOLERANCES[known] * scale


RunGraph = Callable[[EncodedBatch, np.ndarray], dict[str, np.ndarray]]


def check(manifest: Manifest, tokenizer: PairTokenizer, run: RunGraph, variant: str) -> float:
    """Run every task's recorded probes through `run` (a session's run: batch, mask ->
    outputs by task name) and compare with the recorded answers; the worst difference,
    or StoreError naming the first task that does not reproduce its own answers."""
    from model_store.runtime import task_mask  # runtime imports onnxruntime: load it late

    tasks = _recorded(manifest)
    probe = build_batch(tokenizer, [(t.task_id, tasks[t.name]["inputs"]) for t in manifest.tasks])
    outputs = run(probe.batch, task_mask(probe.task_sets, len(manifest.tasks)))
    worst = 0.0
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
        difference = float(np.abs(actual - expected).max())
        tolerance = tolerance_for(variant, expected)
        if not difference <= tolerance:
            raise StoreError(
                f"{manifest.directory}: task {task.name} does not reproduce its recorded "
                f"probe answers with the {variant} graph (max difference {difference:.3g}, "
                f"tolerance {tolerance:.3g}): task ids, heads or pooling do not match the "
                "branches it was published from"
            )
        worst = max(worst, difference)
    return worst
