"""One input, T tasks: what a multi-task request saves over asking task by task.

    python -m benchmarks.multi_task_bench --branch models/default/branches/paraphrase \\
        --branch models/default/branches/similarity
    python -m benchmarks.multi_task_bench --synthetic 6 --layers 2

For one input asked T tasks, three ways:
  (a) one multi-task row (`POST /v1/predict`): the frozen layers up to the deepest fork
      run once, then each task's K layers;
  (b) T single-task rows in the same merged graph (T requests to the same server): each
      row runs all L layers;
  (c) T separate single-task graphs, one per task: T x L layers too, in T runs.
It prints the layer evaluations per input, the inputs answered (for all T tasks) per
second through ONNX Runtime directly (a, b, c: batches of `--batch` inputs) and through
a live server over HTTP (a, b: `--concurrency` clients, one input per request), and the
memory of the merged store against the separate graphs (graph bytes, and the resident
memory a process gains by loading them).

`--synthetic T --layers K` builds T classification tasks of one text on the default
base, each a K-layer branch copied from the base with a random head: the compute is
that of trained branches, the answers meaningless (compute is measured, not accuracy).
Inputs are the first validation sentences (or pairs) of the preset data in --data-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import torch

from benchmarks.common.report import print_report
from benchmarks.common.serving import Server, validation_texts
from model_store.manifest import Manifest, load_manifest
from model_store.runtime import CPU, MultiTaskSession, task_mask
from model_store.tasks import TaskDefinition
from model_store.tokenizer import PairTokenizer
from training.encoders.base_model import BaseModel, load_base_model
from training.fit.branch import save_branch
from training.fit.objectives import task_spec
from training.fit.task_model import TaskModel
from training.graph.merge import load_branches, publish_store, read_branches


def synthetic_branches(base: BaseModel, count: int, layers: int, out: Path) -> list[Path]:
    """`count` text classification branches of `layers` layers, random heads."""
    tokenizer = PairTokenizer.from_dir(base.path, 128)
    paths = []
    for index in range(count):
        torch.manual_seed(index)
        definition = TaskDefinition(f"topic{index}", "classification", "text", ("a", "b", "c"))
        model = TaskModel(base.encoder, task_spec(definition), layers, "cls")
        paths.append(save_branch(model, base, tokenizer, out, {}, {}))
    return paths


def engine_rates(
    merged: Manifest, singles: Sequence[Manifest], inputs, batch: int, repeats: int
) -> dict[str, float]:
    """Inputs per second (each answered for every task) through ONNX Runtime."""
    tokenizer = PairTokenizer.from_file(merged.tokenizer_path, merged.max_seq_len)
    pair = merged.tasks[0].pair
    rows = tokenizer.encode(
        [item[0] for item in inputs], [item[1] for item in inputs] if pair else None
    )
    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    tasks = len(merged.tasks)
    session = MultiTaskSession(merged, "fp32", providers=[CPU])
    separate = [MultiTaskSession(m, "fp32", providers=[CPU]) for m in singles]
    every = list(range(tasks))

    def multi() -> None:
        for chunk in chunks:
            session.run(tokenizer.pad(chunk), task_mask([every] * len(chunk), tasks))

    def single_rows() -> None:
        for chunk in chunks:
            sets = [[t] for t in every for _ in chunk]
            session.run(tokenizer.pad(chunk * tasks), task_mask(sets, tasks))

    def separate_graphs() -> None:
        for chunk in chunks:
            padded = tokenizer.pad(chunk)
            for graph in separate:
                graph.run(padded, np.ones((len(chunk), 1), dtype=bool))

    rates = {}
    for name, run in (("a", multi), ("b", single_rows), ("c", separate_graphs)):
        run()  # warm-up
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            timings.append(time.perf_counter() - started)
        rates[name] = len(rows) / statistics.median(timings)
    return rates


def _body(item: tuple[str, ...]) -> dict:
    return {"text": item[0]} if len(item) == 1 else {"sentence1": item[0], "sentence2": item[1]}


async def _http_rate(
    url: str, tasks: list[str], inputs, concurrency: int, seconds: float, multi: bool
) -> float:
    """Inputs answered for all tasks per second, closed loop, `concurrency` clients."""
    answered = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency * len(tasks))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def ask(item) -> None:
            if multi:
                response = await client.post("/v1/predict", json={**_body(item), "tasks": tasks})
                response.raise_for_status()
                return
            responses = await asyncio.gather(
                *(client.post(f"/v1/tasks/{task}", json=_body(item)) for task in tasks)
            )
            for response in responses:
                response.raise_for_status()

        async def worker(offset: int) -> None:
            nonlocal answered
            index = offset
            while time.monotonic() < deadline:
                await ask(inputs[index % len(inputs)])
                answered += 1
                index += concurrency

        for item in inputs[:concurrency]:  # warm-up
            await ask(item)
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return answered / (time.monotonic() - started)


def _resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _load_and_measure(directories: list[str], queue) -> None:
    before = _resident_kib()
    sessions = [
        MultiTaskSession(load_manifest(d, verify=False), "fp32", providers=[CPU])
        for d in directories
    ]
    queue.put((_resident_kib() - before) / 1024 if sessions else 0.0)


def resident_mib(directories: Sequence[Path]) -> float:
    """Resident memory a fresh process gains by loading these graphs (MiB)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load_and_measure, args=([str(d) for d in directories], queue))
    process.start()
    value = queue.get(timeout=300)
    process.join()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch", action="append", type=Path, default=[])
    parser.add_argument("--synthetic", type=int, metavar="T", help="T synthetic text tasks")
    parser.add_argument("--layers", type=int, default=2, help="K of the synthetic tasks")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--inputs", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="inputs per ORT run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP measurement")
    args = parser.parse_args()
    if bool(args.branch) == bool(args.synthetic):
        parser.error("give --branch (repeat per task) or --synthetic T")

    base = load_base_model()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        paths = args.branch or synthetic_branches(base, args.synthetic, args.layers, tmp / "b")
        branches = load_branches(read_branches(paths), base)
        pair = branches[0].model.spec.pair
        if any(b.model.spec.pair != pair for b in branches):
            parser.error("all tasks must take the same input shape (one text, or a pair)")
        merged = publish_store(base, branches, tmp / "merged", ("fp32",))
        singles = [
            publish_store(base, [b], tmp / f"single-{b.info.task}", ("fp32",)) for b in branches
        ]
        texts = validation_texts(args.data_dir, args.inputs)
        inputs = texts["paraphrase" if pair else "sentiment"]
        names = [task.name for task in merged.tasks]
        count, layers = len(names), merged.num_layers

        rates = engine_rates(merged, singles, inputs, args.batch, args.repeats)
        server = Server(tmp / "merged", {})
        try:
            http = {
                key: asyncio.run(
                    _http_rate(
                        server.url, names, inputs, args.concurrency, args.seconds, key == "a"
                    )
                )
                for key in ("a", "b")
            }
        finally:
            server.stop()
        merged_bytes = merged.graph_path().stat().st_size
        single_bytes = sum(m.graph_path().stat().st_size for m in singles)
        merged_rss = resident_mib([merged.directory])
        singles_rss = resident_mib([m.directory for m in singles])

    forks = ", ".join(f"{t.name} {t.fork_depth}" for t in merged.tasks)
    rows = [
        (
            "(a) one multi-task row / request",
            merged.layer_evaluations(names),
            rates["a"],
            http["a"],
        ),
        ("(b) T single-task rows / requests, merged graph", count * layers, rates["b"], http["b"]),
        ("(c) T separate single-task graphs", count * layers, rates["c"], "-"),
    ]
    print_report(
        f"One input, T = {count} tasks ({'pairs' if pair else 'texts'}; L = {layers}; "
        f"forks: {forks})",
        ["way", "layer evaluations per input", "ORT inputs/s", "HTTP inputs/s"],
        rows,
    )
    print(
        f"\n(a) / (b): ORT {rates['a'] / rates['b']:.2f}x, HTTP {http['a'] / http['b']:.2f}x; "
        f"(a) / (c): ORT {rates['a'] / rates['c']:.2f}x\n"
        f"graph bytes: merged {merged_bytes / 2**20:.1f} MiB, {count} separate graphs "
        f"{single_bytes / 2**20:.1f} MiB; resident memory after loading: merged "
        f"{merged_rss:.0f} MiB, separate {singles_rss:.0f} MiB\n"
        f"ORT: {len(inputs)} inputs, batches of {args.batch} inputs, median of "
        f"{args.repeats}; HTTP: {args.concurrency} clients, {args.seconds:.0f} s each"
    )


if __name__ == "__main__":
    main()
