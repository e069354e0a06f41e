"""Tests for training.data: readers, label parsers, errors and the seeded split.

Every test writes its own tiny handmade file into tmp_path; only the last group reads the
real shared files, and only if they exist next to the repository.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

from training.data.examples import Columns, DataError, Example
from training.data.labels import binary_label, class_label, score_label
from training.data.presets import PRESETS
from training.data.readers import LoadResult, csv_records, read_examples
from training.data.split import split_train_val

PAIR = Columns("sentence1", "sentence2", "label")
SINGLE = Columns("sentence", None, "label")
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# A TSV in the layout of the shared files: unnamed leading index column, an id column,
# standard quoting. Record 2 spans lines 3-4 (quoted newline), so record 3 starts on line 5.
TSV_OK = (
    "\tid\tsentence1\tsentence2\tlabel\n"  # line 1
    '0\ta1\t"She said ""hi"" twice"\t  A dog runs.  \t1\n'  # line 2
    '1\ta2\t"first line\nsecond line"\t"with\ttab"\t0.0\n'  # lines 3-4
    "2\ta3\tCats sleep.\tA cat naps.\t1.0\n"  # line 5
)


# --- TSV / CSV / JSONL reading ---------------------------------------------------------------


def test_tsv_index_column_quotes_tabs_and_newlines(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.tsv", TSV_OK)
    result = read_examples(path, PAIR, binary_label())
    assert result.examples == [
        Example('She said "hi" twice', "A dog runs.", 1.0, 2),
        Example("first line\nsecond line", "with\ttab", 0.0, 3),
        Example("Cats sleep.", "A cat naps.", 1.0, 5),
    ]
    assert result.skipped_lines == []
    assert result.skipped == 0


def test_single_sentence_task_strips_leading_space(tmp_path: Path) -> None:
    path = write(tmp_path, "sent.tsv", "\tid\tsentence\tlabel\n0\tx\t A fine film .\t4\n")
    (ex,) = read_examples(path, SINGLE, class_label(5)).examples
    assert ex == Example("A fine film .", None, 4.0, 2)


def test_csv(tmp_path: Path) -> None:
    text = 'label,sentence,extra\n2,"Hello, world",x\n0,"Say ""no""",y\r\n'
    path = write(tmp_path, "data.csv", text)
    result = read_examples(path, SINGLE, class_label(3))
    assert [(e.text_a, e.label, e.line) for e in result.examples] == [
        ("Hello, world", 2.0, 2),
        ('Say "no"', 0.0, 3),
    ]


def test_jsonl_numbers_strings_booleans_and_blank_lines(tmp_path: Path) -> None:
    rows = [
        {"sentence1": "A man eats.", "sentence2": "Someone eats.", "label": 1},
        {"sentence1": " Rain. ", "sentence2": "Sun.", "label": "0.0"},
        {"sentence1": "Yes.", "sentence2": "Sure.", "label": True},
    ]
    text = json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n" + json.dumps(rows[2]) + "\n"
    path = write(tmp_path, "pairs.jsonl", text)
    result = read_examples(path, PAIR, binary_label())
    assert [(e.text_a, e.label, e.line) for e in result.examples] == [
        ("A man eats.", 1.0, 1),
        ("Rain.", 0.0, 3),
        ("Yes.", 1.0, 4),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", "expected a JSON object"),
        ("{not json", "not valid JSON"),
        ('{"sentence": "Hi."}', "missing field 'label'"),
        ('{"sentence": 7, "label": 1}', "must be a string"),
        ('{"sentence": "Hi.", "label": [1]}', "must be a number or string"),
    ],
)
def test_jsonl_bad_lines(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path, "x.jsonl", '{"sentence": "Ok.", "label": 0}\n' + line + "\n")
    with pytest.raises(DataError) as info:
        read_examples(path, SINGLE, binary_label())
    assert info.value.line == 2
    assert reason in str(info.value)


def test_format_from_suffix_and_explicit(tmp_path: Path) -> None:
    path = write(tmp_path, "data.txt", "sentence\tlabel\nHi.\t1\n")
    with pytest.raises(DataError, match="file_format"):
        read_examples(path, SINGLE, binary_label())
    result = read_examples(path, SINGLE, binary_label(), file_format="tsv")
    assert result.examples == [Example("Hi.", None, 1.0, 2)]
    with pytest.raises(DataError, match="unknown file_format"):
        read_examples(path, SINGLE, binary_label(), file_format="xml")


# --- label parsers ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [("3", 3.0), ("3.0", 3.0), (" 3 ", 3.0), ("0", 0.0)])
def test_class_label_accepts(raw: str, value: float) -> None:
    assert class_label(5)(raw) == value


@pytest.mark.parametrize("raw", ["", "  ", "5", "-1", "2.5", "abc", "nan", "inf", "1_0"])
def test_class_label_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        class_label(5)(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [("0", 0.0), ("1", 1.0), ("0.0", 0.0), ("1.0", 1.0), ("true", 1.0), ("FALSE", 0.0)],
)
def test_binary_label_accepts(raw: str, value: float) -> None:
    assert binary_label()(raw) == value


