"""Where the service's CPU goes under load: py-spy samples of the server, by stage.

    pip install py-spy==0.4.2
    python -m benchmarks.profile_serve --model-dir models/default --data-dir ../shared/data

Starts the service (loopback), loads it with single sentiment texts from
`benchmarks.common.closed_loop`'s client at `--concurrency`, and samples every
thread of the server with py-spy (`--nonblocking`, so the server is not paused;
native frames off: ONNX Runtime's and the tokenizer's C++ time is charged to the Python
frame that called them). Each sample is charged to the first stage, innermost frame
first, whose pattern it matches; the table is the share of samples and the
milliseconds per request that stage costs (samples / rate / requests).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common.closed_loop import one_connection, workloads
from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import Server, validation_texts
from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from model_store.tokenizer import PairTokenizer

RATE = 200  # samples per second per thread
# (stage, pattern on "function (file)" frames), the first match innermost-first wins.
STAGES = [
    ("ONNX Runtime run", r"\(onnxruntime/|run_task|run_tasks|_run_batch"),
    ("tokenizing", r"tokenizers|encode_batch|model_store/tokenizer\.py"),
    ("batch planning", r"service/batcher\.py"),
    ("JSON and validation (pydantic)", r"pydantic|json_response|model_validate|schemas\.py"),
    ("metrics", r"prometheus_client|service/metrics\.py|RequestMetrics"),
    ("middleware", r"service/middleware\.py|service/http_limits\.py"),
    ("routes and inference glue", r"service/routes/|service/inference\.py"),
    ("framework (starlette, fastapi)", r"starlette/|fastapi/"),
    ("HTTP server (uvicorn, h11/httptools)", r"uvicorn/|h11/|httptools"),
    ("event loop (asyncio)", r"asyncio/|selectors\.py"),
    ("thread hand-offs (concurrent.futures, threading)", r"concurrent/futures|threading\.py"),
]


def stage_of(stack: str) -> str:
    frames = stack.split(";")[::-1]  # innermost first
    for frame in frames:
        for stage, pattern in STAGES:
            if re.search(pattern, frame):
                return stage
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--graph", default="fp32")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))

    store = resolve_store(args.model_dir)
    manifest = load_manifest(store)
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    requests = workloads(validation_texts(args.data_dir, 400), tokenizer)["single"]
    server = Server(args.model_dir, {"BERT_MTS_GRAPH": args.graph})
    out: list = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "stacks.txt"

            def load() -> None:
                async def run() -> None:
                    until = time.perf_counter() + args.seconds + 2
                    await asyncio.gather(
                        *(
                            one_connection(server.port, requests, c * 7, until, out)
                            for c in range(args.concurrency)
                        )
                    )

                asyncio.run(run())

            loader = threading.Thread(target=load)
            loader.start()
            time.sleep(1)  # warm: the queue is full of work when sampling starts
            before = len(out)
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--rate",
                    str(RATE),
                    "--duration",
                    str(args.seconds),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--threads",
                    "--output",
                    str(raw),
                ],
                check=True,
                capture_output=True,
            )
            answered = len(out) - before
            loader.join()
            counts: collections.Counter[str] = collections.Counter()
            threads: collections.Counter[str] = collections.Counter()
            for line in raw.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack:
                    continue
                counts[stage_of(stack)] += int(count)
                threads[stack.split(";")[0][:60]] += int(count)
    finally:
        server.stop()
    total = sum(counts.values())
    per_request = 1e3 / RATE / max(answered, 1)
    print(f"## Server CPU by stage, single texts at concurrency {args.concurrency}\n")
    print(f"{provenance()}\n")
    print(
        f"{answered} requests answered in {args.seconds} s of sampling "
        f"({answered / args.seconds:.0f} req/s), {total} samples at {RATE} Hz\n"
    )
    print(
        markdown_table(
            ["stage", "share of samples", "CPU ms per request"],
            [
                (stage, f"{n / total:.1%}", f"{n * per_request:.2f}")
                for stage, n in counts.most_common()
            ],
        )
    )
    print("\nBy thread\n")
    print(
        markdown_table(
            ["thread", "share"], [(t, f"{n / total:.1%}") for t, n in threads.most_common(8)]
        )
    )


if __name__ == "__main__":
    main()
