"""Throughput and latency of the HTTP service, with and without dynamic batching.

    apt-get install wrk        # the load generator: lean, so it leaves the CPU to the server
    python -m benchmarks.serve_bench --model-dir models/default --data-dir ../shared/data

In one run: the service (started here, on loopback) under wrk at several concurrencies,
for single-task (and optionally mixed three-task) and 32-text batch requests drawn from
the validation rows of ../shared/data; the same service with batching off
(max_batch_size 1); the other graph variants at the top concurrency; optionally another
checkout's service (`--compare-root`, a before/after in one run); and the offline ONNX
Runtime ceiling of every variant (same batch sizes, no HTTP). The ratios against their
targets are computed for the graph `--graph auto` serves. The CPU share of
the generator and of the server are printed beside the figures, since on a small
machine the generator's own cost bounds what any server can show. The server's own view
comes from its /metrics, differenced around each row: the share of wall time ONNX
Runtime was busy, mean rows per batch, and the histogram bucket holding its p99.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx

from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import (
    Server,
    offline,
    request_lines,
    run_wrk,
    validation_texts,
)
from model_store.manifest import load_manifest
from model_store.repository import resolve_store

ROW_HEADERS = [
    "config",
    "workload",
    "concurrency",
    "req/s",
    "items/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "server p99 ms",
    "errors",
    "rows/batch",
    "engine busy",
    "generator CPU",
    "server CPU",
]


def table_row(config: str, workload: str, connections: int, result: dict) -> tuple:
    return (
        config,
        workload,
        connections,
        f"{result['rps']:.1f}",
        f"{result['items']:.1f}",
        f"{result['p50_us'] / 1e3:.1f}",
        f"{result['p95_us'] / 1e3:.1f}",
        f"{result['p99_us'] / 1e3:.1f}",
        f"<= {result['server_p99_le_ms']:.0f}",
        result["status_errors"] + result["other_errors"],
        f"{result['rows_per_batch']:.1f}",
        f"{result['engine_busy']:.0%}",
        f"{result['generator_cpu']:.0%}",
        f"{result['server_cpu']:.0%}",
    )


def served_graph(url: str) -> tuple[str, str]:
    info = httpx.get(f"{url}/info", timeout=5).json()  # raw: other checkouts' /info too
    return info["graph"], info.get("graph_reason", "")


def run_config(
    name: str,
    model_dir: Path,
    env: dict[str, str],
    plan: list[tuple[str, int]],
    texts,
    seconds: float,
    workdir: Path,
    root: Path | None = None,
) -> tuple[dict, tuple[str, str]]:
    """Start the service with `env` (code at `root`), run each (workload, connections)
    of `plan`, stop it: results by (workload, connections), and the graph it served."""
    server = Server(model_dir, env, root)
    measured = {}
    try:
        graph = served_graph(server.url)
        for workload, connections in plan:
            lines = request_lines(texts, workload)
            result = run_wrk(server.url, lines, connections, seconds, workdir, server.process.pid)
            result["items"] = result["rps"] * (32 if workload == "batch of 32" else 1)
            measured[(workload, connections)] = result
            print(f"  {name}: {workload} c={connections}: {result['rps']:.1f} req/s", flush=True)
    finally:
        server.stop()
    return measured, graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument("--batch-concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--per-task", type=int, default=400)
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=["sentiment"],
        choices=["sentiment", "mixed"],
        help="single-text workloads to run",
    )
    parser.add_argument(
        "--also-graph",
        nargs="*",
        default=["fp32"],
        choices=["fp32", "int8", "fp16"],
        help="other graphs to serve too (single texts at the top concurrency, 32-text "
        "batches at the top batch concurrency)",
    )
    parser.add_argument(
        "--compare",
        nargs=3,
        action="append",
        default=[],
        metavar=("LABEL", "ROOT", "MODEL_DIR"),
        help="another checkout's service (e.g. before a change) on its store, same load: "
        "single texts at concurrency 1 and the top one, 32-text batches at the top batch "
        "concurrency; repeatable",
    )
    parser.add_argument(
        "--server-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="extra BERT_MTS_* settings for every configuration",
    )
    args = parser.parse_args()

    model_dir = args.model_dir
    store = resolve_store(model_dir)
    texts = validation_texts(args.data_dir, args.per_task)
    ceilings = {v: offline(store, texts, 32, v) for v in load_manifest(store).graphs}
    extra = dict(item.split("=", 1) for item in args.server_env)
    top, top_batch = max(args.concurrency), max(args.batch_concurrency)
    c32 = 32 if 32 in args.concurrency else top
    plan = [(w, c) for w in args.workloads for c in args.concurrency]
    plan += [("batch of 32", c) for c in args.batch_concurrency]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        on, (graph, reason) = run_config(
            "batching on", model_dir, extra, plan, texts, args.seconds, Path(tmp)
        )
        rows += [table_row(f"{graph}, batching on", w, c, r) for (w, c), r in on.items()]
        off_env = {**extra, "BERT_MTS_MAX_BATCH_SIZE": "1", "BERT_MTS_GRAPH": graph}
        off, _ = run_config(
            "batching off", model_dir, off_env, [("sentiment", c32)], texts, args.seconds, Path(tmp)
        )
        rows += [table_row(f"{graph}, batching off", w, c, r) for (w, c), r in off.items()]
        for other in (g for g in args.also_graph if g != graph):
            env = {**extra, "BERT_MTS_GRAPH": other}
            other_plan = [("sentiment", top), ("batch of 32", top_batch)]
            measured, _ = run_config(
                other, model_dir, env, other_plan, texts, args.seconds, Path(tmp)
            )
            rows += [table_row(f"{other}, batching on", w, c, r) for (w, c), r in measured.items()]
        compare_plan = [("sentiment", 1), ("sentiment", top), ("batch of 32", top_batch)]
        for label, root, other_dir in args.compare:
            before, (other_graph, _) = run_config(
                label,
                Path(other_dir),
                extra,
                compare_plan,
                texts,
                args.seconds,
                Path(tmp),
                Path(root),
            )
            rows += [table_row(f"{label}: {other_graph}", w, c, r) for (w, c), r in before.items()]

    print(f"## HTTP service under load ({args.seconds:.0f} s per row)\n\n{provenance()}\n")
    print(f"Served graph (`--graph auto`): {graph}: {reason}\n")
    print(markdown_table(ROW_HEADERS, rows))
    print("\nOffline ONNX Runtime (sentiment; length-sorted batches of 32, and one at a time)\n")
    print(
        markdown_table(
            ["graph", "batch 32 items/s", "batch 1 items/s", "batch 1 p50 ms"],
            [
                (
                    variant,
                    f"{c['items_per_s']:.1f}",
                    f"{c['batch1_items_per_s']:.1f}",
                    f"{c['batch1_p50_ms']:.2f}",
                )
                for variant, c in ceilings.items()
            ],
        )
    )
    ceiling = ceilings[graph]
    best_batch = max(on[("batch of 32", c)]["items"] for c in args.batch_concurrency)
    checks = [
        (
            f"single-text req/s at concurrency {top} / offline ceiling ({graph})",
            f"{on[('sentiment', top)]['rps'] / ceiling['items_per_s']:.0%}",
            ">= 80%",
        ),
        (
            "32-text batch requests, items/s / offline ceiling",
            f"{best_batch / ceiling['items_per_s']:.0%}",
            ">= 90%",
        ),
        (
            f"single-text req/s at concurrency {c32}, batching on / off",
            f"{on[('sentiment', c32)]['rps'] / off[('sentiment', c32)]['rps']:.2f}x",
            ">= 1.5x",
        ),
    ]
    if 1 in args.concurrency:
        p50 = on[("sentiment", 1)]["p50_us"] / 1e3
        checks.insert(
            2,
            (
                "p50 at concurrency 1 minus offline batch-1 p50",
                f"{p50 - ceiling['batch1_p50_ms']:.2f} ms",
                "<= 1.5 ms",
            ),
        )
    print()
    print(markdown_table(["check", "measured", "target"], checks))


if __name__ == "__main__":
    main()