@pytest.mark.parametrize("raw", ["", "2", "0.5", "yes", "-1", "nan"])
def test_binary_label_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        binary_label()(raw)


@pytest.mark.parametrize(("raw", "value"), [("0", 0.0), ("2.75", 2.75), (" 5.0 ", 5.0)])
def test_score_label_accepts(raw: str, value: float) -> None:
    assert score_label(0.0, 5.0)(raw) == value


@pytest.mark.parametrize("raw", ["", "nan", "NaN", "inf", "-inf", "5.01", "-0.1", "x"])
def test_score_label_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        score_label(0.0, 5.0)(raw)


def test_parser_arguments_validated_and_parsers_picklable() -> None:
    with pytest.raises(ValueError):
        class_label(1)
    with pytest.raises(ValueError):
        score_label(5.0, 0.0)
    parser = pickle.loads(pickle.dumps(class_label(5)))
    assert parser("4") == 4.0
    with pytest.raises(ValueError):
        parser("5")


# --- bad rows and file-level errors ----------------------------------------------------------

BAD_AFTER_MULTILINE = (
    "\tid\tsentence1\tsentence2\tlabel\n"  # line 1
    '0\ta\t"spans\ntwo lines"\tOk.\t1\n'  # lines 2-3
    "1\tb\tFine.\tAlso fine.\t\n"  # line 4: empty label
    "2\tc\tGood.\t   \t0\n"  # line 5: empty text
    "3\td\tNice.\tSure.\t7\n"  # line 6: invalid label
    "4\te\tLast.\tOne.\t0\n"  # line 7
)


def test_bad_row_error_names_file_and_start_line(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.tsv", BAD_AFTER_MULTILINE)
    with pytest.raises(DataError) as info:
        read_examples(path, PAIR, binary_label())
    err = info.value
    assert err.line == 4
    assert err.path == str(path)
    assert str(err) == f"{path}:4: empty label in column 'label'"
    assert "\n" not in str(err)
    assert isinstance(err, ValueError)


def test_skip_bad_rows_counts_and_records_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.tsv", BAD_AFTER_MULTILINE)
    result = read_examples(path, PAIR, binary_label(), skip_bad_rows=True)
    assert isinstance(result, LoadResult)
    assert result.skipped_lines == [4, 5, 6]
    assert result.skipped == 3
    assert [e.line for e in result.examples] == [2, 7]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("1\tb\tFine.\tAlso fine.\t\n", "empty label in column 'label'"),
        ("1\tb\t \tAlso fine.\t1\n", "empty text in column 'sentence1'"),
        ("1\tb\tFine.\tAlso fine.\t0.5\n", "invalid label '0.5' in column 'label'"),
        ("1\tb\tFine.\t1\n", "row has 4 fields but the header has 5"),
    ],
)
def test_bad_row_reasons(tmp_path: Path, row: str, reason: str) -> None:
    path = write(tmp_path, "pairs.tsv", "\tid\tsentence1\tsentence2\tlabel\n" + row)
    with pytest.raises(DataError) as info:
        read_examples(path, PAIR, binary_label())
    assert info.value.line == 2
    assert info.value.reason.startswith(reason)


def test_broken_quoting_is_fatal_and_reported_where_record_starts(tmp_path: Path) -> None:
    text = 'sentence\tlabel\nOk.\t1\n"never closed\t1\nMore.\t0\n'
    path = write(tmp_path, "q.tsv", text)
    for skip in (False, True):
        with pytest.raises(DataError) as info:
            read_examples(path, SINGLE, binary_label(), skip_bad_rows=skip)
        assert info.value.line == 3


def test_csv_records_start_lines_blank_lines_and_bad_quoting() -> None:
    """The record reader training and the offline scorer share: each record with the
    line it starts on (a quoted field may span lines), blank lines dropped, and broken
    quoting a DataError at the record that opened it."""
    lines = ["a,b\n", "\n", 'x,"two\n', 'lines"\n', "y,z\n"]
    assert list(csv_records("f.csv", lines, ",")) == [
        (1, ["a", "b"]),
        (3, ["x", "two\nlines"]),
        (5, ["y", "z"]),
    ]
    with pytest.raises(DataError) as info:
        list(csv_records("f.tsv", ["a\tb\n", 'ok\t"x"y\n'], "\t"))
    assert info.value.line == 2
    assert str(info.value).startswith("f.tsv:2: malformed CSV/TSV record: ")


def test_all_rows_skipped_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "x.tsv", "sentence\tlabel\nA.\t\nB.\t\n")
    with pytest.raises(DataError, match="no valid rows"):
        read_examples(path, SINGLE, binary_label(), skip_bad_rows=True)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.tsv"
    with pytest.raises(DataError) as info:
        read_examples(path, SINGLE, binary_label())
    assert info.value.line is None
    assert str(info.value) == f"{path}: file does not exist"


def test_directory_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "dir.tsv"
    folder.mkdir()
    with pytest.raises(DataError, match="directory"):
        read_examples(folder, SINGLE, binary_label())


