"""`bert-mts-score` as a user meets it: input it cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.engine import Engine
from service.settings import Settings
from tests.support.commands import assert_one_line_error, run
from tests.support.samples import sentiment_rows
from tests.support.tiny_store import build_tiny_store

GOOD = [text for text, _ in sentiment_rows(6)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_tiny_store(tmp_path_factory.mktemp("command"))


@pytest.fixture(scope="module")
def engine(store: Path) -> Engine:
    return Engine.load(store, Settings(model_dir=store, provider="cpu").engine_config())


def _score(store: Path, source: Path, out: Path, *extra: str):
    """The command, in a child process as a user runs it."""
    return run(
        "-m",
        "scoring",
        "--store",
        str(store),
        "--task",
        "sentiment",
        "--provider",
        "cpu",
        "--input",
        str(source),
        "--output",
        str(out),
        *extra,
    )


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --- rows and files the readers cannot take -----------------------------------------------

UNREADABLE_LINES = {
    # Valid JSON syntax, but no Unicode: the tokenizer raised a TypeError.
    "surrogate": ('{"text": "a\\ud800b"}', "not valid Unicode: \\ud800 is an unpaired"),
    # json.loads raised a RecursionError.
    "nesting": ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_LINES))
def test_a_row_the_json_reader_cannot_take_is_a_bad_row(store, tmp_path, case) -> None:
    """Line 3 holds an unpaired surrogate escape, or nests 100,000 levels: it stops the
    run as `file:3: reason` (exit 2, one line; it was a 30-line traceback, exit 1), or
    with --skip-bad-rows is skipped and counted while the other rows are scored (the
    run was aborted)."""
    line, reason = UNREADABLE_LINES[case]
    rows = [json.dumps({"text": text}) for text in GOOD]
    source = _jsonl(tmp_path / "in.jsonl", [*rows[:2], line, *rows[2:]])
    out = tmp_path / "out.jsonl"

    assert_one_line_error(_score(store, source, out), f"{source}:3: ", reason)
    assert not out.exists()

    result = _score(store, source, out, "--skip-bad-rows")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"skipped bad row {source}:3: " in result.stderr
    assert f"scored {len(GOOD)} rows" in result.stderr and "skipped 1 bad rows" in result.stderr
    written = [json.loads(text) for text in out.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in written] == GOOD


def _parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(500)]}), sink)
    return sink.getvalue().to_pybytes()


def _damaged_pages(data: bytes) -> bytes:
    """The footer intact, the pages overwritten: pyarrow fails as it reads them."""
    return data[:4] + b"\xab" * (len(data) // 2 - 4) + data[len(data) // 2 :]


@pytest.mark.parametrize(
    ("case", "damage"),
    [
        ("garbage", lambda data: b"not parquet at all " * 20),
        ("truncated", lambda data: data[: len(data) // 2]),
        ("damaged pages", _damaged_pages),
    ],
)
def test_an_unreadable_parquet_file_is_one_line(store, tmp_path, case, damage) -> None:
    """A garbage or truncated file (ArrowInvalid from its footer) and one whose pages
    are damaged (pyarrow's OSError while reading): one line naming the file, exit 2,
    with or without --skip-bad-rows (it was a traceback, exit 1); nothing written."""
    source = tmp_path / "in.parquet"
    source.write_bytes(damage(_parquet_bytes()))
    out = tmp_path / "out.jsonl"
    for extra in ((), ("--skip-bad-rows",)):
        result = _score(store, source, out, *extra)
        assert_one_line_error(result, f"{source}: not a readable Parquet file")
        assert not out.exists()
