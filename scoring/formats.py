"""Read an input file in chunks of rows, and write scored chunks back: CSV, TSV, JSONL
and Parquet.

Text files are read as training reads them (`training.data`, torch-free): decoded line
by line so that a bad byte or row is reported as `file:line: reason`, CSV/TSV with the
same strict dialect, texts checked by the same rule (a missing or empty text is a bad
row). Parquet is read and written with pyarrow, row group by row group; a bad row there
is reported by its 1-based row number. Only one chunk is ever held in memory.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scoring.core import TRUNCATED_COLUMN, ScoreError
from training.data.examples import DataError
from training.data.readers import BadRow, clean_text, csv_records, decoded_lines, json_objects

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
_DELIMITERS = {"csv": ",", "tsv": "\t"}


def format_of(path: Path) -> str:
    """The format a file's suffix names (.csv, .tsv, .jsonl, .parquet)."""
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ScoreError(
            f"{path}: cannot tell the format from the suffix {path.suffix or '(none)'!r}; "
            "use .csv, .tsv, .jsonl or .parquet"
        )
    return fmt


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ScoreError("Parquet needs pyarrow: pip install 'bert-mts[score]'") from None
    return pyarrow


@contextlib.contextmanager
def _parquet_errors(display: str, where: str = "") -> Iterator[None]:
    """pyarrow's errors while reading `display` as one DataError line: a truncated or
    garbage file fails at its footer (ArrowInvalid), a damaged page as it is read (an
    OSError with pyarrow's multi-line message), neither with a row to point at."""
    pa = _pyarrow()
    try:
        yield
    except (pa.ArrowException, OSError) as err:
        detail = " ".join(str(err).split())
        raise DataError(display, None, f"not a readable Parquet file{where}: {detail}") from None


def parquet_file(path: Path):
    """The pyarrow ParquetFile at `path`, its footer read: DataError if it cannot be."""
    with _parquet_errors(os.fspath(path)):
        return _pyarrow().parquet.ParquetFile(path)


@dataclass
class Chunk:
    """One chunk of the input: its good rows' records and texts, and skipped lines."""

    index: int
    records: object  # list[dict] (text formats) or a pyarrow RecordBatch (Parquet)
    texts_a: list[str]
    texts_b: list[str] | None
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    def __len__(self) -> int:
        return len(self.texts_a)


