"""Single-task throughput of two builds of a store's graph, e.g. before and after a change
to the merged graph's shape, through ONNX Runtime directly.

    python -m benchmarks.single_task_bench --before /tmp/before/models/default \\
        --after models/default

Each graph gets the same rows of each preset task (validation inputs from --data-dir),
one task per row, in batches of --batch rows of one task; the task is fed the way the
graph asks for it (a `task_ids` input, or a `task_mask` one), so graphs of either format
run without the serving code of their version. Rounds alternate between the graphs, and
the median of --repeats rounds is reported, so drift of a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.common.report import print_report
from benchmarks.common.serving import validation_texts
from model_store.repository import resolve_store
from model_store.tokenizer import PairTokenizer


class Graph:
    """One store's fp32 graph, fed by input name."""

    def __init__(self, store: Path) -> None:
        store = resolve_store(store)
        raw = json.loads((store / "manifest.json").read_text())
        self.tasks = [task["definition"]["name"] for task in raw["tasks"]]
        self.tokenizer = PairTokenizer.from_file(store / "tokenizer.json", raw["max_seq_len"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(store / "model.onnx"), options, ["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, rows, task: str) -> None:
        batch = self.tokenizer.pad(rows)
        feeds = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        index = self.tasks.index(task)
        if "task_mask" in self.inputs:
            mask = np.zeros((len(rows), len(self.tasks)), dtype=bool)
            mask[:, index] = True
            feeds["task_mask"] = mask
        else:
            feeds["task_ids"] = np.full(len(rows), index, dtype=np.int64)
        self.session.run(None, feeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--inputs", type=int, default=128, help="per task")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    graphs = {"before": Graph(args.before), "after": Graph(args.after)}
    texts = validation_texts(args.data_dir, args.inputs)
    tokenizer = graphs["after"].tokenizer
    rows = {
        task: tokenizer.encode(
            [i[0] for i in items], [i[1] for i in items] if task != "sentiment" else None
        )
        for task, items in texts.items()
    }
    timings: dict[tuple[str, str], list[float]] = {}
    for round_index in range(args.repeats + 1):  # the first round warms up
        for name, graph in graphs.items():
            for task, task_rows in rows.items():
                started = time.perf_counter()
                for i in range(0, len(task_rows), args.batch):
                    graph.run(task_rows[i : i + args.batch], task)
                if round_index:
                    timings.setdefault((task, name), []).append(time.perf_counter() - started)
    table = []
    for task, task_rows in rows.items():
        before = len(task_rows) / statistics.median(timings[(task, "before")])
        after = len(task_rows) / statistics.median(timings[(task, "after")])
        table.append((task, before, after, f"{after / before - 1:+.1%}"))
    print_report(
        f"Single-task rows/s, batches of {args.batch}, median of {args.repeats} rounds",
        ["task", "before rows/s", "after rows/s", "change"],
        table,
    )


if __name__ == "__main__":
    main()
