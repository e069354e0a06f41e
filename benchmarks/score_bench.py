"""Offline scoring throughput: `bert-mts-score` on a file against the graph's ceiling.

    python -m benchmarks.score_bench --store models/default \\
        --input ../shared/data/sst-train.tsv --column sentence --task sentiment

In one run, alternating so that the machine's other load falls on both alike: the
offline ceiling of the graph the scorer picks (tokenize + ONNX Runtime on length-sorted
batches of 32, no files: `serve_bench.offline`'s loop, one pass over the file's texts
per repeat), and the scorer on the same session (`scoring.local.score_file`: read the
file, score it, write the output), each repeat's ratio taken between the two adjacent
passes. Then the command itself (`python -m scoring`, a child process) on the file and
on the file repeated `--grow` times, in chunks small enough that both span several, to
show that its peak memory (the child's max RSS) does not grow with the file. Prints a
table and the command line that produced it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common.report import markdown_table, provenance
from model_store.locations import default_store
from scoring.core import engine_config, resolve_tasks
from scoring.formats import InputFile
from scoring.local import Options, score_file
from service.engine import Engine

RATE = re.compile(r"scored (\d+) rows .* \((\d+) rows/s\)")


def ceiling_pass(engine: Engine, texts: list[str], task: str, batch_size: int = 32) -> float:
    """serve_bench.offline's batched loop on the scorer's own session: rows/s."""
    started = time.perf_counter()
    rows = sorted(engine.tokenizer.encode(texts), key=len)
    for i in range(0, len(rows), batch_size):
        engine.session.run_task(engine.tokenizer.pad(rows[i : i + batch_size]), task)
    return len(rows) / (time.perf_counter() - started)


def scorer_run(args: argparse.Namespace, source: Path, out: Path) -> tuple[float, int, float]:
    """One `python -m scoring` run: its rows/s, rows, and peak RSS in MiB."""
    command = [
        sys.executable,
        "-m",
        "scoring",
        "--store",
        str(args.store),
        "--task",
        args.task,
        "--input",
        str(source),
        "--text-a-column",
        args.column,
        "--output",
        str(out),
        "--graph",
        args.graph,
        "--provider",
        "cpu",
        "--no-progress",
        "--overwrite",
        "--threads",
        str(args.threads),
        "--chunk-rows",
        str(args.chunk_rows),
    ]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    stderr = child.stderr.read()
    if status != 0:
        raise SystemExit(f"scorer failed: {stderr.strip()}")
    match = RATE.search(stderr)
    if match is None:
        raise SystemExit(f"no rate in the scorer's output: {stderr.strip()}")
    return float(match.group(2)), int(match.group(1)), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=default_store())
    parser.add_argument("--input", type=Path, default=Path("../shared/data/sst-train.tsv"))
    parser.add_argument("--column", default="sentence")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--graph", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grow", type=int, default=4, help="the larger file: the input x N")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all)")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=8192,
        help="the scorer's chunk in the timed runs (default: the command's)",
    )
    parser.add_argument(
        "--memory-chunk-rows",
        type=int,
        default=256,
        help="the chunk of the memory runs (small: the files span several chunks)",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=0,
        help="score only the file's first N rows (0: all), on a busy machine",
    )
    args = parser.parse_args()

    # The scorer's own settings (scoring.core.engine_config), for the ceiling too: both
    # passes run on this one session.
    engine = Engine.load(args.store, engine_config(args.graph, "cpu", args.threads))
    tasks = resolve_tasks(engine.manifest, [args.task], pair=False)
    name = args.input.name
    with tempfile.TemporaryDirectory() as tmp:
        lines = args.input.read_text(encoding="utf-8").splitlines(keepends=True)
        if args.rows:  # a text file's first rows (the shared SST file has one per line)
            lines = lines[: args.rows + 1]
            args.input = Path(tmp) / f"head{args.input.suffix}"
            args.input.write_text("".join(lines), encoding="utf-8")
        source = InputFile(args.input, args.column, None)
        texts = [t for chunk in source.chunks(1 << 30, skip_bad_rows=True) for t in chunk.texts_a]
        ceiling_pass(engine, texts[:500], args.task)  # warm-up
        out = Path(tmp) / f"out{args.input.suffix}"
        ceilings, rates, ceiling_cpu, scorer_cpu = [], [], [], []
        for _ in range(args.repeats):  # adjacent in time: the machine's load falls on both
            cpu = time.process_time()  # this process's CPU, ORT's threads included
            ceilings.append(ceiling_pass(engine, texts, args.task))
            ceiling_cpu.append((time.process_time() - cpu) / len(texts) * 1e3)
            started, cpu = time.perf_counter(), time.process_time()
            options = Options(chunk_rows=args.chunk_rows)
            summary = score_file(engine, tasks, source, out, options, overwrite=True)
            rates.append(summary.rows / (time.perf_counter() - started))
            scorer_cpu.append((time.process_time() - cpu) / summary.rows * 1e3)
        rows = summary.rows
        # Memory: the command itself, in a child process, on the file and on the file
        # repeated, with chunks small enough that both span several.
        args.chunk_rows = args.memory_chunk_rows
        file_rate, _, file_rss = scorer_run(args, args.input, out)
        big = Path(tmp) / f"big{args.input.suffix}"
        big.write_text(lines[0] + "".join(lines[1:]) * args.grow, encoding="utf-8")
        big_rate, big_rows, big_rss = scorer_run(args, big, out)
        size_mb = args.input.stat().st_size / 2**20

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"

    ratio = [r / c for r, c in zip(rates, ceilings, strict=True)]
    # CPU per row is what other processes' load disturbs least on a shared machine.
    cpu_ratio = [c / r for c, r in zip(ceiling_cpu, scorer_cpu, strict=True)]

    def share(values: list[float]) -> str:
        return f"{statistics.median(values):.1%} ({min(values):.1%}-{max(values):.1%})"

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    chunked = f"chunks of {args.memory_chunk_rows}"
    rows_table = [
        (
            "graph ceiling (tokenize + ORT, batches of 32)",
            len(texts),
            spread(ceilings),
            "",
            ms(ceiling_cpu),
            "",
            "",
        ),
        (
            f"score_file: {name}, {rows} rows ({size_mb:.2f} MiB)",
            rows,
            spread(rates),
            share(ratio),
            ms(scorer_cpu),
            share(cpu_ratio),
            "",
        ),
        (
            f"bert-mts-score, the file, {chunked}",
            rows,
            f"{file_rate:.0f}",
            "",
            "",
            "",
            f"{file_rss:.0f}",
        ),
        (
            f"bert-mts-score, the file x{args.grow}, {chunked}",
            big_rows,
            f"{big_rate:.0f}",
            "",
            "",
            "",
            f"{big_rss:.0f}",
        ),
    ]
    print(f"## Offline scoring ({engine.variant} graph, task {args.task})\n\n{provenance()}\n")
    print(
        markdown_table(
            [
                "run",
                "rows",
                "rows/s: median (min-max)",
                "rows/s, scorer / ceiling, same repeat",
                "CPU ms/row",
                "CPU/row, ceiling / scorer",
                "peak RSS MiB",
            ],
            rows_table,
        )
    )


if __name__ == "__main__":
    main()
