"""Task-data readers: TSV/CSV/JSONL files -> validated :class:`Example` rows.

This module is deliberately torch-free (standard library only) so that data problems can be
found, tested and reported without the heavy training stack installed.

Design rules, and why:

* **Never guess.** A row with an empty text or an invalid label is an error, reported as
  ``<path>:<line>: <reason>`` so it can be opened in an editor. Training on a silently
  repaired row (e.g. the two Quora rows whose broken quoting leaves an empty label) would
  corrupt the metrics without anyone noticing. Skipping bad rows is possible, but only when
  asked for (``skip_bad_rows=True``), and every skipped line is recorded and logged.
* **Line numbers are physical lines**, 1-based, where the record *starts* (a quoted field may
  span several lines), so the number points at what a person sees in the file.
* **Deterministic splits.** :func:`split_train_val` depends only on its arguments, never on
  global random state, so a validation split is the same on every machine and run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from training.data.examples import Columns, DataError, Example
from training.data.examples import preview as _preview
from training.data.labels import LABEL_SEPARATOR, LabelParser

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("tsv", "csv", "jsonl")
_SUFFIX_FORMATS: dict[str, str] = {
    ".tsv": "tsv",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json-lines": "jsonl",
}
_DELIMITERS: dict[str, str] = {"tsv": "\t", "csv": ","}


@dataclass
class LoadResult:
    """What :func:`read_examples` loaded, plus the lines it skipped (``skip_bad_rows=True``).

    Skipped lines are kept, not just counted, so a training run can report exactly which rows
    of its input it did not use.
    """

    examples: list[Example]
    skipped_lines: list[int]

    @property
    def skipped(self) -> int:
        """Number of bad rows that were skipped."""
        return len(self.skipped_lines)


class BadRow(Exception):
    """Internal: a row-level problem; becomes a DataError or a skipped line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _resolve_format(path: Path, file_format: str | None) -> str:
    display = os.fspath(path)
    if file_format is not None:
        fmt = file_format.lower()
        if fmt not in FORMATS:
            raise DataError(
                display,
                None,
                f"unknown file_format {file_format!r}; expected one of "
                + ", ".join(repr(f) for f in FORMATS),
            )
        return fmt
    suffix = path.suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    raise DataError(
        display,
        None,
        f"cannot tell the format from the suffix {suffix or '(none)'!r}; pass "
        "file_format='tsv', 'csv' or 'jsonl'",
    )


def decoded_lines(path: str, raw_lines: Iterator[bytes]) -> Iterator[str]:
    """Decode a binary file line by line, splitting lines like ``open(newline="")`` would.

    Decoding per line (rather than through a text-mode file) is what lets an invalid UTF-8
    byte be reported with its exact line number; text mode decodes in large chunks ahead of
    the reader. Splitting on b"\\n" is safe because 0x0A never occurs inside a multi-byte UTF-8
    sequence; a lone "\\r" inside a chunk is split further so line numbers match what csv and
    editors count.
    """
    lineno = 0
    for raw in raw_lines:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(
                path,
                lineno + 1,
                f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of line)",
            ) from None
        if lineno == 0 and text.startswith("\ufeff"):
            text = text[1:]  # byte-order mark written by some spreadsheet exports
        # Fast path: only a chunk with a lone "\r" before its ending needs splitting.
        pieces = list(io.StringIO(text, newline="")) if "\r" in text.rstrip("\r\n") else [text]
        for piece in pieces:
            lineno += 1
            yield piece


