"""scoring.ray_read, the JSONL reader of Ray scoring, read without a cluster: the
lines it stops at or marks are the single-process reader's."""

from __future__ import annotations

import io

import pytest

from scoring.ray_read import BAD_ROW_COLUMN, jsonl_rows
from training.data.examples import DataError

pytest.importorskip("pyarrow")

LINES = [
    '{"id": 1, "text": "fine"}',
    '{"id": 2, "text": "a\\ud800b"}',  # an unpaired surrogate escape
    "",  # blank: not a row
    '{"id": 3, "text": ' + "[" * 100_000 + "]" * 100_000 + "}",  # nested too deeply
    '{"id": 4, "text": "also fine", "extra": true}',
]


def _rows(lines: list[str], skip: bool, per_block: int = 100) -> list[dict]:
    stream = io.BytesIO("".join(line + "\n" for line in lines).encode())
    return [
        row for table in jsonl_rows("c.jsonl", stream, skip, per_block) for row in table.to_pylist()
    ]


def test_lines_with_no_readable_object_stop_the_read_at_their_line() -> None:
    """Ray's own reader (pandas' ujson) scored "a\\ud800b" as "ab" without a word."""
    with pytest.raises(DataError) as err:
        _rows(LINES, skip=False)
    assert str(err.value) == "c.jsonl:2: not valid Unicode: \\ud800 is an unpaired surrogate escape"


def test_skipped_lines_are_rows_holding_only_their_reason() -> None:
    """...and it failed the whole file at the nested line, so none could be skipped."""
    rows = _rows(LINES, skip=True, per_block=2)
    assert [row.get("id") for row in rows] == [1, None, None, 4]
    assert rows[1][BAD_ROW_COLUMN].startswith("c.jsonl:2: not valid Unicode")
    assert rows[2][BAD_ROW_COLUMN].startswith("c.jsonl:4: JSON nested too deeply")
    assert rows[0][BAD_ROW_COLUMN] is None and rows[3]["extra"] is True  # every key kept


def test_values_arrow_cannot_hold_are_one_line() -> None:
    """A key that is a number in one row and text in another: pyarrow's ArrowInvalid in
    a read task was a traceback; now one line the driver can show."""
    with pytest.raises(DataError, match=r"^c\.jsonl: lines 1-2: values of one key differ"):
        _rows(['{"id": 1, "text": "a"}', '{"id": "two", "text": "b"}'], skip=False)
