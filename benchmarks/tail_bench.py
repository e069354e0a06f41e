"""The service's latency tail, every request timed by the client itself.

    python -m benchmarks.tail_bench --model-dir models/default --data-dir ../shared/data

A closed-loop load generator of its own (`benchmarks.common.closed_loop`: asyncio, raw
HTTP/1.1 keep-alive connections, no dependencies): each of `c` connections sends a
request, waits for its answer, sends the next. Every request's latency is recorded from
its first byte written to its last byte read; nothing is corrected for coordinated
omission (wrk does that, which turns one slow answer into many phantom ones), so the
figures are what the clients saw. Per row it prints req/s, p50, p99, the maximum and the
count over 1 s, the same from the service's own histogram
(`bert_mts_request_duration_seconds`, differenced around the row), and the same client
figures per input-length bucket (a request's length: its longest row, in tokens, as the
served tokenizer cuts it).

Rows: single sentiment texts at concurrency 1, 16 and 64; the same with batching off
(max_batch_size 1) at 16; a mix of the three tasks with lengths up to the model's
maximum (validation rows, and one in eight made long by joining several) at 64;
32-text sentiment requests at 4. `--root` serves another checkout's code on the same
store (a before/after).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path

import numpy as np

from benchmarks.common.closed_loop import Request, one_connection, workloads
from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import Server, validation_texts
from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from model_store.tokenizer import PairTokenizer
from service.client import Client

BUCKETS = ((1, 16), (17, 32), (33, 64), (65, 96), (97, 10_000))
SLOW_S = 1.0


def server_histogram(url: str) -> dict[float, float]:
    """Cumulative request-duration buckets of the task endpoints: {le: count}."""
    counts: dict[float, float] = {}
    with Client(url) as client:
        for line in client.metrics().splitlines():
            if line.startswith("bert_mts_request_duration_seconds_bucket") and re.search(
                r'endpoint="/(sentiment|paraphrase|similarity)"', line
            ):
                bound = float(re.search(r'le="([^"]+)"', line).group(1))
                counts[bound] = counts.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def run_row(url: str, port: int, requests: list[Request], connections: int, seconds: float):
    before = server_histogram(url)
    out: list[tuple[float, int, int]] = []

    async def load() -> None:
        until = time.perf_counter() + seconds
        step = max(1, len(requests) // connections)
        await asyncio.gather(
            *(one_connection(port, requests, c * step, until, out) for c in range(connections))
        )

    started = time.perf_counter()
    asyncio.run(load())
    wall = time.perf_counter() - started
    after = server_histogram(url)
    delta = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = delta.get(float("inf"), 0.0)
    over = total - max((c for b, c in delta.items() if b <= SLOW_S), default=0.0)
    return out, wall, {"requests": total, "over_1s": over}


def tail(latencies: list[float]) -> tuple[str, str, str, int]:
    if not latencies:
        return ("-", "-", "-", 0)
    ms = np.array(latencies) * 1e3
    p50, p99 = np.percentile(ms, [50, 99])
    return (f"{p50:.1f}", f"{p99:.1f}", f"{ms.max():.0f}", int(np.sum(ms > SLOW_S * 1e3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--per-task", type=int, default=400)
    parser.add_argument("--root", type=Path, help="serve this checkout's code (default: this one)")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--graph", default="fp32", help="BERT_MTS_GRAPH for every row")
    args = parser.parse_args()

    store = resolve_store(args.model_dir)
    manifest = load_manifest(store)
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    loads = workloads(validation_texts(args.data_dir, args.per_task), tokenizer)
    plan = {
        "on": [("single", 1), ("single", 16), ("single", 64), ("mixed", 64), ("batch of 32", 4)],
        "off": [("single", 16)],
    }
    rows, bucket_rows = [], []
    for batching, items in plan.items():
        env = {"BERT_MTS_GRAPH": args.graph}
        if batching == "off":
            env["BERT_MTS_MAX_BATCH_SIZE"] = "1"
        server = Server(args.model_dir, env, args.root)
        try:
            for workload, connections in items:
                out, wall, seen = run_row(
                    server.url, server.port, loads[workload], connections, args.seconds
                )
                name = f"{workload}, batching {batching}, c={connections}"
                ok = [latency for latency, _, status in out if status == 200]
                statuses = sorted({status for _, _, status in out})
                rows.append(
                    (
                        name,
                        len(out),
                        f"{len(out) / wall:.1f}",
                        *tail(ok),
                        ",".join(map(str, statuses)),
                        int(seen["requests"]),
                        int(seen["over_1s"]),
                    )
                )
                for low, high in BUCKETS:
                    inside = [lat for lat, n, s in out if low <= n <= high and s == 200]
                    if inside:
                        bucket_rows.append(
                            (
                                name,
                                f"{low}-{high}" if high < 10_000 else f">={low}",
                                len(inside),
                                *tail(inside),
                            )
                        )
                print(f"  {name}: {len(out) / wall:.1f} req/s", flush=True)
        finally:
            server.stop()
    print(f"## Latency tail, {args.label} ({args.seconds:g} s per row, graph {args.graph})\n")
    print(f"{provenance()}\n")
    print(
        markdown_table(
            [
                "row",
                "requests",
                "req/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "> 1 s",
                "statuses",
                "server count",
                "server > 1 s",
            ],
            rows,
        )
    )
    print("\nBy input length (a request's longest row, tokens), answered requests\n")
    print(
        markdown_table(
            ["row", "tokens", "requests", "p50 ms", "p99 ms", "max ms", "> 1 s"], bucket_rows
        )
    )


if __name__ == "__main__":
    main()