def clean_text(value: object, column: str) -> str:
    if value is None:
        raise BadRow(f"missing value in column {column!r}")
    if not isinstance(value, str):
        raise BadRow(f"text in column {column!r} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise BadRow(f"empty text in column {column!r}")
    return text


def _clean_label(value: object, column: str, parse_label: LabelParser) -> float:
    if value is None:
        raise BadRow(f"missing value in column {column!r}")
    if isinstance(value, bool):  # JSON true/false
        raw = "true" if value else "false"
    elif isinstance(value, (str, int, float)):
        raw = str(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        raw = LABEL_SEPARATOR.join(value)  # JSONL's list of a multilabel row's names
    else:
        raise BadRow(
            f"label in column {column!r} must be a number or string, got {type(value).__name__}"
        )
    if not raw.strip() and not getattr(parse_label, "allows_empty", False):
        raise BadRow(f"empty label in column {column!r}")
    try:
        return float(parse_label(raw))
    except ValueError as err:
        raise BadRow(f"invalid label {_preview(raw)} in column {column!r}: {err}") from None


def _make_example(
    get: Callable[[str], object], columns: Columns, parse_label: LabelParser, line: int
) -> Example:
    text_a = clean_text(get(columns.text_a), columns.text_a)
    text_b = None if columns.text_b is None else clean_text(get(columns.text_b), columns.text_b)
    label = _clean_label(get(columns.label), columns.label, parse_label)
    return Example(text_a=text_a, text_b=text_b, label=label, line=line)


def _required(columns: Columns) -> list[str]:
    return [c for c in (columns.text_a, columns.text_b, columns.label) if c is not None]


def csv_records(path: str, lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """``(start line, fields)`` for each non-blank record of a TSV/CSV file, the header
    first (shared with the offline scorer, so both read CSV/TSV alike).

    csv's strict dialect (``strict=True``) turns malformed quoting (e.g. ``'"a"b'``) into
    an error instead of silently gluing text together; an unterminated quote is reported
    at the record that opened it. That error is a :class:`DataError`, fatal even with
    ``skip_bad_rows``: after broken quoting the record boundaries are unknown, and
    resynchronising could turn pieces of text into "rows".
    """
    reader = csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(path, start, f"malformed CSV/TSV record: {err}") from None
        if row:  # csv yields [] for blank lines
            yield start, row


def _iter_delimited(
    path: str, lines: Iterator[str], delimiter: str, columns: Columns, parse_label: LabelParser
) -> Iterator[tuple[int, Example | BadRow]]:
    """Yield ``(start line, example or bad row)`` for each record of a TSV/CSV file."""
    rows = csv_records(path, lines, delimiter)
    first = next(rows, None)
    if first is None:
        raise DataError(path, None, "file is empty (expected a header row)")
    _, header = first
    names = [name.strip() for name in header]
    index: dict[str, int] = {}
    for name in _required(columns):
        count = names.count(name)
        if count == 0:
            available = ", ".join(repr(n) for n in names if n) or "(none)"
            raise DataError(
                path, None, f"header has no column {name!r}; available columns: {available}"
            )
        if count > 1:
            raise DataError(path, None, f"column {name!r} appears {count} times in the header")
        index[name] = names.index(name)

    seen_row = False
    for start, row in rows:
        seen_row = True
        if len(row) != len(header):
            # A wrong field count almost always means broken quoting or a stray delimiter;
            # the columns may be shifted, so no field of this row can be trusted.
            yield start, BadRow(f"row has {len(row)} fields but the header has {len(header)}")
            continue
        try:
            yield start, _make_example(lambda c, r=row: r[index[c]], columns, parse_label, start)
        except BadRow as bad:
            yield start, bad
    if not seen_row:
        raise DataError(path, None, "no data rows after the header")


def json_objects(lines: Iterable[str]) -> Iterator[tuple[int, dict | BadRow]]:
    """``(line, object or bad row)`` for each non-blank line of a JSONL file: the
    object a line holds, or why it holds none (shared with the offline scorer).

    Two lines that ``json.loads`` accepts or trips on are bad rows too, not crashes:
    nesting deeper than Python's recursion limit (RecursionError), and a string with
    an unpaired UTF-16 surrogate escape such as ``"\\ud800"`` (valid JSON syntax, but
    no Unicode text: the tokenizer rejects it with a TypeError, and no UTF-8 file can
    hold it)."""
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            yield lineno, BadRow(f"not valid JSON: {err.msg} (column {err.colno})")
            continue
        except RecursionError:
            yield lineno, BadRow("JSON nested too deeply to read (beyond Python's recursion limit)")
            continue
        if not isinstance(obj, dict):
            yield lineno, BadRow(f"expected a JSON object, got {type(obj).__name__}")
            continue
        surrogate = _lone_surrogate(text, obj)
        if surrogate is not None:
            yield lineno, BadRow(f"not valid Unicode: {surrogate} is an unpaired surrogate escape")
            continue
        yield lineno, obj


def _lone_surrogate(text: str, obj: dict) -> str | None:
    """The first unpaired surrogate in the decoded line, as its escape, or None. Only a
    ``\\u`` escape can produce one (the line itself was decoded from UTF-8), so lines
    without an escape are not re-encoded."""
    if "\\u" not in text:
        return None
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        return f"\\u{ord(err.object[err.start]):04x}"
    return None


def _iter_jsonl(
    path: str, lines: Iterator[str], columns: Columns, parse_label: LabelParser
) -> Iterator[tuple[int, Example | BadRow]]:
    """Yield ``(line, example or bad row)`` for each non-blank line of a JSONL file."""
    seen_row = False
    for lineno, obj in json_objects(lines):
        seen_row = True
        if isinstance(obj, BadRow):
            yield lineno, obj
            continue
        missing = [c for c in _required(columns) if c not in obj]
        if missing:
            yield lineno, BadRow("missing field " + ", ".join(repr(c) for c in missing))
            continue
        try:
            yield lineno, _make_example(obj.get, columns, parse_label, lineno)
        except BadRow as bad:
            yield lineno, bad
    if not seen_row:
        raise DataError(path, None, "no data rows (file is empty or blank)")


def read_examples(
    path: str | os.PathLike[str],
    columns: Columns,
    parse_label: LabelParser,
    *,
    file_format: str | None = None,
    skip_bad_rows: bool = False,
    limit: int | None = None,
) -> LoadResult:
    """Read and validate one task file.

    ``file_format`` is ``"tsv"``, ``"csv"`` or ``"jsonl"``; ``None`` infers it from the suffix
    (``.tsv``, ``.csv``, ``.jsonl``, ``.json-lines``), and anything else asks for it rather
    than guessing. TSV/CSV need a header row; columns are found by name and other columns
    (such as an unnamed index column) are ignored. Texts are stripped of surrounding
    whitespace.

    A bad row (empty or missing text, empty or invalid label, wrong number of fields, a JSONL
    line that is not an object) raises :class:`DataError` with its line, unless
    ``skip_bad_rows`` is true: then it is skipped, logged, and recorded in
    :attr:`LoadResult.skipped_lines`. File-level problems (missing file, missing column, no
    rows, undecodable bytes, broken quoting) always raise. If every row was bad and skipped,
    that also raises, since an empty training set is never what the caller wanted.

    ``limit`` stops after that many *valid* examples, for quick runs on the first N rows.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an integer >= 1 or None, got {limit!r}")
    display = os.fspath(path)
    file_path = Path(path)
    if not file_path.exists():
        raise DataError(display, None, "file does not exist")
    if file_path.is_dir():
        raise DataError(display, None, "is a directory, not a file")
    fmt = _resolve_format(file_path, file_format)

    examples: list[Example] = []
    skipped_lines: list[int] = []
    first_problem: str | None = None
    try:
        handle = file_path.open("rb")
    except OSError as err:
        raise DataError(display, None, f"cannot open file: {err.strerror or err}") from None
    with handle:
        lines = decoded_lines(display, iter(handle))
        if fmt == "jsonl":
            items = _iter_jsonl(display, lines, columns, parse_label)
        else:
            items = _iter_delimited(display, lines, _DELIMITERS[fmt], columns, parse_label)
        for line, item in items:
            if isinstance(item, BadRow):
                if not skip_bad_rows:
                    raise DataError(display, line, item.reason)
                logger.warning("skipping bad row %s:%d: %s", display, line, item.reason)
                skipped_lines.append(line)
                if first_problem is None:
                    first_problem = f"line {line}: {item.reason}"
                continue
            examples.append(item)
            if limit is not None and len(examples) >= limit:
                break

    if not examples:
        raise DataError(
            display,
            None,
            f"no valid rows: all {len(skipped_lines)} rows were bad and skipped "
            f"(first at {first_problem})",
        )
    return LoadResult(examples=examples, skipped_lines=skipped_lines)
