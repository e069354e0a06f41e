"""Variant metrics at publish, measured only for what changed.

Publishing one task used to score every task's validation split through every graph
variant: most of a publish's time, and it re-read the other tasks' data files (and
printed their bad rows). But in the tree-shaped graph a task's outputs depend only on
the base, its fork depth and its own branch: another task's branch never changes them
(the merge's bit-identity guarantee, tests/test_multi_task.py), and int8 quantization
is per weight channel, with activation scales from the rows of the batch, which for a
one-task evaluation batch are that task's own. So a task whose branch version, depth,
pooling, validation split, base and maximum length equal the previous version's keeps
that version's recorded metrics for every variant the previous one measured; only the
other tasks are measured, each on its own validation split. The paired tests against
fp32 (`comparisons`, what `--graph auto` decides by) follow the same rule: carried over
with the figures, computed for the measured tasks.
tests/training/test_incremental_metrics.py checks that the carried-over figures equal a full
measurement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model_store.graph_choice import VARIANT_METRICS_KEY
from model_store.manifest import Manifest, TaskEntry
from model_store.runtime import CPU, MultiTaskSession
from model_store.tokenizer import PairTokenizer
from training.errors import UsageError
from training.evaluate.paired_test import paired_comparisons
from training.evaluate.store import TaskResult, metrics_by_task, validation_examples
from training.evaluate.store import task_outputs as run_outputs
from training.evaluate.variant_metrics import COMPARISONS_KEY, MeasureMetrics, Metrics, unavailable


def _same_outputs_key(task: TaskEntry, manifest: Manifest) -> str:
    """What a task's outputs and its validation examples depend on."""
    return json.dumps(
        [
            task.name,
            task.branch_version,
            task.layers,
            task.fork_depth,
            task.pooling,
            task.validation.get("split"),
            manifest.base_model.get("sha256"),
            manifest.max_seq_len,
        ],
        sort_keys=True,
        default=str,
    )


def carried_over(previous: Manifest | None, manifest: Manifest) -> dict[str, dict]:
    """Tasks of `manifest` whose recorded metrics `previous` already holds, for every
    variant `manifest` has: {task: {"figures": ..., "comparisons": ... or None}}."""
    if previous is None:
        return {}
    metrics = previous.extra.get(VARIANT_METRICS_KEY) or {}
    recorded = metrics.get("tasks") or {}
    tests = metrics.get(COMPARISONS_KEY) or {}
    before = {task.name: _same_outputs_key(task, previous) for task in previous.tasks}
    others = [v for v in manifest.graphs if v != "fp32"]
    kept = {}
    for task in manifest.tasks:
        entry = recorded.get(task.name)
        if (
            before.get(task.name) == _same_outputs_key(task, manifest)
            and isinstance(entry, dict)
            and all(isinstance(entry.get(v), (int, float)) for v in manifest.graphs)
        ):
            test = tests.get(task.name)
            complete = isinstance(test, dict) and all(isinstance(test.get(v), dict) for v in others)
            kept[task.name] = {
                "figures": {
                    k: entry[k] for k in ("metric", "examples", *manifest.graphs) if k in entry
                },
                "comparisons": {v: test[v] for v in others} if complete else None,
            }
    return kept


def measure_tasks(
    manifest: Manifest, tasks: Sequence[TaskEntry], data_dir: Path | None
) -> tuple[dict[str, dict], dict[str, dict]]:
    """`tasks`' validation metric through each of `manifest`'s graphs (ONNX Runtime, CPU),
    reading only those tasks' data, and each variant's paired test against fp32."""
    if not tasks:
        return {}, {}
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    examples = {
        t.name: validation_examples(t, t.validation.get("split") or {}, data_dir) for t in tasks
    }
    outputs: dict[str, dict[str, np.ndarray]] = {t.name: {} for t in tasks}
    for variant in manifest.graphs:
        session = MultiTaskSession(manifest, variant, providers=[CPU])
        for task in tasks:
            outputs[task.name][variant] = run_outputs(session, tokenizer, task, examples[task.name])
    results = [
        TaskResult(
            task=task,
            labels=np.array([e.label for e in examples[task.name]], dtype=np.float32),
            outputs=outputs[task.name],
        )
        for task in tasks
    ]
    return metrics_by_task(results), paired_comparisons(results)


def incremental_measurer(previous: Manifest | None, data_dir: Path | None) -> MeasureMetrics:
    """A MeasureMetrics that carries `previous`'s figures over for unchanged tasks."""

    def measure(manifest: Manifest) -> Metrics:
        kept = carried_over(previous, manifest)
        # An embedding task has no labels (as in a full measurement: it is held to
        # PyTorch by cosine instead), so it has no figures to measure or carry over.
        labelled = [task for task in manifest.tasks if task.kind != "embedding"]
        # A task whose figures carry over but whose paired tests do not (a store
        # recorded before them) is measured again: auto decides by the tests.
        fresh = [t for t in labelled if t.name not in kept or kept[t.name]["comparisons"] is None]
        try:
            figures, tests = measure_tasks(manifest, fresh, data_dir)
        except (OSError, UsageError, ValueError) as err:  # DataError is a ValueError
            return unavailable(f"validation data not readable at publish ({err})")
        carried = sorted(t.name for t in labelled if t.name not in figures)
        source = "measured at publish, on each task's validation split"
        if carried and previous is not None:
            source += (
                f" ({', '.join(t.name for t in fresh) or 'no task'} measured now; "
                f"{', '.join(carried)} carried over from {previous.name}, "
                "whose outputs for them are unchanged)"
            )
        return {
            "source": source,
            "tasks": {t.name: figures.get(t.name) or kept[t.name]["figures"] for t in labelled},
            COMPARISONS_KEY: {
                t.name: tests.get(t.name) or kept[t.name]["comparisons"] for t in labelled
            },
        }

    return measure
