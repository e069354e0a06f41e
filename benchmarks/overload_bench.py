"""Overload and soak: shedding beyond capacity, and memory over a sustained run.

    python -m benchmarks.overload_bench --model-dir runs/store-k2 --soak-seconds 180

1. Capacity: single-text sentiment requests at concurrency 32 (all must succeed).
2. Overload: offered rates of a few multiples of capacity, with a bounded queue. wrk is
   closed-loop, so each of --connections connections pauses between requests
   (connections / target rate): once most requests are shed (429 + Retry-After,
   answered at once) the offered rate is close to the target. The measured offered rate
   is printed as a multiple of capacity. For the accepted requests (200) the p99 is the
   server's own latency-histogram bucket bound, for status 200 only.
3. Soak: a mixed three-task stream at concurrency 32 for --soak-seconds; the server's
   resident memory is sampled throughout and compared from after warm-up to the end.
"""

from __future__ import annotations

import argparse
import re
import threading
from pathlib import Path

from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import Server, request_lines, run_wrk, validation_texts
from service.client import Client

TASK_PATHS = ("/sentiment", "/paraphrase", "/similarity")


def status_counts(url: str) -> dict[str, dict]:
    """Per status: request count, and cumulative latency buckets (task endpoints)."""
    counts: dict[str, dict] = {}
    with Client(url) as client:
        text = client.metrics()
    for line in text.splitlines():
        match = re.match(
            r'bert_mts_request_duration_seconds_bucket\{endpoint="([^"]+)",le="([^"]+)",'
            r'status="(\d+)"\} (\S+)',
            line,
        )
        if match and match.group(1) in TASK_PATHS:
            _, bound, status, value = match.groups()
            buckets = counts.setdefault(status, {})
            buckets[float(bound)] = buckets.get(float(bound), 0.0) + float(value)
    return counts


def p99_bound_ms(before: dict, after: dict, status: str) -> float:
    new = {
        b: after.get(status, {}).get(b, 0) - before.get(status, {}).get(b, 0)
        for b in after.get(status, {})
    }
    if not new:
        return float("nan")
    total = new[max(new)]
    return 1e3 * min(b for b, count in new.items() if count >= 0.99 * total)


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--queue", type=int, default=64, help="max_queue_items of the server")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--multiples", type=float, nargs="+", default=[2, 4, 8])
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--soak-seconds", type=int, default=180)
    args = parser.parse_args()

    texts = validation_texts(args.data_dir, 400)
    server = Server(args.model_dir, {"BERT_MTS_MAX_QUEUE_ITEMS": str(args.queue)})
    pid, work = server.process.pid, Path(tempfile_dir())
    try:
        single, mixed = request_lines(texts, "sentiment"), request_lines(texts, "mixed")
        rows = []
        capacity = None
        for multiple in [None, *args.multiples]:
            connections = 32 if multiple is None else args.connections
            think = 0.0 if multiple is None else 1e3 * connections / (multiple * capacity)
            before = status_counts(server.url)
            result = run_wrk(server.url, single, connections, args.seconds, work, pid, think)
            after = status_counts(server.url)
            done = {
                s: after[s][max(after[s])] - before.get(s, {}).get(max(after[s]), 0) for s in after
            }
            total = sum(done.values())
            accepted = done.get("200", 0) / total * result["rps"] if total else 0.0
            capacity = capacity or result["rps"]
            rows.append(
                (
                    "capacity" if multiple is None else f"{multiple:g}x capacity",
                    connections,
                    f"{result['rps']:.0f}",
                    f"{result['rps'] / capacity:.1f}x",
                    f"{accepted:.0f}",
                    f"{done.get('429', 0) / total:.1%}" if total else "-",
                    int(total - done.get("200", 0) - done.get("429", 0)),
                    f"<= {p99_bound_ms(before, after, '200'):.0f}",
                    f"{result['p99_us'] / 1e3:.0f}",
                )
            )
        print(f"## Overload: queue bound {args.queue} rows ({args.seconds} s per row)\n")
        print(provenance() + "\n")
        print(
            markdown_table(
                [
                    "target load",
                    "connections",
                    "offered req/s",
                    "x capacity",
                    "accepted req/s",
                    "shed (429)",
                    "other errors",
                    "accepted p99 ms (server)",
                    "all p99 ms (wrk)",
                ],
                rows,
            )
        )

        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                samples.append(rss_mib(pid))

        run_wrk(server.url, mixed, 32, 10, work, pid)  # warm-up
        start_rss = rss_mib(pid)
        sampler = threading.Thread(target=sample)
        sampler.start()
        soak = run_wrk(server.url, mixed, 32, args.soak_seconds, work, pid)
        stop.set()
        sampler.join()
        end_rss = rss_mib(pid)
        print(f"\n## Soak: mixed workload, concurrency 32, {args.soak_seconds} s\n")
        print(
            markdown_table(
                [
                    "requests",
                    "errors",
                    "req/s",
                    "RSS after warm-up MiB",
                    "RSS min-max MiB",
                    "RSS at end MiB",
                ],
                [
                    (
                        soak["requests"],
                        soak["status_errors"] + soak["other_errors"],
                        f"{soak['rps']:.0f}",
                        f"{start_rss:.0f}",
                        f"{min(samples):.0f}-{max(samples):.0f}",
                        f"{end_rss:.0f}",
                    )
                ],
            )
        )
    finally:
        server.stop()


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="overload-")


if __name__ == "__main__":
    main()