class InputFile:
    """An input file and the columns holding its texts."""

    def __init__(self, path: Path, text_a: str, text_b: str | None) -> None:
        self.path = path
        self.display = os.fspath(path)
        if not path.exists():
            raise DataError(self.display, None, "file does not exist")
        if path.is_dir():
            raise DataError(self.display, None, "is a directory, not a file")
        self.format = format_of(path)
        self.text_a = text_a
        self.text_b = text_b
        self.columns = self._columns()  # None for JSONL: each object has its own keys
        if self.format == "jsonl":
            self._check_not_empty()

    def _wanted(self) -> list[str]:
        return [c for c in (self.text_a, self.text_b) if c is not None]

    def _missing_column(self, names: list[str]) -> None:
        for name in self._wanted():
            if name not in names:
                shown = ", ".join(repr(n) for n in names if n) or "(none)"
                option = "--text-a-column" if name == self.text_a else "--text-b-column"
                raise DataError(
                    self.display,
                    None,
                    f"has no column {name!r}; available columns: {shown} (choose with {option})",
                )

    def _columns(self) -> list[str] | None:
        if self.format == "jsonl":
            return None
        if self.format == "parquet":
            parquet = self._parquet_file()
            if parquet.metadata.num_rows == 0:
                raise DataError(self.display, None, "no data rows")
            names = parquet.schema_arrow.names
        else:
            with contextlib.closing(self._delimited_records()) as records:
                first = next(records, None)
                if first is None:
                    raise DataError(self.display, None, "file is empty (expected a header row)")
                if next(records, None) is None:
                    raise DataError(self.display, None, "no data rows")
            names = [name.strip() for name in first[1]]
        self._missing_column(names)
        return names

    def _parquet_file(self):
        return parquet_file(self.path)

    def _check_not_empty(self) -> None:
        """A JSONL file without a non-blank line is refused before any work starts (CSV,
        TSV and Parquet are checked with their columns)."""
        with self.path.open("rb") as handle:
            if not any(line.strip() for line in handle):
                raise DataError(self.display, None, "no data rows")

    def approximate_rows(self) -> int:
        """Rows to expect, for the progress bar: Parquet's metadata, else lines."""
        if self.format == "parquet":
            return self._parquet_file().metadata.num_rows
        lines = 0
        with self.path.open("rb") as handle:
            while block := handle.read(1 << 20):
                lines += block.count(b"\n")
        return max(0, lines - (self.format != "jsonl"))

    # --- records --------------------------------------------------------------------

    def _delimited_records(self) -> Iterator[tuple[int, list[str]]]:
        """(start line, fields) of each record, header first: training's reader."""
        with self.path.open("rb") as handle:
            lines = decoded_lines(self.display, iter(handle))
            yield from csv_records(self.display, lines, _DELIMITERS[self.format])

    def _records(self) -> Iterator[tuple[int, dict[str, object] | BadRow]]:
        """(line, record or bad row) for every data row of a text file."""
        if self.format == "jsonl":
            with self.path.open("rb") as handle:
                yield from json_objects(decoded_lines(self.display, iter(handle)))
            return
        records = self._delimited_records()
        _, header = next(records)
        names = [name.strip() for name in header]
        for line, row in records:
            if len(row) != len(names):
                yield line, BadRow(f"row has {len(row)} fields but the header has {len(names)}")
                continue
            yield line, dict(zip(names, row, strict=True))

    def _texts(self, record: dict[str, object]) -> tuple[str, str | None]:
        text_a = clean_text(record.get(self.text_a), self.text_a)
        text_b = None if self.text_b is None else clean_text(record.get(self.text_b), self.text_b)
        return text_a, text_b

    def chunks(self, chunk_rows: int, skip_bad_rows: bool, start_chunk: int = 0) -> Iterator[Chunk]:
        """The input's chunks of `chunk_rows` rows (bad rows count), from `start_chunk`
        on; a bad row raises DataError unless `skip_bad_rows`."""
        if self.format == "parquet":
            yield from self._parquet_chunks(chunk_rows, skip_bad_rows, start_chunk)
            return
        index, taken, seen = 0, 0, 0
        chunk = self._new_chunk(0)
        for line, item in self._records():
            seen += 1
            if index >= start_chunk:
                try:
                    if isinstance(item, BadRow):
                        raise item
                    text_a, text_b = self._texts(item)
                except BadRow as bad:
                    if not skip_bad_rows:
                        raise DataError(self.display, line, bad.reason) from None
                    chunk.skipped.append((line, bad.reason))
                else:
                    chunk.records.append(item)
                    chunk.texts_a.append(text_a)
                    if chunk.texts_b is not None:
                        chunk.texts_b.append(text_b)
            taken += 1
            if taken == chunk_rows:
                if index >= start_chunk:
                    yield chunk
                index, taken = index + 1, 0
                chunk = self._new_chunk(index)
        if not seen:
            raise DataError(self.display, None, "no data rows")
        if taken and index >= start_chunk:
            yield chunk

    def _new_chunk(self, index: int) -> Chunk:
        return Chunk(index, [], [], [] if self.text_b is not None else None)

    def _parquet_chunks(
        self, chunk_rows: int, skip_bad_rows: bool, start_chunk: int
    ) -> Iterator[Chunk]:
        pa = _pyarrow()
        source = self._parquet_file()
        batches = source.iter_batches(batch_size=chunk_rows)
        for index in itertools.count():
            first_row = index * chunk_rows + 1
            with _parquet_errors(self.display, f" (from row {first_row} on)"):
                batch = next(batches, None)
            if batch is None:
                return
            if index < start_chunk:
                continue
            column_a = batch.column(self.text_a).to_pylist()
            column_b = batch.column(self.text_b).to_pylist() if self.text_b else None
            keep, chunk = [], self._new_chunk(index)
            for i, value in enumerate(column_a):
                try:
                    text_a = clean_text(value, self.text_a)
                    text_b = None if column_b is None else clean_text(column_b[i], self.text_b)
                except BadRow as bad:
                    if not skip_bad_rows:
                        raise DataError(self.display, first_row + i, bad.reason) from None
                    chunk.skipped.append((first_row + i, bad.reason))
                    continue
                keep.append(i)
                chunk.texts_a.append(text_a)
                if chunk.texts_b is not None:
                    chunk.texts_b.append(text_b)
            chunk.records = batch if len(keep) == len(batch) else batch.take(pa.array(keep))
            yield chunk


