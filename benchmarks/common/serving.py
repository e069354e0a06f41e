"""Serving a store for a benchmark, and loading it: the service in a child process on
loopback, validation texts to send, wrk as the load generator, the server's own view
from /metrics, and the offline ONNX Runtime ceiling. Shared by the benchmarks that
measure the HTTP service (`benchmarks.serve_bench` and the others)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from model_store.manifest import load_manifest
from model_store.runtime import CPU, MultiTaskSession
from model_store.tokenizer import PairTokenizer
from service.client import Client
from training.data.presets import PRESETS
from training.data.readers import read_examples
from training.data.split import split_train_val
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
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
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
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
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


def wait_idle(url: str, quiet_s: float = 1.0, timeout_s: float = 120.0) -> None:
    """Wait until the server has no rows queued and has run no batch for `quiet_s`: the
    work a previous row left behind (requests its load generator abandoned at the end)
    must not be charged to the next row."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        with Client(url) as client:
            lines = client.metrics().splitlines()
        values = dict(line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))
        state = (
            values.get("bert_mts_queue_depth_rows"),
            values.get("bert_mts_batch_size_rows_count"),
        )
        if state != last:
            last, since = state, time.monotonic()
        elif float(state[0] or 0) == 0 and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def closed_loop(url: str, path: str, bodies: list[dict], connections: int, seconds: float) -> dict:
    """`connections` clients, each sending its next request as soon as the last is
    answered, for `seconds`; every request started in that time is awaited. Items/s over
    the run is the items answered divided by the time to the last answer (what the
    engine delivered); "in window" counts only answers within `seconds`, as wrk does,
    which loses up to every connection's request in flight at the end."""
    import threading

    import httpx

    answered: list[tuple[float, float, int]] = []  # (started, ended, items) since t0
    errors = [0]
    lock = threading.Lock()
    counter = [0]
    t0 = time.perf_counter()

    def client() -> None:
        with httpx.Client(timeout=300) as http:
            while (started := time.perf_counter() - t0) < seconds:
                with lock:
                    counter[0] += 1
                    body = bodies[counter[0] % len(bodies)]
                response = http.post(f"{url}{path}", json=body)
                ended = time.perf_counter() - t0
                with lock:
                    if response.status_code == 200:
                        answered.append((started, ended, len(body["texts"])))
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = sorted(ended - started for started, ended, _ in answered)
    last = max((ended for _, ended, _ in answered), default=seconds)
    items = sum(n for _, _, n in answered)
    in_window = sum(n for _, ended, n in answered if ended <= seconds)

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {
        "requests": len(answered),
        "errors": errors[0],
        "items_per_s": items / last,
        "items_per_s_in_window": in_window / seconds,
        "p50_s": percentile(0.5),
        "p99_s": percentile(0.99),
        "max_s": latencies[-1] if latencies else 0.0,
        "first_answer_s": min((ended for _, ended, _ in answered), default=0.0),
    }
