"""A flood of huge texts beside short requests: the tokenizer stage's bound, measured.

    python -m benchmarks.flood_bench --model-dir /tmp/default-store --before /tmp/before
    python -m benchmarks.flood_bench --model-dir STORE --waves 10 \
        --setting BERT_MTS_MAX_BATCH_TOKENS=16384 --setting BERT_MTS_MAX_BATCH_TOKENS=2048

--floods concurrent requests each carry one text of about --text-bytes (close to the
body limit), sent while one client sends short sentiment requests one after another;
--waves floods are sent one after another (more short samples under the flood). Per
configuration (--before: another checkout's code; --setting: a service setting, one
server per value; all measured in the same run) the table gives the short requests'
latency idle and under the flood (p50, p99, max), the flood requests' statuses, and the
server's resident memory before and at its peak (sampled every 20 ms from /proc).
Linux only (reads /proc/<pid>/status).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import Server

SHORT = {"text": "dull and lifeless"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def short_latencies(url: str, count: int, stop: threading.Event | None = None) -> list[float]:
    """Sequential short requests (ms); with `stop`, until it is set (at least `count`)."""
    times = []
    with httpx.Client(base_url=url, timeout=120) as client:
        while len(times) < count or (stop is not None and not stop.is_set()):
            started = time.perf_counter()
            client.post("/sentiment", json=SHORT).raise_for_status()
            times.append(1e3 * (time.perf_counter() - started))
    return times


def tail(values: list[float]) -> list[float]:
    return [float(np.percentile(values, 50)), float(np.percentile(values, 99)), max(values)]


def measure(
    model_dir: Path,
    root: Path | None,
    env: dict[str, str],
    floods: int,
    text_bytes: int,
    waves: int,
) -> list:
    server = Server(model_dir, env, root)
    try:
        pid = server.process.pid
        short_latencies(server.url, 10)  # warm-up
        idle = short_latencies(server.url, 30)
        rss_before = rss_mb(pid)
        peak = [rss_before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(rss_mb(pid))
                time.sleep(0.02)

        words = "the film was dull and lifeless , and nobody cared . "
        body = {"text": (words * (text_bytes // len(words)))[:text_bytes]}
        statuses: Counter[int] = Counter()

        def flood() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                statuses[client.post("/sentiment", json=body).status_code] += 1

        sampler = threading.Thread(target=sample)
        sampler.start()
        under: list[float] = []
        prober = threading.Thread(target=lambda: under.extend(short_latencies(server.url, 1, done)))
        prober.start()
        for _ in range(waves):
            flooders = [threading.Thread(target=flood) for _ in range(floods)]
            for thread in flooders:
                thread.start()
            for thread in flooders:
                thread.join()
        done.set()
        prober.join()
        sampler.join()
        flood_statuses = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        return [*tail(idle), *tail(under), len(under), flood_statuses, rss_before, max(peak)]
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--before", type=Path, help="another checkout, measured first")
    parser.add_argument("--floods", type=int, default=40)
    parser.add_argument("--text-bytes", type=int, default=990_000)
    parser.add_argument("--waves", type=int, default=1, help="floods one after another")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting (environment variable); repeat for one server per value",
    )
    args = parser.parse_args()
    try:
        settings = [dict([s.split("=", 1)]) for s in args.setting] or [{}]
    except ValueError:
        parser.error("--setting takes NAME=VALUE")
    configs = [("before", args.before, {})] if args.before else []
    configs += [
        ("after" if not env else f"after, {args.setting[i]}", None, env)
        for i, env in enumerate(settings)
    ]
    rows = []
    for name, root, env in configs:
        measured = measure(args.model_dir, root, env, args.floods, args.text_bytes, args.waves)
        rows.append([name, *measured])
    headers = [
        "configuration",
        "idle p50 ms",
        "idle p99 ms",
        "idle max ms",
        "flood p50 ms",
        "flood p99 ms",
        "flood max ms",
        "short requests",
        "flood statuses",
        "RSS before MB",
        "RSS peak MB",
    ]
    print(markdown_table(headers, rows))
    print(provenance())
    return 0


if __name__ == "__main__":
    sys.exit(main())