# --- writing ------------------------------------------------------------------------


def arrow_type(pa, column: str):
    """The Arrow type of an answer column (`<task>_<field>`, or `truncated`)."""
    types = {
        "label_name": pa.string(),  # before "label": the longer suffix first
        "label": pa.int64(),
        "probabilities": pa.list_(pa.float64()),
        "decision": pa.bool_(),
        "probability": pa.float64(),
        "score": pa.float64(),
    }
    if column == TRUNCATED_COLUMN:
        return pa.bool_()
    return next(t for name, t in types.items() if column.endswith("_" + name))


def _cell(value: object) -> str:
    """A value as a CSV/TSV field: text as it is, anything else as JSON (true, 0.25,
    [0.1, 0.9]); floats keep every digit (Python's shortest round-trip form)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _dict_rows(records: object) -> list[dict[str, object]]:
    return records.to_pylist() if hasattr(records, "to_pylist") else list(records)


def write_part(
    path: Path,
    fmt: str,
    input_columns: list[str] | None,
    chunk: Chunk,
    answers: dict[str, list[object]],
) -> None:
    """Write one scored chunk to `path` (rows only: CSV/TSV parts have no header)."""
    if fmt == "parquet":
        pa = _pyarrow()
        records = chunk.records
        if hasattr(records, "schema"):
            table = pa.Table.from_batches([records])
        elif input_columns is not None:  # CSV/TSV: every field is text
            table = pa.table(
                {c: pa.array([r[c] for r in records], pa.string()) for c in input_columns}
            )
        else:
            table = pa.Table.from_pylist(records)
        for name, values in answers.items():
            table = table.append_column(name, pa.array(values, arrow_type(pa, name)))
        pa.parquet.write_table(table, path)
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        if fmt == "jsonl":
            names = list(answers)
            for i, record in enumerate(_dict_rows(chunk.records)):
                row = {**record, **{n: answers[n][i] for n in names}}
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            return
        writer = csv.writer(handle, delimiter=_DELIMITERS[fmt], lineterminator="\n")
        assert input_columns is not None
        for i, record in enumerate(_dict_rows(chunk.records)):
            writer.writerow(
                [_cell(record.get(c)) for c in input_columns]
                + [_cell(values[i]) for values in answers.values()]
            )


def assemble(parts: list[Path], fmt: str, header: list[str], out: Path) -> None:
    """Join the parts, in order, into `out` (a header first for CSV/TSV; one row group
    per chunk for Parquet), so the file is the same whether or not a run was resumed."""
    if fmt == "parquet":
        pq = _pyarrow().parquet
        writer = None
        try:
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                elif table.schema != writer.schema:
                    try:
                        table = table.cast(writer.schema)
                    except Exception as err:  # pyarrow raises several types for a cast
                        raise ScoreError(
                            f"chunk {part.stem} has columns of other types than the first "
                            f"chunk's ({err}); write .jsonl instead"
                        ) from None
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # every row was skipped
            raise ScoreError("no rows were scored: every row was bad and skipped")
        return
    with out.open("wb") as handle:
        if fmt != "jsonl":
            line = io.StringIO()
            csv.writer(line, delimiter=_DELIMITERS[fmt], lineterminator="\n").writerow(header)
            handle.write(line.getvalue().encode("utf-8"))
        for part in parts:
            with part.open("rb") as source:
                while block := source.read(1 << 20):
                    handle.write(block)
