"""Score a corpus on a Ray cluster: the same chunk scoring as `bert-mts-score`, run as a
Ray Data `map_batches` over actors that each hold one ONNX Runtime session.

Each actor loads the store once, when it starts (from `--store`, a path every node can
read: a shared file system, or the same path on each node), and then scores batches of
`--chunk-rows` rows with `scoring.core.score_texts`, the function the single-process run
calls, so the answers are the same. Ray Data streams the input's files (in name order)
through the actors, keeps the input's order (`preserve_order`), and retries a failed
batch or a lost actor (`max_task_retries`, `max_restarts`). The input is a directory
(or file) of Parquet or JSONL; the output, a directory of the same format, is written
under a temporary name and renamed when every block is written. Its files are named by
their block's position (`part-00000000.parquet`, ...): read in name order, they give
the rows in input order.

A bad row (a missing or empty text) stops the job; the driver then finds the input's
first bad row with the single-process reader and reports it as `file:line: reason`.
With `skip_bad_rows` the actor marks it instead, the sink leaves it out, and the driver
logs and counts it (quoted: a batch does not know its rows' lines). A JSONL line that
holds no JSON object (invalid JSON, an unpaired surrogate escape, nesting too deep)
fails Ray's reader for its whole file, so it stops the job even with `skip_bad_rows`,
reported the same way; so does a damaged Parquet file (a garbage or truncated one is
refused from its footer before the job starts).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from scoring.core import ScoreError, answer_columns, engine_config, resolve_tasks, score_texts
from scoring.formats import InputFile, arrow_type, parquet_file
from scoring.ray_read import BAD_ROW_COLUMN, jsonl_datasource
from service.engine import Engine
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


@dataclass
class RaySummary:
    """What a Ray run did."""

    rows: int  # rows scored and written
    skipped: list[str]  # each skipped bad row: its reason and the row, quoted


class ChunkScorer:
    """One Ray actor: one engine (ONNX Runtime session), scoring Arrow batches."""

    def __init__(self, job: RayJob) -> None:
        self.job = job
        config = engine_config(job.graph, job.provider, job.actor_cpus)
        self.engine = Engine.load(job.store, config)
        self.tasks = resolve_tasks(self.engine.manifest, job.tasks, pair=job.text_b is not None)

    def __call__(self, batch):
        """The batch with its answer columns. A bad row raises DataError, or (with
        skip_bad_rows) stays in the batch with null answers and its reason (and the
        row, quoted) in BAD_ROW_COLUMN: the sink drops it and reports it to the
        driver, the one channel from here that survives Ray's retries exactly once per
        row. A row the reader marked (a JSONL line with no object) keeps its mark."""
        import pyarrow as pa

        job = self.job
        column_a = _column(batch, job.text_a)
        column_b = _column(batch, job.text_b) if job.text_b else None
        keep, texts_a, texts_b = [], [], [] if column_b is not None else None
        reasons = _column(batch, BAD_ROW_COLUMN)
        if BAD_ROW_COLUMN in batch.column_names:
            batch = batch.drop_columns([BAD_ROW_COLUMN])
        for i, value in enumerate(column_a):
            if reasons[i] is not None:
                continue
            try:
                text_a = clean_text(value, job.text_a)
                text_b = None if column_b is None else clean_text(column_b[i], job.text_b)
            except BadRow as bad:
                if not job.skip_bad_rows:
                    # A row's file and line are not known here: the driver finds them
                    # (_first_problem); the row is quoted in case it cannot.
                    raise DataError(
                        "input", None, f"{bad.reason} in row {_quote(batch, i)}"
                    ) from None
                reasons[i] = f"{bad.reason} in row {_quote(batch, i)}"
                continue
            keep.append(i)
            texts_a.append(text_a)
            if texts_b is not None:
                texts_b.append(text_b)
        answers = score_texts(
            self.engine, self.tasks, texts_a, texts_b, job.batch_size, job.batch_tokens
        )
        for name, values in answers.items():
            if len(keep) != len(column_a):
                full: list[object] = [None] * len(column_a)
                for position, value in zip(keep, values, strict=True):
                    full[position] = value
                values = full
            batch = batch.append_column(name, pa.array(values, arrow_type(pa, name)))
        if job.skip_bad_rows:
            batch = batch.append_column(BAD_ROW_COLUMN, pa.array(reasons, pa.string()))
        return batch


def _column(batch, name: str) -> list[object]:
    """A column's values, or nulls where the batch lacks it (a JSONL block whose rows
    all lack a key, or the reader's marks in a block without bad lines)."""
    if name in batch.column_names:
        return batch.column(name).to_pylist()
    return [None] * batch.num_rows


