"""Rows per second and run time by batch size, for rows of one length: what a batch's
token bound (`max_batch_tokens`) costs in throughput and buys in waiting.

    python -m benchmarks.batch_shape_bench --model-dir models/default --tokens 128 32

A row that arrives while a batch runs waits for that run (ONNX Runtime cannot be
preempted), so the run time of the largest batch allowed is the wait a short request
can meet behind long ones; rows per second is what smaller batches give up. The
engine is the service's own (`service.engine.Engine`), on the CPU, one task.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common.report import markdown_table, provenance
from model_store.manifest import StoreError
from service.engine import Engine, EngineConfig, EngineError

WORDS = [
    "the",
    "film",
    "was",
    "dull",
    "and",
    "lifeless",
    ",",
    "and",
    "nobody",
    "cared",
    "about",
    "it",
    "at",
    "all",
    ".",
]


def text_of(tokens: int) -> str:
    """A text of about `tokens` tokens (the row is cut at the store's maximum length)."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(max(1, tokens - 2)))


def measure(engine: Engine, task: str, tokens: int, size: int, runs: int) -> list[float]:
    rows = engine.encode([text_of(tokens)] * size)
    task_sets = [[engine.task_id(task)]] * size
    engine.run(rows, task_sets)  # warm-up of this shape
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        engine.run(rows, task_sets)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--graph", default="fp32", choices=["fp32", "int8", "fp16", "auto"])
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 32], help="row lengths")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--runs", type=int, default=8, help="timed runs per batch size")
    args = parser.parse_args()
    try:
        engine = Engine.load(args.model_dir, EngineConfig(graph=args.graph, provider="cpu"))
    except (StoreError, EngineError) as err:
        parser.error(str(err))
    if args.task not in engine.tasks:
        parser.error(f"task {args.task!r} is not served by {args.model_dir}")
    rows = []
    for tokens in args.tokens:
        length = len(engine.encode([text_of(tokens)])[0].input_ids)
        for size in args.sizes:
            times = measure(engine, args.task, tokens, size, args.runs)
            p50 = float(np.percentile(times, 50))
            rows.append(
                [
                    length,
                    size,
                    size * length,
                    round(1e3 * p50, 1),
                    round(1e3 * float(np.percentile(times, 99)), 1),
                    round(1e3 * max(times), 1),
                    round(size / p50, 1),
                ]
            )
    headers = ["row tokens", "batch rows", "batch tokens", "p50 ms", "p99 ms", "max ms", "rows/s"]
    print(markdown_table(headers, rows))
    print(f"graph: {engine.variant}; {args.runs} timed runs per row")
    print(provenance())
    return 0


if __name__ == "__main__":
    sys.exit(main())
