"""Fairness of the dynamic batcher under mixed loads, before and after a change.

    git worktree add /tmp/before <commit>     # the code to compare against, with its own
    (cd /tmp/before && bert-mts-default-model build)   # store of its format
    python -m benchmarks.fairness_bench --model-dir models/default \\
        --before /tmp/before --before-model-dir /tmp/before/models/default

Three loads, each against a fresh server of each checkout, on loopback, with an
asyncio client in this process (the same for both, so its own CPU cost cancels out in
the ratios):

- short behind large: two clients send 256-text /sentiment requests back to back while
  one client sends single short /sentiment requests; the short requests' p50 and p99.
- mixed under a short timeout: request_timeout_s 1; 48 clients, half sending short
  single /sentiment texts, half long /paraphrase pairs, each client sending its next
  request as soon as it has an answer; per task the share answered 200 and the
  answers per second (a refusal comes back at once, so a server that refuses early
  sees more attempts: answers per second is the figure that compares).
- uniform: 16 clients sending single /sentiment texts; requests per second, the
  median of `--repeats` runs, the two checkouts alternating (this machine is noisy:
  single 20 s samples of the same server differ by about 5%).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx

from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import Server, validation_texts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _loop(client: httpx.AsyncClient, path: str, bodies: list[dict], stop: float, record):
    index = 0
    while time.monotonic() < stop:
        body = bodies[index % len(bodies)]
        index += 1
        started = time.perf_counter()
        try:
            response = await client.post(path, json=body)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        record(status, time.perf_counter() - started)


async def short_behind_large(url: str, texts, seconds: float) -> dict:
    short = [{"text": item[0]} for item in texts["sentiment"] if len(item[0].split()) <= 8]
    sentences = [item[0] for item in texts["sentiment"]]
    large = [{"texts": sentences[i : i + 256]} for i in range(0, len(sentences) - 255, 256)]
    latencies: list[float] = []
    large_items: list[int] = []
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(
            _loop(client, "/sentiment", short, stop, lambda s, t: latencies.append(t)),
            *(
                _loop(client, "/sentiment", large, stop, lambda s, t: large_items.append(256))
                for _ in range(2)
            ),
        )
    return {
        "short p50 ms": 1e3 * statistics.median(latencies),
        "short p99 ms": 1e3 * percentile(latencies, 0.99),
        "short requests": len(latencies),
        "large items/s": sum(large_items) / seconds,
    }


def _long_pairs(texts) -> list[dict]:
    """Paraphrase pairs made long (each side three questions): ~100+ tokens a row."""
    pairs = texts["paraphrase"]
    return [
        {
            "sentence1": " ".join(pairs[(i + k) % len(pairs)][0] for k in range(3)),
            "sentence2": " ".join(pairs[(i + k) % len(pairs)][1] for k in range(3)),
        }
        for i in range(len(pairs))
    ]


async def mixed_short_timeout(url: str, texts, seconds: float) -> dict:
    short = [{"text": item[0]} for item in texts["sentiment"]]
    long = _long_pairs(texts)
    outcomes: dict[str, Counter] = {"sentiment": Counter(), "paraphrase": Counter()}
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(
            *(
                _loop(
                    client,
                    f"/{task}",
                    bodies,
                    stop,
                    lambda s, t, task=task: outcomes[task].update([s]),
                )
                for i in range(48)
                for task, bodies in [(("sentiment", short), ("paraphrase", long))[i % 2]]
            )
        )
    result = {}
    for task, counts in outcomes.items():
        total = sum(counts.values())
        result[f"{task} answered"] = f"{counts[200] / total:.1%} of {total}" if total else "-"
        result[f"{task} answered/s"] = counts[200] / seconds
    return result


async def uniform(url: str, texts, seconds: float) -> dict:
    short = [{"text": item[0]} for item in texts["sentiment"]]
    done = Counter()
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(
            *(
                _loop(client, "/sentiment", short, stop, lambda s, t: done.update([s]))
                for _ in range(16)
            )
        )
    return {"uniform req/s": done[200] / seconds, "uniform errors": sum(done.values()) - done[200]}


def run_load(load, model_dir: Path, root: Path | None, env: dict, texts, seconds: float) -> dict:
    server = Server(model_dir, env, root)
    try:
        return asyncio.run(load(server.url, texts, seconds))
    finally:
        server.stop()


def measure(checkouts: dict, texts, seconds: float, repeats: int) -> dict[str, dict]:
    """Every load against a fresh server of each checkout; uniform load repeated."""
    results: dict[str, dict] = {name: {} for name in checkouts}
    for load, env in (
        (short_behind_large, {}),
        (mixed_short_timeout, {"BERT_MTS_REQUEST_TIMEOUT_S": "1"}),
    ):
        for name, (model_dir, root) in checkouts.items():
            results[name].update(run_load(load, model_dir, root, env, texts, seconds))
    samples: dict[str, list[float]] = {name: [] for name in checkouts}
    for _ in range(repeats):
        for name, (model_dir, root) in checkouts.items():
            outcome = run_load(uniform, model_dir, root, {}, texts, seconds)
            samples[name].append(outcome["uniform req/s"])
            results[name]["uniform errors"] = (
                results[name].get("uniform errors", 0) + outcome["uniform errors"]
            )
    for name, values in samples.items():
        results[name]["uniform req/s (median)"] = statistics.median(values)
        results[name]["uniform req/s (runs)"] = " / ".join(f"{v:.1f}" for v in values)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--before", type=Path, help="checkout of the code to compare against")
    parser.add_argument("--before-model-dir", type=Path, help="a store that code can read")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the uniform load")
    args = parser.parse_args()
    texts = validation_texts(args.data_dir, 1024)
    checkouts = {"after": (args.model_dir, None)}
    if args.before:
        checkouts = {"before": (args.before_model_dir, args.before), **checkouts}
    runs = measure(checkouts, texts, args.seconds, args.repeats)
    keys = list(runs["after"])
    print(f"## Fairness under mixed loads ({args.seconds:g} s per load)\n\n{provenance()}\n")
    print(markdown_table(["figure", *runs], [[k, *(runs[r][k] for r in runs)] for k in keys]))
    if "before" in runs:
        key = "uniform req/s (median)"
        ratio = runs["after"][key] / runs["before"][key]
        print(f"\nuniform load, after / before (medians): {ratio:.3f}")


if __name__ == "__main__":
    main()
