"""Cost of one merged multi-task graph vs three separate single-task graphs.

    python -m benchmarks.merge_cost_bench --data-dir ../shared/data \\
        --branch models/branches/sentiment --branch models/branches/paraphrase \\
        --branch models/branches/similarity

Builds, in a temporary directory, the merged fp32 graph of the given branches and one
fp32 graph per branch (base + that branch alone: a full single-task model), then prints
parameters, file size, FLOPs per token and ONNX Runtime CPU throughput on one mixed
three-task workload drawn from the validation rows of ../shared/data. All rows of the
table come from the same run.

The workload is a stream of single-task items in random task order, cut into windows
of `--batch-size` items, as a dynamic batcher would: the merged graph runs each window
in one call; separate graphs run each window split by task (up to three calls), and,
as an upper bound for them, per-task batches of `--batch-size` (per-task queues).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from benchmarks.common.report import print_report
from model_store.runtime import CPU, MultiTaskSession, task_mask
from model_store.tokenizer import EncodedRow, PairTokenizer
from training.data.presets import PRESETS
from training.data.readers import read_examples
from training.data.split import split_train_val
from training.encoders.base_model import load_base_model
from training.fit.objectives import preset_spec
from training.graph.merge import load_branches, publish_store, read_branches


def parameter_count(path: Path) -> int:
    return sum(int(np.prod(init.dims)) for init in onnx.load(str(path)).graph.initializer)


def layer_flops_per_token(hidden: int, intermediate: int, seq_len: float) -> float:
    """Multiply-adds x2 of one encoder layer per token: projections, FFN, attention."""
    return 2 * (4 * hidden * hidden + 2 * hidden * intermediate) + 4 * seq_len * hidden


def workload(tokenizer: PairTokenizer, data_dir: Path, per_task: int, seed: int):
    """(task name, encoded row) items, tasks interleaved at random."""
    items: list[tuple[str, EncodedRow]] = []
    for task, spec in ((t, preset_spec(t)) for t in PRESETS):
        dataset = PRESETS[task].data
        loaded = read_examples(
            data_dir / dataset.filename, dataset.columns, spec.parse_label, skip_bad_rows=True
        )
        val = split_train_val(loaded.examples, 0.1, seed=0)[1][:per_task]
        texts_b = [e.text_b or "" for e in val] if spec.pair else None
        items += [(task, row) for row in tokenizer.encode([e.text_a for e in val], texts_b)]
    random.Random(seed).shuffle(items)
    return items


def run_windows(sessions: dict[str, MultiTaskSession], windows, tokenizer) -> None:
    """One call per window on a merged session, or one call per task per window."""
    for window in windows:
        if "merged" in sessions:
            session = sessions["merged"]
            sets = [[session.task_id(task)] for task, _ in window]
            mask = task_mask(sets, len(session.manifest.tasks))
            session.run(tokenizer.pad([row for _, row in window]), mask)
            continue
        for task, session in sessions.items():
            rows = [row for name, row in window if name == task]
            if rows:
                session.run(tokenizer.pad(rows), np.ones((len(rows), 1), dtype=bool))


def items_per_second(sessions, windows, tokenizer, repeats: int) -> float:
    count = sum(len(window) for window in windows)
    run_windows(sessions, windows[:2], tokenizer)  # warm-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_windows(sessions, windows, tokenizer)
        timings.append(time.perf_counter() - started)
    return count / statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch", action="append", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--per-task", type=int, default=200, help="items per task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    base = load_base_model()
    branches = load_branches(read_branches(args.branch), base)
    config = base.spec.config
    with tempfile.TemporaryDirectory() as tmp:
        merged = publish_store(base, branches, Path(tmp) / "merged", ("fp32",))
        singles = {
            b.info.task: publish_store(base, [b], Path(tmp) / b.info.task, ("fp32",))
            for b in branches
        }
        tokenizer = PairTokenizer.from_file(merged.tokenizer_path, merged.max_seq_len)
        items = workload(tokenizer, args.data_dir, args.per_task, seed=0)
        items = [item for item in items if item[0] in singles]
        windows = [items[i : i + args.batch_size] for i in range(0, len(items), args.batch_size)]
        by_task = [
            chunk
            for task in singles
            for rows in [[item for item in items if item[0] == task]]
            for chunk in (
                rows[i : i + args.batch_size] for i in range(0, len(rows), args.batch_size)
            )
        ]
        mean_len = float(np.mean([len(row) for _, row in items]))
        per_layer = layer_flops_per_token(config.hidden_size, config.intermediate_size, mean_len)
        # Per item, each task runs L layers either way: the trunk is shared, not skipped.
        flops = per_layer * config.num_hidden_layers

        merged_sessions = {"merged": MultiTaskSession(merged, "fp32", providers=[CPU])}
        single_sessions = {
            t: MultiTaskSession(m, "fp32", providers=[CPU]) for t, m in singles.items()
        }
        merged_rate = items_per_second(merged_sessions, windows, tokenizer, args.repeats)
        split_rate = items_per_second(single_sessions, windows, tokenizer, args.repeats)
        queued_rate = items_per_second(single_sessions, by_task, tokenizer, args.repeats)

        merged_file = merged.graph_path()
        single_files = [m.graph_path() for m in singles.values()]
        rows = [
            (
                "merged graph (1 file)",
                f"{parameter_count(merged_file) / 1e6:.2f}M",
                f"{merged_file.stat().st_size / 2**20:.1f}",
                f"{flops / 1e6:.1f}",
                f"{merged_rate:.0f}",
                "mixed windows, 1 call each",
            ),
            (
                f"{len(singles)} separate graphs",
                f"{sum(map(parameter_count, single_files)) / 1e6:.2f}M",
                f"{sum(f.stat().st_size for f in single_files) / 2**20:.1f}",
                f"{flops / 1e6:.1f}",
                f"{split_rate:.0f}",
                "same windows, split by task",
            ),
            (
                f"{len(singles)} separate graphs",
                "",
                "",
                "",
                f"{queued_rate:.0f}",
                "per-task batches (ideal queues)",
            ),
        ]
    tasks = ", ".join(f"{b.info.task} K={b.info.layers}" for b in branches)
    print_report(
        f"Merged vs separate graphs ({tasks}; {len(items)} items, mean {mean_len:.1f} tokens, "
        f"batch {args.batch_size}, median of {args.repeats})",
        ["graphs", "parameters", "size (MiB)", "MFLOPs/token", "items/s (CPU)", "batching"],
        rows,
    )


if __name__ == "__main__":
    main()
