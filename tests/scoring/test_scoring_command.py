"""`bert-mts-score` as a user meets it: input it cannot read, an output that exists,
refusals before the model is loaded, and progress that moves by rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring import cli
from scoring.core import resolve_tasks
from scoring.formats import InputFile
from scoring.local import Options, score_file, work_dir
from service.engine import Engine
from service.settings import Settings
from tests.support.commands import assert_one_line_error, run
from tests.support.samples import sentiment_rows

GOOD = [text for text, _ in sentiment_rows(6)]


@pytest.fixture(scope="module")
def store(tiny_store: Path) -> Path:
    """The session's tiny fp32 store (tests/conftest.py), built once for every module."""
    return tiny_store


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


# --- an output that exists ----------------------------------------------------------------


def test_an_existing_output_is_kept_unless_overwrite(store, tmp_path) -> None:
    """A second run into the same file is refused in one line naming --overwrite (it
    replaced the file without a word); with --overwrite it is replaced."""
    source = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in GOOD])
    out = tmp_path / "out.jsonl"
    out.write_text("someone's results\n")

    assert_one_line_error(_score(store, source, out), f"{out}: already exists", "--overwrite")
    assert out.read_text() == "someone's results\n"

    result = _score(store, source, out, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == len(GOOD)


class Stop(Exception):
    pass


def test_resume_needs_no_overwrite_and_replaces_nothing(engine, tmp_path) -> None:
    """A stopped run has written no output yet, so --resume continues it without
    --overwrite; an output that exists stays refused under --resume too."""
    source = InputFile(
        _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in GOOD]), "text", None
    )
    tasks = resolve_tasks(engine.manifest, ["sentiment"], False)
    out = tmp_path / "out.jsonl"

    def stop(index: int, rows: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        score_file(engine, tasks, source, out, Options(chunk_rows=2), on_chunk=stop)
    summary = score_file(engine, tasks, source, out, Options(chunk_rows=2), resume=True)
    assert summary.resumed_chunks == 1 and summary.rows == len(GOOD)

    with pytest.raises(Stop):
        score_file(engine, tasks, source, out, Options(chunk_rows=2), on_chunk=stop, overwrite=True)
    assert work_dir(out).is_dir()
    with pytest.raises(cli.ScoreError, match="--overwrite"):
        score_file(engine, tasks, source, out, Options(chunk_rows=2), resume=True)
    summary = score_file(
        engine, tasks, source, out, Options(chunk_rows=2), resume=True, overwrite=True
    )
    assert summary.resumed_chunks == 1 and not work_dir(out).exists()


# --- refusals before the model ------------------------------------------------------------


def _no_model(*_args, **_kwargs):
    raise AssertionError("the model was loaded before a refusal that needs none")


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("unknown task", ["unknown task 'nope'; served tasks:"]),
        ("pair task without a pair", ["task paraphrase needs --text-b-column"]),
        ("empty csv", ["file is empty"]),
        ("header only", ["no data rows"]),
        ("blank jsonl", ["no data rows"]),
        ("missing column", ["has no column 'sentence'", "--text-a-column"]),
        ("existing output", ["already exists", "--overwrite"]),
        ("jsonl to csv", ["JSONL objects have no fixed columns"]),
    ],
)
def test_refusals_that_need_no_model_come_before_it(
    store, tmp_path, monkeypatch, capsys, case, fragments
) -> None:
    """Each refusal is one line and exit 2 with the graph never loaded (they came after
    loading it: 10 s with the default model)."""
    monkeypatch.setattr(cli.Engine, "load_store", _no_model)
    monkeypatch.setattr(cli.Engine, "load", _no_model)
    good_csv = tmp_path / "in.csv"
    good_csv.write_text("text\n" + "".join(t + "\n" for t in GOOD))
    source, out, extra = good_csv, tmp_path / "out.csv", []
    if case == "unknown task":
        extra = ["--task", "nope"]
    elif case == "pair task without a pair":
        extra = ["--task", "paraphrase"]
    elif case == "empty csv":
        source.write_text("")
    elif case == "header only":
        source.write_text("text\n")
    elif case == "blank jsonl":
        source = _jsonl(tmp_path / "in.jsonl", ["", "  "])
    elif case == "missing column":
        extra = ["--text-a-column", "sentence"]
    elif case == "existing output":
        out.write_text("kept\n")
    elif case == "jsonl to csv":
        source = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in GOOD])
    argv = ["--store", str(store), "--input", str(source), "--output", str(out), *extra]
    capsys.readouterr()
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bert-mts-score: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0]


# --- progress -----------------------------------------------------------------------------


def test_progress_moves_with_each_scored_batch(engine, tmp_path) -> None:
    """Within one chunk (the default 8192 rows), progress comes per batch of rows, and
    skipped rows count too: before, it moved once per chunk (0% for minutes)."""
    texts = [*GOOD, "", *GOOD]  # line 8 is empty: skipped
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    tasks = resolve_tasks(engine.manifest, ["sentiment"], False)
    steps: list[int] = []
    options = Options(batch_size=4, skip_bad_rows=True)
    summary = score_file(
        engine,
        tasks,
        InputFile(source, "text", None),
        tmp_path / "o.jsonl",
        options,
        on_rows=steps.append,
    )
    assert summary.chunks == 1 and summary.rows == 2 * len(GOOD)
    assert sorted(steps) == [1, 4, 4, 4]  # three batches of at most 4 rows, one skipped
    assert sum(steps) == len(texts)


def test_the_progress_bar_counts_rows_with_a_rate(store, tmp_path) -> None:
    source = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in GOOD])
    result = _score(store, source, tmp_path / "o.jsonl", "--progress", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    final = f"{len(GOOD)}/{len(GOOD)} "
    assert re.search(re.escape(final) + r"\[[^\]]*rows/s\]", result.stderr), result.stderr


# --- what the scorer opens to the network --------------------------------------------------

LISTENING_PROBE = """
import json, os, sys
from scoring import cli
from tests.support.sockets import listening

seen = []
score_file = cli.score_file

def watched(*args, on_rows=None, **kwargs):
    def rows(n):
        seen.extend(listening(os.getpid()))  # while the graph runs
        on_rows(n)
    return score_file(*args, on_rows=rows, **kwargs)

cli.score_file = watched
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "listening": seen, "ray": "ray" in sys.modules}))
"""


@pytest.mark.skipif(not Path("/proc/self/net/tcp").is_file(), reason="reads Linux's /proc")
def test_scoring_on_one_machine_listens_on_no_port(store, tmp_path) -> None:
    """The single-machine scorer (the README's local example) opens no listening socket
    and never imports Ray. A local Ray is not offered instead: Ray 2.60's `ray.init()`
    binds its GCS, raylet and worker gRPC servers on every interface even with
    `_node_ip_address="127.0.0.1"` (seen with `ss -ltnp`), so Ray is for a cluster set up
    as docs/scoring.md says."""
    source = _jsonl(tmp_path / "in.jsonl", [json.dumps({"text": t}) for t in GOOD])
    args = ["--store", str(store), "--task", "sentiment", "--provider", "cpu"]
    args += ["--input", str(source), "--output", str(tmp_path / "o.jsonl"), "--batch-size", "2"]
    result = run("-c", LISTENING_PROBE, *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "listening": [], "ray": False}
