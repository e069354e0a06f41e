"""Throughput and latency of the HTTP service, with and without dynamic batching.

    apt-get install wrk        # the load generator: lean, so it leaves the CPU to the server
    python benchmarks/serve_bench.py --model-dir models/default --data-dir ../shared/data

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
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common.report import markdown_table, provenance
from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from model_store.runtime import CPU, MultiTaskSession
from model_store.tokenizer import PairTokenizer
from service.client import Client
from training.data.presets import PRESETS
from training.data.readers import read_examples, split_train_val
from training.fit.objectives import preset_spec

WRK_SCRIPT = r"""
local requests = {}
local counter = 0
local think_ms = 0
init = function(args)
  think_ms = tonumber(args[2] or "0")
  for line in io.lines(args[1]) do
    local path, body = line:match("^(%S+)\t(.*)$")
    local headers = {["Content-Type"] = "application/json"}
    requests[#requests + 1] = wrk.format("POST", path, headers, body)
  end
end
delay = function()
  return think_ms
end
request = function()
  counter = counter % #requests + 1
  return requests[counter]
end
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "other_errors": %d, '
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def validation_texts(data_dir: Path, per_task: int) -> dict[str, list[tuple[str, ...]]]:
    texts = {}
    for task, spec in ((t, preset_spec(t)) for t in PRESETS):
        dataset = PRESETS[task].data
        loaded = read_examples(
            data_dir / dataset.filename, dataset.columns, spec.parse_label, skip_bad_rows=True
        )
        val = split_train_val(loaded.examples, 0.1, seed=0)[1][:per_task]
        texts[task] = [(e.text_a, e.text_b) if spec.pair else (e.text_a,) for e in val]
    return texts


def request_lines(texts, workload: str) -> list[str]:
    """wrk request file lines: `path<TAB>json body`."""

    def single(task: str, item: tuple[str, ...]) -> str:
        if task == "sentiment":
            return f"/sentiment\t{json.dumps({'text': item[0]})}"
        return f"/{task}\t{json.dumps({'sentence1': item[0], 'sentence2': item[1]})}"

    if workload == "sentiment":
        return [single("sentiment", item) for item in texts["sentiment"]]
    if workload == "mixed":
        lines = [single(task, item) for task in PRESETS for item in texts[task]]
        random.Random(0).shuffle(lines)
        return lines
    sentences = [item[0] for item in texts["sentiment"]]
    return [
        f"/sentiment\t{json.dumps({'texts': sentences[i : i + 32]})}"
        for i in range(0, len(sentences) - 31, 32)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """The service in a child process, on loopback; `root` runs another checkout's code
    (to measure before and after a change in one run)."""

    def __init__(self, model_dir: Path, env: dict[str, str], root: Path | None = None) -> None:
        root = (root or Path(__file__).resolve().parents[2]).resolve()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "--model-dir",
                str(model_dir),
                "--port",
                str(self.port),
                "--provider",
                "cpu",
            ],
            env={**os.environ, "BERT_MTS_LOG_LEVEL": "warning", "PYTHONPATH": str(root), **env},
            cwd=root,
        )
        with Client(self.url, timeout=5) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if client.ready():
                        return
                except Exception:  # not listening yet
                    time.sleep(0.2)
        raise RuntimeError("the service did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def server_counters(url: str) -> dict[str, float]:
    """Cumulative figures from the server's /metrics, to difference around a run."""
    task_paths = ('"/sentiment"', '"/paraphrase"', '"/similarity"')
    counters: dict[str, float] = {}
    with Client(url) as client:
        for line in client.metrics().splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            if name.startswith("bert_mts_request_duration_seconds_bucket"):
                if any(path in name for path in task_paths):
                    key = "latency_le_" + re.search(r'le="([^"]+)"', name).group(1)
                    counters[key] = counters.get(key, 0.0) + float(value)
            elif name in (
                "bert_mts_inference_duration_seconds_sum",
                "bert_mts_batch_size_rows_sum",
                "bert_mts_batch_size_rows_count",
            ):
                counters[name] = float(value)
    return counters


def server_view(before: dict[str, float], after: dict[str, float], wall: float) -> dict:
    """Engine busy share, mean rows per batch, and the server-side p99 bucket bound."""
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    batches = delta.get("bert_mts_batch_size_rows_count") or 1.0
    buckets = sorted(
        (float(key.removeprefix("latency_le_")), count)
        for key, count in delta.items()
        if key.startswith("latency_le_")
    )
    total = buckets[-1][1] if buckets else 0.0
    p99 = next((bound for bound, count in buckets if count >= 0.99 * total), float("inf"))
    return {
        "engine_busy": delta.get("bert_mts_inference_duration_seconds_sum", 0.0) / wall,
        "rows_per_batch": delta.get("bert_mts_batch_size_rows_sum", 0.0) / batches,
        "server_p99_le_ms": p99 * 1e3,
    }


def run_wrk(
    url: str,
    lines: list[str],
    connections: int,
    seconds: float,
    workdir: Path,
    server_pid: int,
    think_ms: float = 0,
) -> dict:
    """Run wrk; with `think_ms` each connection pauses that long between requests."""
    script, requests = workdir / "load.lua", workdir / "requests.tsv"
    script.write_text(WRK_SCRIPT)
    requests.write_text("\n".join(lines) + "\n")
    server_cpu = cpu_seconds(server_pid)
    counters = server_counters(url)
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
            "--",
            str(requests),
            str(int(think_ms)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    output = process.stdout.read()
    _, _, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    result = json.loads(output.strip().splitlines()[-1])
    result["generator_cpu"] = (usage.ru_utime + usage.ru_stime) / wall
    result["server_cpu"] = (cpu_seconds(server_pid) - server_cpu) / wall
    result.update(server_view(counters, server_counters(url), wall))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def offline(
    model_dir: Path, texts, batch_size: int, variant: str = "fp32", repeats: int = 5
) -> dict[str, float]:
    """The ceiling of one graph: tokenize + ORT on length-sorted batches of `batch_size`;
    and one text at a time: its items/s and p50 latency."""
    manifest = load_manifest(model_dir)
    session = MultiTaskSession(manifest, variant, providers=[CPU])
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    sentences = [item[0] for item in texts["sentiment"]]

    def batched() -> float:
        started = time.perf_counter()
        rows = sorted(tokenizer.encode(sentences), key=len)
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            session.run_task(tokenizer.pad(chunk), "sentiment")
        return len(rows) / (time.perf_counter() - started)

    def one(sentence: str) -> float:
        started = time.perf_counter()
        session.run_task(tokenizer.encode_batch([sentence]), "sentiment")
        return time.perf_counter() - started

    batched()  # warm-up
    ceiling = statistics.median(batched() for _ in range(repeats))
    latencies = [one(s) for s in sentences[:200] * 2]
    return {
        "items_per_s": ceiling,
        "batch1_items_per_s": len(latencies) / sum(latencies),
        "batch1_p50_ms": statistics.median(latencies) * 1e3,
    }


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
