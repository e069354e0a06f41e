"""Score a whole file on this machine: chunk by chunk, resumable, never half-written.

Each scored chunk is written whole (temporary file, then rename) into a work directory
beside the output, `OUT.parts/`, with a small record of its rows. When every chunk is
there they are joined, in input order, into `OUT.tmp`, which is renamed to `OUT`; the
work directory is then removed. A run that stops (a crash, Ctrl-C, a killed machine)
leaves its finished chunks; `--resume` checks that the input, store and settings are
those of the stopped run (`state.json`), skips the input's finished chunks and scores
the rest, so the output is byte for byte what an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from model_store.atomic import atomic_write_text
from model_store.manifest import TaskEntry
from scoring.core import ScoreError, answer_columns, score_texts
from scoring.formats import InputFile, format_of, write_part
from scoring.formats import assemble as assemble_parts
from service.engine import Engine

log = logging.getLogger(__name__)
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Options:
    """How to score: everything that changes the output's bytes is in here."""

    chunk_rows: int = 8192
    batch_size: int = 32
    batch_tokens: int = 16384
    skip_bad_rows: bool = False


@dataclass
class Summary:
    """What a run did."""

    rows: int = 0  # rows scored and written
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    chunks: int = 0
    resumed_chunks: int = 0  # chunks a stopped run had already written


def work_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def fingerprint(
    engine: Engine, tasks: list[TaskEntry], source: InputFile, output: Path, options: Options
) -> dict[str, object]:
    """What must not change between a stopped run and its resumption."""
    stat = source.path.stat()
    manifest = engine.manifest.directory / "manifest.json"
    return {
        "input": str(source.path.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "columns": [source.text_a, source.text_b],
        "output_format": format_of(output),
        "store": str(engine.manifest.directory.resolve()),
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "graph": engine.variant,
        "provider": engine.provider,
        "tasks": [task.name for task in tasks],
        **asdict(options),
    }


def _part(directory: Path, index: int, fmt: str) -> Path:
    return directory / f"{index:08d}.{fmt}"


def _meta(directory: Path, index: int) -> Path:
    return directory / f"{index:08d}.json"


def _prepare(directory: Path, state: dict[str, object], resume: bool) -> int:
    """The work directory ready for this run; the number of chunks already done."""
    if resume and directory.is_dir():
        state_path = directory / STATE_FILE
        previous = json.loads(state_path.read_text()) if state_path.is_file() else None
        if previous != state:
            changed = (
                "no state.json"
                if previous is None
                else ", ".join(k for k in state if previous.get(k) != state[k]) or "its keys"
            )
            raise ScoreError(
                f"cannot resume into {directory}: the stopped run differs ({changed}); "
                "run without --resume to start again"
            )
        done = 0
        while _meta(directory, done).is_file():
            done += 1
        return done
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    atomic_write_text(directory / STATE_FILE, json.dumps(state, indent=1))
    return 0


def check_run(
    tasks: list[TaskEntry], source: InputFile, output: Path, overwrite: bool = False
) -> None:
    """Every refusal that needs neither the graph nor a scored row, so that the command
    makes them before it loads the model: the output's format, the input's columns
    against the answers', and an output that exists (kept unless `overwrite`; a
    resumed run replaces nothing either, as its output is only written at its end)."""
    out_format = format_of(output)
    if source.columns is None and out_format in ("csv", "tsv"):
        raise ScoreError(
            f"{output}: JSONL objects have no fixed columns to write as {out_format}; "
            "write .jsonl or .parquet"
        )
    clash = sorted(set(answer_columns(tasks)) & set(source.columns or ()))
    if clash:
        raise ScoreError(f"{source.path}: the input already has the answer column {clash[0]!r}")
    if output.resolve() == source.path.resolve():
        raise ScoreError(f"{output}: the output would overwrite the input")
    if output.is_dir():
        raise ScoreError(f"{output}: is a directory (without --ray the output is one file)")
    if output.exists() and not overwrite:
        raise ScoreError(f"{output}: already exists; pass --overwrite to replace it")


def score_file(
    engine: Engine,
    tasks: list[TaskEntry],
    source: InputFile,
    output: Path,
    options: Options = Options(),
    resume: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> Summary:
    """Score every row of `source` for `tasks` into `output` (refused if it exists,
    unless `overwrite`). `on_chunk(index, rows)` is called after each chunk is safely
    written (a test's interruption); `on_rows(rows)` as rows are done: each scored
    batch, each chunk's skipped rows, and at the start a resumed run's finished rows
    (progress)."""
    check_run(tasks, source, output, overwrite)
    out_format = format_of(output)
    columns = answer_columns(tasks)
    output.parent.mkdir(parents=True, exist_ok=True)
    directory = work_dir(output)
    state = fingerprint(engine, tasks, source, output, options)
    done = _prepare(directory, state, resume)
    summary = Summary(resumed_chunks=done)
    for index in range(done):
        meta = json.loads(_meta(directory, index).read_text())
        summary.rows += meta["rows"]
        summary.skipped += [tuple(s) for s in meta["skipped"]]
    if on_chunk is not None and done:
        on_chunk(done - 1, summary.rows + len(summary.skipped))
    if on_rows is not None and done:
        on_rows(summary.rows + len(summary.skipped))
    for chunk in source.chunks(options.chunk_rows, options.skip_bad_rows, start_chunk=done):
        answers = score_texts(
            engine,
            tasks,
            chunk.texts_a,
            chunk.texts_b,
            options.batch_size,
            options.batch_tokens,
            on_batch=on_rows,
        )
        if on_rows is not None and chunk.skipped:
            on_rows(len(chunk.skipped))
        part = _part(directory, chunk.index, out_format)
        if len(chunk):
            staging = part.with_name(part.name + ".tmp")
            write_part(staging, out_format, source.columns, chunk, answers)
            staging.replace(part)
        for line, reason in chunk.skipped:
            log.warning("skipped bad row %s:%d: %s", source.display, line, reason)
        # The chunk is done once its record exists (written after its rows).
        record = {"rows": len(chunk), "skipped": chunk.skipped}
        atomic_write_text(_meta(directory, chunk.index), json.dumps(record))
        summary.rows += len(chunk)
        summary.skipped += chunk.skipped
        if on_chunk is not None:
            on_chunk(chunk.index, len(chunk) + len(chunk.skipped))
    summary.chunks = len(list(directory.glob("*.json"))) - 1
    if not summary.rows:
        raise ScoreError(f"{source.display}: no rows were scored: every row was bad and skipped")
    parts = [
        _part(directory, i, out_format)
        for i in range(summary.chunks)
        if _part(directory, i, out_format).is_file()
    ]
    header = [*(source.columns or ()), *columns]
    staging = output.with_name(output.name + ".tmp")
    try:
        assemble_parts(parts, out_format, header, staging)
        staging.replace(output)
    finally:
        staging.unlink(missing_ok=True)
    shutil.rmtree(directory)
    return summary
