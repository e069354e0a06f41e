"""Serving cost of a deeper base: one task's throughput from two stores, side by side.

    apt-get install wrk
    python -m benchmarks.base_serve_bench --model small --model base \\
        --task similarity --data-dir ../shared/data    # the shipped models (built first)
    python -m benchmarks.base_serve_bench --store models/default \\
        --store runs/mpnet-store --task similarity --data-dir ../shared/data
    python -m benchmarks.base_serve_bench --model base --graph fp32 --graph auto \\
        --task sentiment --data-dir ../shared/data --concurrency 1 16 64
    python -m benchmarks.base_serve_bench --model base --graph fp32 --task sentiment \\
        --concurrency --batch-concurrency 1 4 --batch-seconds 60 \\
        --compare before=/path/to/checkout-before   # 32-text requests, before/after

Why: a 12-layer, 768-wide base (all-mpnet-base-v2) buys accuracy with compute at serving
time, and the trade-off needs both numbers. For each store, with the same method as
benchmarks/serve_bench.py: the offline ONNX Runtime ceiling for the task's validation
inputs (length-sorted batches of 32, fp32 graph, no HTTP), then the service on loopback
under wrk at each concurrency (single-item requests of that task, dynamic batching on),
serving the graph `--graph auto` picks (int8 on a CPU where the graph rule allows), or
each graph given with `--graph` in turn (the service's BERT_MTS_GRAPH), each beside the
offline ceiling of the variant it served: the served figures as a share of the ceiling,
and each graph's req/s as a ratio to the fp32 row at the same concurrency (same run).
`--model NAME` is a shipped model of models/shipped/catalogue.json, from its built
repository (`make model MODEL=NAME`).

`--batch-concurrency` adds rows of 32-text requests (the task's validation texts, 32 a
request) from closed-loop clients: items/s over the run (every request started within
`--batch-seconds` is awaited; items answered / time to the last answer), items/s as a
fixed window counts them (wrk's way: answers in flight at the end are lost, up to one
request per connection), p50, p99, max and the first answer's time. `--compare
LABEL=ROOT` serves the same store with another checkout's code too (before and after a
change, in one run). Before every row the server is left to finish what the previous
row's abandoned requests queued, so no row is charged for another's work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import Server, closed_loop, run_wrk, validation_texts, wait_idle
from model_store.locations import model_repository
from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from model_store.runtime import CPU, MultiTaskSession
from model_store.tokenizer import PairTokenizer
from service.client import Client


def offline_items_per_s(
    store: Path, task: str, items, variant: str = "fp32", repeats: int = 3
) -> float:
    manifest = load_manifest(store)
    session = MultiTaskSession(manifest, variant, providers=[CPU])
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    pair = manifest.task(task).pair

    def run() -> float:
        started = time.perf_counter()
        texts_b = [item[1] for item in items] if pair else None
        rows = sorted(tokenizer.encode([item[0] for item in items], texts_b), key=len)
        for i in range(0, len(rows), 32):
            chunk = rows[i : i + 32]
            session.run_task(tokenizer.pad(chunk), task)
        return len(rows) / (time.perf_counter() - started)

    run()  # warm-up
    return statistics.median(run() for _ in range(repeats))


def request_lines(task: str, items) -> list[str]:
    if len(items[0]) == 1:
        return [f"/{task}\t{json.dumps({'text': item[0]})}" for item in items]
    return [
        f"/{task}\t{json.dumps({'sentence1': item[0], 'sentence2': item[1]})}" for item in items
    ]


def describe(store: Path, task: str) -> tuple[str, int, int, str]:
    manifest = load_manifest(store)
    entry = manifest.task(task)
    metric = entry.validation.get("value")
    return (
        str(manifest.base_model.get("name")),
        int(manifest.base_model.get("num_layers", 0)),
        entry.layers,
        f"{metric:.4f}" if isinstance(metric, float) else "?",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, action="append", default=[])
    parser.add_argument("--model", action="append", default=[], help="a shipped model's name")
    parser.add_argument("--task", default="similarity")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--per-task", type=int, default=400)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--batch-concurrency", type=int, nargs="*", default=[])
    parser.add_argument("--batch-seconds", type=float, default=60)
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=ROOT",
        help="also serve with the code of the checkout at ROOT (repeatable)",
    )
    parser.add_argument(
        "--graph",
        action="append",
        choices=["auto", "fp32", "int8", "fp16"],
        help="serve this graph (repeat to compare; default: auto)",
    )
    args = parser.parse_args()
    args.graph = args.graph or ["auto"]
    stores = [(name, model_repository(name)) for name in args.model]
    stores += [(str(store), store.resolve()) for store in args.store]  # served from any root
    if not stores:
        parser.error("give --model NAME or --store DIR (at least one)")
    for name, store in stores:
        if not store.exists():
            parser.error(f"{store} ({name}) does not exist: make model MODEL=NAME builds it")

    codes: list[tuple[str, Path | None]] = [("this checkout", None)]
    for given in args.compare:
        name, _, root = given.partition("=")
        if not root or not Path(root).is_dir():
            parser.error(f"--compare {given}: give LABEL=ROOT, ROOT a checkout's directory")
        codes.append((name, Path(root)))
    items = validation_texts(args.data_dir, args.per_task)[args.task]
    bodies = [
        {"texts": [item[0] for item in items[i : i + 32]]} for i in range(0, len(items) - 31, 32)
    ]
    if args.batch_concurrency and (len(items[0]) != 1 or not bodies):
        parser.error(f"--batch-concurrency needs a single-text task with 32+ texts: {args.task}")
    measured, batched = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label, given in stores:
            store = resolve_store(given)  # a store, or a repository's current version
            ceilings: dict[str, float] = {}
            for code, root in codes:
                row_label = label if len(codes) == 1 else f"{label} ({code})"
                for graph in args.graph:
                    server = Server(given, {"BERT_MTS_GRAPH": graph}, root)
                    try:
                        with Client(server.url) as client:
                            variant = client.info().graph
                        if variant not in ceilings:
                            ceilings[variant] = offline_items_per_s(
                                store, args.task, items, variant
                            )
                        for connections in args.concurrency:
                            wait_idle(server.url)
                            result = run_wrk(
                                server.url,
                                request_lines(args.task, items),
                                connections,
                                args.seconds,
                                Path(tmp),
                                server.process.pid,
                            )
                            measured.append((row_label, store, graph, variant, connections, result))
                        for connections in args.batch_concurrency:
                            wait_idle(server.url)
                            result = closed_loop(
                                server.url, f"/{args.task}", bodies, connections, args.batch_seconds
                            )
                            batched.append((row_label, variant, connections, result))
                    finally:
                        server.stop()
            for row in measured:
                if row[0].startswith(label) and row[3] in ceilings:
                    row[5]["ceiling"] = ceilings[row[3]]
            for row in batched:
                if row[0].startswith(label) and row[1] in ceilings:
                    row[3]["ceiling"] = ceilings[row[1]]
    fp32 = {(m[0], m[4]): m[5]["rps"] for m in measured if m[3] == "fp32"}
    rows = []
    for label, store, graph, variant, connections, result in measured:
        base, layers, k, metric = describe(store, args.task)
        against_fp32 = fp32.get((label, connections))
        rows.append(
            (
                label,
                base,
                layers,
                k,
                metric,
                f"{graph} -> {variant}",
                f"{result['ceiling']:.1f}",
                connections,
                f"{result['rps']:.1f}",
                f"{result['rps'] / result['ceiling']:.2f}",
                f"{result['rps'] / against_fp32:.2f}" if against_fp32 else "-",
                f"{result['p50_us'] / 1e3:.1f}",
                f"{result['p99_us'] / 1e3:.1f}",
                f"{result['max_us'] / 1e3:.1f}",
                result["status_errors"] + result["other_errors"],
                f"{result['rows_per_batch']:.1f}",
            )
        )
    print(f"{provenance()}\n")
    if rows:
        print(f"## Serving {args.task} from each store ({args.seconds} s per row)\n")
    print(
        markdown_table(
            [
                "model",
                "base",
                "base layers",
                "K",
                "validation metric",
                "--graph -> served",
                "offline items/s (that graph)",
                "concurrency",
                "req/s",
                "share of offline",
                "x fp32",
                "p50 ms",
                "p99 ms",
                "max ms",
                "errors",
                "rows/batch",
            ],
            rows,
        )
        if rows
        else ""
    )
    if batched:
        print(f"\n## 32-text requests, closed loop ({args.batch_seconds:g} s per row)\n")
        print(
            markdown_table(
                [
                    "model (code)",
                    "served",
                    "concurrency",
                    "items/s over the run",
                    "items/s in a fixed window",
                    "share of offline",
                    "requests",
                    "first answer s",
                    "p50 s",
                    "p99 s",
                    "max s",
                    "errors",
                ],
                [
                    (
                        label,
                        variant,
                        connections,
                        f"{r['items_per_s']:.1f}",
                        f"{r['items_per_s_in_window']:.1f}",
                        f"{r['items_per_s'] / r['ceiling']:.2f}",
                        r["requests"],
                        f"{r['first_answer_s']:.2f}",
                        f"{r['p50_s']:.2f}",
                        f"{r['p99_s']:.2f}",
                        f"{r['max_s']:.2f}",
                        r["errors"],
                    )
                    for label, variant, connections, r in batched
                ],
            )
        )


if __name__ == "__main__":
    main()