def test_missing_column_names_it_and_lists_available(tmp_path: Path) -> None:
    path = write(tmp_path, "x.tsv", "\tid\tsentence\tscore\n0\ta\tHi.\t1\n")
    with pytest.raises(DataError) as info:
        read_examples(path, SINGLE, binary_label())
    message = str(info.value)
    assert info.value.line is None
    assert "'label'" in message
    assert "'id'" in message and "'sentence'" in message and "'score'" in message


@pytest.mark.parametrize(
    ("name", "text"),
    [("empty.tsv", ""), ("header.tsv", "sentence\tlabel\n"), ("blank.jsonl", "\n\n")],
)
def test_no_rows(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(DataError) as info:
        read_examples(write(tmp_path, name, text), SINGLE, binary_label())
    assert info.value.line is None


def test_invalid_utf8_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"sentence\tlabel\nOk.\t1\ncaf\xe9\t0\n")
    with pytest.raises(DataError) as info:
        read_examples(path, SINGLE, binary_label())
    assert info.value.line == 3
    assert "UTF-8" in str(info.value)


def test_data_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(DataError("a.tsv", 3, "bad")))
    assert (err.path, err.line, err.reason, str(err)) == ("a.tsv", 3, "bad", "a.tsv:3: bad")


# --- limit -----------------------------------------------------------------------------------


def test_limit_counts_valid_examples_only(tmp_path: Path) -> None:
    path = write(tmp_path, "pairs.tsv", BAD_AFTER_MULTILINE)
    result = read_examples(path, PAIR, binary_label(), skip_bad_rows=True, limit=2)
    assert [e.line for e in result.examples] == [2, 7]
    result = read_examples(path, PAIR, binary_label(), limit=1)  # stops before the bad row
    assert [e.line for e in result.examples] == [2]
    assert result.skipped_lines == []


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_must_be_positive(tmp_path: Path, limit: int) -> None:
    path = write(tmp_path, "x.tsv", "sentence\tlabel\nHi.\t1\n")
    with pytest.raises(ValueError, match="limit"):
        read_examples(path, SINGLE, binary_label(), limit=limit)


# --- split_train_val -------------------------------------------------------------------------


def make_examples(n: int) -> list[Example]:
    return [Example(f"sentence {i}", None, float(i % 2), i + 2) for i in range(n)]


def test_split_sizes_disjoint_and_complete() -> None:
    examples = make_examples(101)
    train, val = split_train_val(examples, 0.1, seed=7)
    assert len(val) == 10  # round(10.1)
    assert len(train) == 91
    assert not set(train) & set(val)
    assert sorted(train + val, key=lambda e: e.line) == examples
    assert train == sorted(train, key=lambda e: e.line)  # original order is kept


def test_split_is_deterministic_and_ignores_global_random_state() -> None:
    examples = make_examples(50)
    random.seed(1)
    first = split_train_val(examples, 0.2, seed=3)
    random.seed(2)
    random.random()
    assert split_train_val(examples, 0.2, seed=3) == first
    assert split_train_val(examples, 0.2, seed=4)[1] != first[1]


def test_split_small_inputs_keep_both_parts_nonempty() -> None:
    train, val = split_train_val(make_examples(2), 0.9, seed=0)
    assert len(train) == 1 and len(val) == 1
    train, val = split_train_val(make_examples(5), 0.01, seed=0)
    assert len(val) == 1 and len(train) == 4


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.5), (0, 0.5), (10, 0.0), (10, 1.0), (10, -1)])
def test_split_rejects_bad_arguments(n: int, fraction: float) -> None:
    with pytest.raises(ValueError):
        split_train_val(make_examples(n), fraction, seed=0)


# --- the real shared files (skipped when absent) ---------------------------------------------


def shared(name: str) -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA / PRESETS[name].data.filename


def test_shared_quora_has_two_bad_rows() -> None:
    path = shared("paraphrase")
    columns = PRESETS["paraphrase"].data.columns
    with pytest.raises(DataError) as info:
        read_examples(path, columns, binary_label())
    assert info.value.line is not None
    assert f"quora-train.tsv:{info.value.line}:" in str(info.value)
    result = read_examples(path, columns, binary_label(), skip_bad_rows=True)
    assert result.skipped == 2
    assert info.value.line in result.skipped_lines
    assert len(result.examples) == 16_235
    assert {e.label for e in result.examples} == {0.0, 1.0}


def test_shared_sst_and_sts_load_fully() -> None:
    sst = read_examples(shared("sentiment"), PRESETS["sentiment"].data.columns, class_label(5))
    assert len(sst.examples) == 8_544 and sst.skipped == 0
    assert {e.label for e in sst.examples} == {0.0, 1.0, 2.0, 3.0, 4.0}
    assert all(e.text_b is None and e.text_a == e.text_a.strip() for e in sst.examples)
    sts = read_examples(shared("similarity"), PRESETS["similarity"].data.columns, score_label(0, 5))
    assert len(sts.examples) == 6_040 and sts.skipped == 0
    assert all(0.0 <= e.label <= 5.0 and e.text_b for e in sts.examples)
