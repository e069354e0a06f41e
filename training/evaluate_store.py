"""Score every task of a published store on its validation split, per graph variant.

    python -m training.evaluate_store --store model_store/default --data-dir ../shared/data

Each task's validation examples are drawn exactly as during its training (same file,
fraction, seed and limit, recorded in the manifest), then run through ONNX Runtime on
the CPU. Comparing variants (fp32, int8, fp16) shows what quantization costs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model_store.manifest import Manifest, TaskEntry, load_manifest
from model_store.runtime import CPU, MultiTaskSession
from model_store.tokenizer import PairTokenizer
from training.cli import OneLineArgumentParser, UsageError, run_cli
from training.data import SHARED_FILES, Example, read_examples, split_train_val
from training.tasks import TASKS

PROG = "evaluate_store"


def validation_examples(task: TaskEntry, data_dir: Path) -> list[Example]:
    split = task.validation.get("split") or {}
    dataset = SHARED_FILES[task.name]
    loaded = read_examples(
        data_dir / dataset.filename,
        dataset.columns,
        TASKS[task.name].parse_label,
        skip_bad_rows=True,
        limit=split.get("limit"),
    )
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
    pair = TASKS[task.name].pair
    rows = tokenizer.encode(
        [e.text_a for e in examples], [e.text_b or "" for e in examples] if pair else None
    )
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    outputs = np.zeros((len(rows), TASKS[task.name].num_outputs), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer.pad([rows[i] for i in chunk])
        outputs[chunk] = session.run(batch, np.full(len(chunk), task.task_id))[task.name]
    return outputs


def evaluate_store(manifest: Manifest, data_dir: Path, variants: Sequence[str]) -> dict:
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    examples = {task.name: validation_examples(task, data_dir) for task in manifest.tasks}
    report: dict = {}
    for variant in variants:
        session = MultiTaskSession(manifest, variant, providers=[CPU])
        for task in manifest.tasks:
            spec = TASKS[task.name]
            labels = np.array([e.label for e in examples[task.name]], dtype=np.float32)
            metric = spec.metric(
                task_outputs(session, tokenizer, task, examples[task.name]), labels
            )
            report.setdefault(task.name, {"metric": spec.metric_name, "examples": len(labels)})[
                variant
            ] = metric
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog=PROG, description="Validation metrics of a store's graphs.")
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--variants", nargs="+", help="default: every graph in the store")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.store)
    variants = args.variants or list(manifest.graphs)
    unknown = [v for v in variants if v not in manifest.graphs]
    if unknown:
        raise UsageError(f"{args.store} has no {', '.join(unknown)} graph")
    print(json.dumps(evaluate_store(manifest, args.data_dir, variants), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, None, PROG))
