"""Score a corpus on a Ray cluster: the same chunk scoring as `bert-mts-score`, run as a
Ray Data `map_batches` over actors that each hold one ONNX Runtime session.

Each actor loads the store once, when it starts (from `--store`, a path every node can
read: a shared file system, or the same path on each node), and then scores batches of
`--chunk-rows` rows with `scoring.core.score_texts`, the function the single-process run
calls, so the answers are the same. Ray Data streams the input's files through the
actors, keeps the input's order (`preserve_order`), and retries a failed batch or a
lost actor (`max_task_retries`, `max_restarts`). The input is a directory (or file) of
Parquet or JSONL; the output, a directory of the same format, is written under a
temporary name and renamed when every block is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from scoring.core import ScoreError, answer_columns, resolve_tasks, score_texts
from scoring.formats import arrow_type
from service.engine import Engine, EngineConfig
from training.data.examples import DataError
from training.data.readers import BadRow, clean_text

log = logging.getLogger(__name__)
RETRIES = 3  # per batch and per actor, before the job fails


@dataclass(frozen=True)
class RayJob:
    """Everything an actor needs; small and picklable (it travels to every actor)."""

    store: Path
    tasks: tuple[str, ...]
    text_a: str
    text_b: str | None
    graph: str = "auto"
    provider: str = "auto"
    batch_size: int = 32
    batch_tokens: int = 16384
    chunk_rows: int = 8192
    skip_bad_rows: bool = False
    actor_cpus: int = 1
    actor_gpus: float = 0  # GPUs Ray reserves per actor (with provider cuda)


class ChunkScorer:
    """One Ray actor: one engine (ONNX Runtime session), scoring Arrow batches."""

    def __init__(self, job: RayJob) -> None:
        config = EngineConfig(
            graph=job.graph, provider=job.provider, intra_op_threads=job.actor_cpus
        )
        self.job = job
        self.engine = Engine.load(job.store, config)
        self.tasks = resolve_tasks(self.engine, job.tasks, pair=job.text_b is not None)

    def __call__(self, batch):
        import pyarrow as pa

        job = self.job
        column_a = batch.column(job.text_a).to_pylist()
        column_b = batch.column(job.text_b).to_pylist() if job.text_b else None
        keep, texts_a, texts_b = [], [], [] if column_b is not None else None
        for i, value in enumerate(column_a):
            try:
                text_a = clean_text(value, job.text_a)
                text_b = None if column_b is None else clean_text(column_b[i], job.text_b)
            except BadRow as bad:
                if not job.skip_bad_rows:
                    # A row's position in a distributed read is not known here: the
                    # message quotes the row, to find it with grep.
                    row = json.dumps({k: v[i] for k, v in batch.to_pydict().items()}, default=str)
                    raise DataError("input", None, f"{bad.reason} in row {row[:200]}") from None
                continue
            keep.append(i)
            texts_a.append(text_a)
            if texts_b is not None:
                texts_b.append(text_b)
        if len(keep) != len(column_a):
            batch = batch.take(pa.array(keep, pa.int64()))
        answers = score_texts(
            self.engine, self.tasks, texts_a, texts_b, job.batch_size, job.batch_tokens
        )
        for name, values in answers.items():
            batch = batch.append_column(name, pa.array(values, arrow_type(pa, name)))
        return batch


def _input_files(path: Path) -> list[Path]:
    """The input's data files in name order: the output keeps this order (a directory's
    listing order is the filesystem's, not the corpus's)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [p for p in files if not p.name.startswith((".", "_"))]


def _input_format(path: Path) -> str:
    suffixes = {p.suffix.lower() for p in _input_files(path)}
    if suffixes == {".parquet"}:
        return "parquet"
    if suffixes == {".jsonl"}:
        return "jsonl"
    found = ", ".join(sorted(suffixes)) or "no files"
    raise ScoreError(f"{path}: --ray reads a directory of .parquet or .jsonl files (found {found})")


def _jsonl_sink(path: str):
    """A Ray datasink writing JSONL as the single-process run does (json.dumps of each
    row: every float's digits kept), not through pandas (which rounds them)."""
    from ray.data.datasource import BlockBasedFileDatasink

    class JsonlSink(BlockBasedFileDatasink):
        def __init__(self, path: str) -> None:
            super().__init__(path, file_format="jsonl")

        def write_block_to_file(self, block, file) -> None:
            for row in block.to_arrow().to_pylist():
                line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
                file.write(line.encode("utf-8"))

    return JsonlSink(path)


def run_ray(
    job: RayJob, source: Path, output: Path, address: str | None, actors: int | None = None
) -> int:
    """Score `source` into the directory `output` on the Ray cluster at `address`
    (`auto`: the one this machine belongs to; None: the one already initialised).
    Returns the rows written."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ScoreError("--ray needs Ray Data: pip install 'bert-mts[ray]'") from None
    if not source.exists():
        raise ScoreError(f"{source}: does not exist")
    if output.exists():
        raise ScoreError(f"{output}: already exists (the output directory must be new)")
    fmt = _input_format(source)
    # Check the store and tasks here, before the cluster does: one line, not a
    # failed actor's traceback.
    probe = Engine.load(job.store, EngineConfig(graph=job.graph, provider=job.provider))
    columns = answer_columns(resolve_tasks(probe, job.tasks, pair=job.text_b is not None))
    # The repository's current version now, for every actor: a version published while
    # the job runs is not mixed into its answers.
    job = RayJob(**{**job.__dict__, "store": probe.manifest.directory.resolve()})
    del probe
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    if actors is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # One CPU is left to Ray Data's read and write tasks.
        actors = max(1, (cpus - 1) // job.actor_cpus)
    files = [str(path) for path in _input_files(source)]
    if fmt == "parquet":
        dataset = ray.data.read_parquet(files)
    else:
        dataset = ray.data.read_json(files, lines=True)
    missing = [c for c in (job.text_a, job.text_b) if c and c not in dataset.schema().names]
    if missing:
        raise ScoreError(
            f"{source}: has no column {missing[0]!r}; available columns: "
            + ", ".join(dataset.schema().names)
        )
    clash = sorted(set(columns) & set(dataset.schema().names))
    if clash:
        raise ScoreError(f"{source}: the input already has the answer column {clash[0]!r}")
    scored = dataset.map_batches(
        ChunkScorer,
        fn_constructor_args=(job,),
        batch_size=job.chunk_rows,
        batch_format="pyarrow",
        concurrency=actors,
        num_cpus=job.actor_cpus,
        num_gpus=job.actor_gpus or None,
        max_restarts=RETRIES,
        max_task_retries=RETRIES,
    )
    staging = output.with_name(f"{output.name}.tmp-{os.getpid()}")
    try:
        try:
            if fmt == "parquet":
                scored.write_parquet(str(staging))
            else:
                scored.write_datasink(_jsonl_sink(str(staging)))
        except Exception as err:  # Ray wraps an actor's error in its own types
            bad_row = _data_error(err) if not isinstance(err, ScoreError) else err
            if bad_row is None:
                raise
            raise bad_row from None
        rows = sum(_rows(p, fmt) for p in staging.iterdir() if p.is_file())
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return rows


def _data_error(err: BaseException) -> ScoreError | None:
    """The bad-row error an actor raised, as one line. Ray hands the driver its own
    exception types with the actor's traceback as text (the DataError object itself is
    not kept), so the line is read from that text."""
    match = _DATA_ERROR.search(str(err))
    return ScoreError(match.group(1).strip()) if match else None


_DATA_ERROR = re.compile(r"DataError: ([^\n]+)")


def _rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as handle:
        return sum(1 for _ in handle)
