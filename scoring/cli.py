"""`bert-mts-score` (or `python -m scoring`): score a file with a model store's tasks.

    bert-mts-score --task sentiment --input reviews.csv --text-a-column sentence \\
        --output scored.csv
    bert-mts-score --task all --input corpus/ --output scored/ --ray auto   # Ray Data

The output holds the input's columns and, per task, its answer columns by kind:
`<task>_label`, `<task>_label_name`, `<task>_probabilities` (classification);
`<task>_decision`, `<task>_label_name`, `<task>_probability` (binary); `<task>_score`
(regression); then `truncated`. A bad row stops the run with `file:line: reason`, or
is skipped and counted with --skip-bad-rows; an existing output is kept unless
--overwrite; misuse is one line and exit code 2, made before the model is loaded where
it needs none. docs/scoring.md has the whole story, and how to secure a Ray cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from model_store.cli import STORE_ERRORS, OneLineArgumentParser, run_cli
from model_store.locations import default_store
from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from scoring.core import ALL_TASKS, ScoreError, engine_config, resolve_tasks
from scoring.local import Options, check_run, score_file
from service.engine import Engine, EngineError
from training.data.examples import DataError

if TYPE_CHECKING:
    from tqdm import tqdm

PROG = "bert-mts-score"
log = logging.getLogger(PROG)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store",
        type=Path,
        default=default_store(),
        help=f"a store or repository (its current version); default {default_store()}",
    )
    parser.add_argument(
        "--task",
        action="append",
        dest="tasks",
        metavar="TASK",
        help="a served task (repeat for several: their frozen layers run "
        "once per row), or 'all' (default): every task of the input's shape",
    )
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="a .csv, .tsv, .jsonl or .parquet file (with --ray: a "
        "directory of .parquet or .jsonl files)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="where to write (format by suffix; with --ray a directory)",
    )
    parser.add_argument("--text-a-column", default="text", help="column of the (first) text")
    parser.add_argument("--text-b-column", help="column of the second text (pair tasks)")
    parser.add_argument("--graph", choices=("auto", "fp32", "int8", "fp16"), default="auto")
    parser.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime intra-op threads (0: its default, every core)",
    )
    parser.add_argument("--batch-size", type=_positive, default=32, help="rows per run")
    parser.add_argument(
        "--batch-tokens", type=_positive, default=16384, help="rows x padded length per run"
    )
    parser.add_argument(
        "--chunk-rows",
        type=_positive,
        default=8192,
        help="rows read, scored and written at a time (bounds memory)",
    )
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip and count bad rows (a missing or empty text, a wrong field count, a "
        "JSONL line with no readable object) instead of stopping at the first",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue a stopped run from its last written chunk"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (without it, an existing output is refused)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on a Ray cluster ('auto', or ray://host:10001) with Ray Data; "
        "secure the cluster first (docs/scoring.md)",
    )
    parser.add_argument(
        "--ray-actors",
        type=_positive,
        default=None,
        help="scoring actors (one ONNX Runtime session each; default: "
        "one per --ray-actor-cpus of the cluster's CPUs)",
    )
    parser.add_argument(
        "--ray-actor-cpus",
        type=_positive,
        default=1,
        help="CPUs per actor (also its ONNX Runtime threads)",
    )
    parser.add_argument(
        "--ray-actor-gpus",
        type=float,
        default=0,
        help="GPUs Ray reserves per actor (with --provider cuda; e.g. 1, or 0.5 to share)",
    )
    args = parser.parse_args(argv)
    if args.ray_actor_gpus < 0:
        parser.error("--ray-actor-gpus must not be negative")
    if args.tasks is None:
        args.tasks = [ALL_TASKS]
    if ALL_TASKS in args.tasks and len(args.tasks) > 1:
        parser.error("--task all cannot be combined with other tasks")
    if args.resume and args.ray:
        parser.error("--resume is for single-machine runs (Ray retries failed tasks itself)")
    return args


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    logging.getLogger("scoring.local").setLevel(logging.WARNING)
    if args.ray:
        return _main_ray(args)
    from scoring.formats import InputFile

    # Everything that needs no model first: the manifest (milliseconds, no hashing),
    # the input's columns, the output. Loading the graph takes seconds to minutes.
    store = resolve_store(args.store)
    pair = args.text_b_column is not None
    named = resolve_tasks(load_manifest(store, verify=False), args.tasks, pair)
    source = InputFile(args.input, args.text_a_column, args.text_b_column)
    check_run(named, source, args.output, args.overwrite)
    engine = Engine.load_store(store, engine_config(args.graph, args.provider, args.threads))
    tasks = resolve_tasks(engine.manifest, args.tasks, pair)
    options = Options(args.chunk_rows, args.batch_size, args.batch_tokens, args.skip_bad_rows)
    started = time.perf_counter()
    with progress_bar(source.approximate_rows(), args.progress) as bar:
        summary = score_file(
            engine,
            tasks,
            source,
            args.output,
            options,
            args.resume,
            overwrite=args.overwrite,
            on_rows=bar.update,
        )
    elapsed = time.perf_counter() - started
    resumed = f", {summary.resumed_chunks} chunks resumed" if summary.resumed_chunks else ""
    log.info(
        "scored %d rows (%s) with the %s graph on %s in %.1f s (%.0f rows/s)%s; skipped %d "
        "bad rows; wrote %s",
        summary.rows,
        ", ".join(t.name for t in tasks),
        engine.variant,
        engine.provider,
        elapsed,
        summary.rows / elapsed if elapsed else 0.0,
        resumed,
        len(summary.skipped),
        args.output,
    )
    return 0


def _main_ray(args: argparse.Namespace) -> int:
    from scoring.ray_job import RayJob, run_ray

    job = RayJob(
        store=args.store,
        tasks=tuple(args.tasks),
        text_a=args.text_a_column,
        text_b=args.text_b_column,
        graph=args.graph,
        provider=args.provider,
        batch_size=args.batch_size,
        batch_tokens=args.batch_tokens,
        chunk_rows=args.chunk_rows,
        skip_bad_rows=args.skip_bad_rows,
        actor_cpus=args.ray_actor_cpus,
        actor_gpus=args.ray_actor_gpus,
    )
    summary = run_ray(job, args.input, args.output, args.ray, args.ray_actors, args.overwrite)
    log.info(
        "scored %d rows; skipped %d bad rows; wrote %s",
        summary.rows,
        len(summary.skipped),
        args.output,
    )
    return 0


def progress_bar(total: int, progress: bool | None) -> tqdm:
    """A bar on stderr counting rows, with tqdm's rate and time left; `update(rows)`
    after each scored batch, so it moves within a chunk."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="rows",
        disable=_no_bar(progress),
        dynamic_ncols=True,
        file=sys.stderr,
    )


def _no_bar(progress: bool | None) -> bool | None:
    """tqdm's `disable`: None lets it decide (off when stderr is not a terminal)."""
    return None if progress is None else not progress


def main(argv: Sequence[str] | None = None) -> int:
    from model_store.manifest import StoreError
    from model_store.tokenizer import TokenizerError

    user_errors = (*STORE_ERRORS, ScoreError, EngineError, StoreError, TokenizerError, DataError)
    return run_cli(_main, argv, PROG, user_errors)


if __name__ == "__main__":
    sys.exit(main())
