"""Score every task of a published store on its validation split, per graph variant.

    bert-mts-evaluate-store --store models/default [--data-dir ../shared/data]

Each task's validation examples are drawn exactly as during its training (same file,
columns, fraction, seed and limit, recorded in the manifest), then run through ONNX
Runtime on the CPU. With `--data-dir`, each recorded file is looked up there by its
name instead (data moved to another machine). Comparing variants (fp32, int8, fp16)
shows what quantization costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from model_store.manifest import Manifest, TaskEntry
from model_store.runtime import CPU, MultiTaskSession
from model_store.tokenizer import PairTokenizer
from training.data.examples import Example
from training.data.source import DataSource
from training.data.split import split_train_val
from training.errors import UsageError
from training.fit.objectives import task_spec


def validation_examples(
    task: TaskEntry, split: dict[str, Any], data_dir: Path | None = None
) -> list[Example]:
    """A task's validation examples as its branch was selected on them: the recorded
    data source (file and columns), cut with the recorded split (val_fraction, seed,
    limit); with `data_dir`, the file of that name in `data_dir`."""
    if not split.get("data"):
        raise UsageError(f"the store does not record the data task {task.name} was trained on")
    source = DataSource.from_json(split["data"])
    if data_dir is not None:
        source = replace(source, path=data_dir / source.path.name)
    loaded = source.read(task_spec(task.definition).parse_label, limit=split.get("limit"))
    return split_train_val(
        loaded.examples, split.get("val_fraction") or 0.1, split.get("seed") or 0
    )[1]


def task_outputs(
    session: MultiTaskSession,
    tokenizer: PairTokenizer,
    task: TaskEntry,
    examples: Sequence[Example],
    batch_size: int = 64,
) -> np.ndarray:
    """Raw outputs for `examples`, in order, from length-sorted one-task batches."""
    pair = task.pair
    rows = tokenizer.encode(
        [e.text_a for e in examples], [e.text_b or "" for e in examples] if pair else None
    )
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    outputs = np.zeros((len(rows), task.definition.num_outputs), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer.pad([rows[i] for i in chunk])
        outputs[chunk] = session.run_task(batch, task.name)
    return outputs


@dataclass(frozen=True)
class TaskResult:
    """One task's validation labels and a store's raw outputs for them, per graph variant."""

    task: TaskEntry
    labels: np.ndarray
    outputs: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return self.task.name

    def metric(self, variant: str) -> float:
        return task_spec(self.task.definition).metric(self.outputs[variant], self.labels)


def store_outputs(
    manifest: Manifest, data_dir: Path | None, variants: Sequence[str]
) -> list[TaskResult]:
    """Every labelled task's validation split through each variant's graph (ONNX
    Runtime, CPU). An embedding task has no labels: publishing holds its graphs to
    PyTorch by cosine instead (`training.graph.merge.embedding_cosines`)."""
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    labelled = [task for task in manifest.tasks if task.kind != "embedding"]
    examples = {
        task.name: validation_examples(task, task.validation.get("split") or {}, data_dir)
        for task in labelled
    }
    outputs: dict[str, dict[str, np.ndarray]] = {task.name: {} for task in labelled}
    for variant in variants:
        session = MultiTaskSession(manifest, variant, providers=[CPU])
        for task in labelled:
            outputs[task.name][variant] = task_outputs(
                session, tokenizer, task, examples[task.name]
            )
    return [
        TaskResult(
            task=task,
            labels=np.array([e.label for e in examples[task.name]], dtype=np.float32),
            outputs=outputs[task.name],
        )
        for task in labelled
    ]


def metrics_by_task(results: Sequence[TaskResult]) -> dict:
    """{task: {'metric': name, 'examples': n, variant: value, ...}}."""
    return {
        result.name: {
            "metric": result.task.definition.metric_name,
            "examples": len(result.labels),
            **{variant: result.metric(variant) for variant in result.outputs},
        }
        for result in results
    }


def evaluate_store(manifest: Manifest, data_dir: Path | None, variants: Sequence[str]) -> dict:
    """Every task's validation metric per variant (`metrics_by_task` of `store_outputs`)."""
    return metrics_by_task(store_outputs(manifest, data_dir, variants))