def _quote(table, row: int) -> str:
    """One row of an input batch as JSON (before its answers are added), cut short:
    enough to grep for."""
    values = {n: table.column(n)[row].as_py() for n in table.column_names}
    return json.dumps(values, ensure_ascii=False, default=str)[:200]


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


def _sink(path: str, fmt: str):
    """A Ray datasink writing one file per write task, named by the task's index
    (`part-00000000.parquet`, ...). With `preserve_order` Ray hands the write tasks
    the blocks in input order and numbers them in that order (a retried task keeps
    its number), so the files in name order hold the rows in input order. Each file
    is written whole by the sink itself: JSONL as the single-process run writes it
    (json.dumps per row: every float's digits kept, not pandas' rounding), Parquet
    with pyarrow.parquet.write_table (one file, rows as given; Ray's own Parquet sink
    writes through pyarrow's threaded dataset writer, which does not promise the
    rows' order). Rows an actor marked bad are not written: each write task returns
    its written count and its skipped rows, which the driver collects."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from ray.data.block import BlockAccessor
    from ray.data.datasource import BlockBasedFileDatasink, FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:08d}.{fmt}"

    class ScoredSink(BlockBasedFileDatasink):
        def __init__(self) -> None:
            super().__init__(path, file_format=fmt, filename_provider=PartNames())
            self.written = 0
            self.skipped: list[str] = []

        def write(self, blocks, ctx) -> dict[str, object]:
            tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
            tables = [t for t in tables if t.num_rows]
            if not tables:
                return {"rows": 0, "skipped": []}
            import pyarrow as pa

            table = pa.concat_tables(tables, promote_options="default")
            skipped = []
            if BAD_ROW_COLUMN in table.column_names:
                bad = pc.is_valid(table.column(BAD_ROW_COLUMN))
                skipped = table.column(BAD_ROW_COLUMN).filter(bad).to_pylist()
                table = table.filter(pc.invert(bad)).drop_columns([BAD_ROW_COLUMN])
            if table.num_rows:
                self.write_block(BlockAccessor.for_block(table), 0, ctx)
            return {"rows": table.num_rows, "skipped": skipped}

        def write_block_to_file(self, block, file) -> None:
            table = block.to_arrow()
            if fmt == "parquet":
                pq.write_table(table, file)
                return
            for row in table.to_pylist():
                file.write((json.dumps(row, ensure_ascii=False, default=str) + "\n").encode())

        def on_write_complete(self, write_result) -> None:
            super().on_write_complete(write_result)
            for result in write_result.write_returns:
                self.written += result["rows"]
                self.skipped += result["skipped"]

    return ScoredSink()


def run_ray(
    job: RayJob,
    source: Path,
    output: Path,
    address: str | None,
    actors: int | None = None,
    overwrite: bool = False,
) -> RaySummary:
    """Score `source` into the directory `output` on the Ray cluster at `address`
    (`auto`: the one this machine belongs to; None: the one already initialised).
    An existing `output` is refused unless `overwrite` (and then replaced only if it
    holds nothing but a scorer's part files). Returns the rows written and the bad
    rows skipped."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ScoreError("--ray needs Ray Data: pip install 'bert-mts[ray]'") from None
    if not source.exists():
        raise ScoreError(f"{source}: does not exist")
    fmt = _input_format(source)
    _check_output(output, overwrite)
    files = [str(path) for path in _input_files(source)]
    if fmt == "parquet":  # footers only: a garbage file is one line, not a driver's traceback
        for name in files:
            _missing_column(name, parquet_file(Path(name)).schema_arrow.names, job)
    # The tasks from the manifest alone (no graph yet), then the store whole, here and
    # once, before the cluster does: one line, not a failed actor's traceback.
    store = resolve_store(job.store)
    resolve_tasks(load_manifest(store, verify=False), job.tasks, pair=job.text_b is not None)
    probe = Engine.load_store(store, engine_config(job.graph, job.provider))
    columns = answer_columns(resolve_tasks(probe.manifest, job.tasks, job.text_b is not None))
    # The repository's current version now, for every actor: a version published while
    # the job runs is not mixed into its answers.
    job = RayJob(**{**job.__dict__, "store": probe.manifest.directory.resolve()})
    del probe
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as err:
            raise ScoreError(f"--ray {address}: {' '.join(str(err).split())}") from None
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    if actors is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # One CPU is left to Ray Data's read and write tasks.
        actors = max(1, (cpus - 1) // job.actor_cpus)
    if fmt == "parquet":
        dataset = ray.data.read_parquet(files)
    else:  # the scorer's own line reader, not Ray's (scoring.ray_read says why)
        source_rows = jsonl_datasource(files, job.skip_bad_rows, job.chunk_rows)
        dataset = ray.data.read_datasource(source_rows)
    try:
        with _errors_off_the_console():
            names = dataset.schema().names
    except Exception as err:  # a read task failed: Ray wraps the reader's error
        raise _explained(err, files, job) from None
    _missing_column(str(source), names, job)
    clash = sorted(set(columns) & set(names))
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
    sink = _sink(str(staging), fmt)
    try:
        try:
            with _errors_off_the_console():
                scored.write_datasink(sink)
        except Exception as err:  # Ray wraps an actor's or a read task's error in its own
            raise _explained(err, files, job) from None
        for reason in sink.skipped:
            log.warning("skipped bad row: %s", reason)
        if not sink.written:
            raise ScoreError(f"{source}: no rows were scored: every row was bad and skipped")
        _replace(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return RaySummary(rows=sink.written, skipped=list(sink.skipped))


class _NoErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def _errors_off_the_console() -> Iterator[None]:
    """Ray Data's console without its ERROR records while the job runs: a failed task
    logs Ray's tracebacks there (some 150 lines for one bad row). The driver explains a
    fault of the input in one line itself, and re-raises any other failure with its
    traceback; Ray Data's log file (ray-data.log in the session) keeps every record."""
    consoles = [
        handler
        for handler in logging.getLogger("ray.data").handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    quiet = _NoErrors()
    for handler in consoles:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in consoles:
            handler.removeFilter(quiet)


def _missing_column(where: str, names: Sequence[str], job: RayJob) -> None:
    missing = [c for c in (job.text_a, job.text_b) if c and c not in names]
    if missing:
        raise ScoreError(
            f"{where}: has no column {missing[0]!r}; available columns: " + ", ".join(names)
        )


_PART = re.compile(r"part-\d{8}\.(parquet|jsonl)")


def _check_output(output: Path, overwrite: bool) -> None:
    """The output directory is new, or (with `overwrite`) an earlier run's output: only
    its part files, so that a mistyped --output cannot remove someone's directory."""
    if not output.exists():
        return
    if not overwrite:
        raise ScoreError(f"{output}: already exists; pass --overwrite to replace it")
    if not output.is_dir():
        raise ScoreError(f"{output}: is not a directory (with --ray the output is a directory)")
    other = sorted(p.name for p in output.iterdir() if not _PART.fullmatch(p.name))
    if other:
        raise ScoreError(
            f"{output}: holds {other[0]!r}, not only a scorer's part files: "
            "--overwrite replaces only an earlier output; remove it yourself"
        )


def _replace(staging: Path, output: Path) -> None:
    """Put the written directory at `output`; an earlier output (checked by
    `_check_output`) is moved aside first and removed once the new one is in place."""
    old = output.with_name(f"{output.name}.old-{os.getpid()}")
    if output.exists():
        output.rename(old)
    staging.rename(output)
    if old.exists():
        shutil.rmtree(old)


def _explained(err: Exception, files: list[str], job: RayJob) -> Exception:
    """The error to show for a failed Ray run: the input's first problem in one line if
    the input is the cause (`_first_problem`, or the DataError a read task or actor
    raised), else Ray's own error, traceback and all."""
    return _first_problem(files, job) or _data_error(err) or err


def _first_problem(files: list[str], job: RayJob) -> DataError | None:
    """Why a Ray run failed, if the input is the cause, as `file:line: reason`: found by
    reading the files in order with the single-process reader (an actor sees a batch,
    not where its rows came from; Ray hands the driver its own error types): the first
    bad row (without skip_bad_rows) or damaged Parquet part. None if it finds none."""
    for name in files:
        try:
            source = InputFile(Path(name), job.text_a, job.text_b)
        except DataError:
            continue  # file-level (an empty part): Ray reads it; Parquet's were checked
        try:
            for _ in source.chunks(job.chunk_rows, job.skip_bad_rows):
                pass
        except DataError as err:
            return err
    return None


def _data_error(err: BaseException) -> ScoreError | None:
    """The bad-row error an actor raised, as one line. Ray hands the driver its own
    exception types with the actor's traceback as text (the DataError object itself is
    not kept), so the line is read from that text."""
    match = _DATA_ERROR.search(str(err))
    return ScoreError(match.group(1).strip()) if match else None


_DATA_ERROR = re.compile(r"DataError: ([^\n]+)")
