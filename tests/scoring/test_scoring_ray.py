"""The Ray Data path of `bert-mts-score` on a local two-CPU Ray cluster this test
starts: the same answers, in the same order, as the single-process run; bad rows
stop the run with their file and line, or are skipped and counted."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'bert-mts[ray]')")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from scoring.cli import main  # noqa: E402
from scoring.core import resolve_tasks  # noqa: E402
from scoring.formats import InputFile  # noqa: E402
from scoring.local import Options, score_file  # noqa: E402
from scoring.ray_job import RayJob, run_ray  # noqa: E402
from service.engine import Engine, EngineConfig  # noqa: E402
from tests.support.samples import pair_rows  # noqa: E402

ROWS = 40  # a few dozen: the cluster's start dominates
TASKS = ("paraphrase", "similarity")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Blocks of a few rows (not Ray's 128 MiB): the output is several files, so their
    # names must carry the order.
    context.target_max_block_size = 1024
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tiny_store: Path) -> Path:
    """The session's tiny fp32 store (tests/conftest.py), built once for every module."""
    return tiny_store


def _rows() -> list[dict]:
    """ROWS pairs; the ids are not in ascending order, so rows sorted by id would not
    pass for rows in input order."""
    pairs = [(a, b) for a, b, _ in pair_rows(ROWS)]
    return [{"id": (i * 17) % ROWS, "s1": a, "s2": b} for i, (a, b) in enumerate(pairs)]


def _corpus(directory: Path, fmt: str, rows: list[dict]) -> Path:
    """The rows over three files (the order across files is the files' names)."""
    directory.mkdir()
    for part, start in enumerate(range(0, len(rows), 15)):
        some = rows[start : start + 15]
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(some), directory / f"part-{part}.parquet")
        else:
            lines = "".join(json.dumps(r) + "\n" for r in some)
            (directory / f"part-{part}.jsonl").write_text(lines)
    return directory


def _read_dir(directory: Path, fmt: str) -> list[dict]:
    """The rows of a directory's files, read in name order."""
    rows = []
    for path in sorted(directory.iterdir()):
        if fmt == "parquet":
            rows += pq.read_table(path).to_pylist()
        else:
            rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def _single_process(store: Path, corpus: Path, out: Path, fmt: str, skip: bool) -> list[dict]:
    """The corpus as one file, scored by the single-process run with batches of one
    row (so that no padding shared with other rows changes a float's last digits)."""
    whole = out.with_name(f"whole.{fmt}")
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(_read_dir(corpus, fmt)), whole)
    else:
        whole.write_text("".join(p.read_text() for p in sorted(corpus.iterdir())))
    engine = Engine.load(store, EngineConfig(provider="cpu"))
    tasks = resolve_tasks(engine.manifest, list(TASKS), True)
    options = Options(batch_size=1, skip_bad_rows=skip)
    score_file(engine, tasks, InputFile(whole, "s1", "s2"), out, options)
    if fmt == "parquet":
        return pq.read_table(out).to_pylist()
    return [json.loads(line) for line in out.read_text().splitlines()]


@contextlib.contextmanager
def _ray_data_console() -> Iterator[io.StringIO]:
    """What Ray Data's console handler writes meanwhile (it holds the stderr of the
    moment it was made, which capsys does not see)."""
    shown = io.StringIO()
    consoles = [
        h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)
    ]
    assert consoles, "Ray Data has no console handler to check"
    streams = [h.setStream(shown) for h in consoles]
    try:
        yield shown
    finally:
        for handler, stream in zip(consoles, streams, strict=True):
            handler.setStream(stream)


def _job(store: Path, **changes) -> RayJob:
    return RayJob(
        store=store, tasks=TASKS, text_a="s1", text_b="s2", provider="cpu", chunk_rows=8, **changes
    )


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_ray_answers_equal_the_single_process_run_in_order(cluster, store, tmp_path, fmt) -> None:
    corpus = _corpus(tmp_path / "corpus", fmt, _rows())
    out = tmp_path / "scored"
    summary = run_ray(_job(store), corpus, out, address=None, actors=1)
    assert summary.rows == ROWS and summary.skipped == []
    assert len(list(out.iterdir())) > 1  # several files: their names give the order
    got = _read_dir(out, fmt)
    assert [r["id"] for r in got] == [r["id"] for r in _rows()]  # input order

    expected = _single_process(store, corpus, tmp_path / f"single.{fmt}", fmt, skip=False)
    # With one row per run on both sides the rows are identical, whole, and in order;
    # with the default batches (Ray cuts them at the files' blocks), equal within 1e-6.
    # Into the first run's output: replaced with --overwrite (refused without it).
    run_ray(_job(store, batch_size=1), corpus, out, None, actors=1, overwrite=True)
    assert _read_dir(out, fmt) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["corpus", "scored", f"single.{fmt}", f"whole.{fmt}"]
    )
    for ray_row, want in zip(got, expected, strict=True):
        assert ray_row["id"] == want["id"]
        assert ray_row["paraphrase_decision"] == want["paraphrase_decision"]
        assert ray_row["paraphrase_probability"] == pytest.approx(
            want["paraphrase_probability"], abs=1e-6
        )
        assert ray_row["similarity_score"] == pytest.approx(want["similarity_score"], abs=1e-6)


def test_ray_bad_rows_stop_with_file_and_line_or_are_skipped(
    cluster, store, tmp_path, capsys
) -> None:
    """An empty text (line 3 of the second file) and a missing pair column (line 5 of
    the third), found by the actors; after them two lines no JSON reader takes, found
    as the files are read (an unpaired surrogate escape, line 9 of the second file:
    Ray's own reader scored it with the escape dropped; nesting 100,000 deep, line 8
    of the third: Ray's reader failed the whole file). Without --skip-bad-rows the run
    stops with the first one's file and line and exit code 2, writing nothing; with it,
    all four are skipped and counted, and every other row is the single-process run's,
    in order."""
    rows = _rows()
    rows[15 + 2]["s1"] = "  "
    del rows[30 + 4]["s2"]
    corpus = _corpus(tmp_path / "corpus", "jsonl", rows)
    unreadable = {
        "part-1.jsonl": (8, '{"id": 99, "s1": "a\\ud800b", "s2": "c"}'),
        "part-2.jsonl": (7, '{"id": 98, "s1": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    }
    for name, (after, line) in unreadable.items():
        lines = (corpus / name).read_text().splitlines(keepends=True)
        (corpus / name).write_text("".join([*lines[:after], line + "\n", *lines[after:]]))
    out = tmp_path / "scored"
    args = ["--store", str(store), "--input", str(corpus), "--output", str(out)]
    args += ["--text-a-column", "s1", "--text-b-column", "s2", "--provider", "cpu"]
    args += ["--chunk-rows", "8", "--ray", "auto", "--ray-actors", "1"]
    for task in TASKS:
        args += ["--task", task]
    skipped = tmp_path / "skipped"
    summary = run_ray(_job(store, batch_size=1, skip_bad_rows=True), corpus, skipped, None, 1)
    assert summary.rows == ROWS - 2
    assert len(summary.skipped) == 4
    assert summary.skipped[0].startswith("empty text in column 's1' in row {")
    assert summary.skipped[1] == (
        f"{corpus / 'part-1.jsonl'}:9: not valid Unicode: \\ud800 is an unpaired surrogate escape"
    )
    quoted = json.dumps({"id": rows[34]["id"], "s1": rows[34]["s1"], "s2": None})  # input only
    assert summary.skipped[2] == f"missing value in column 's2' in row {quoted}"
    assert summary.skipped[3].startswith(f"{corpus / 'part-2.jsonl'}:8: JSON nested too deeply")
    expected = _single_process(store, corpus, tmp_path / "single.jsonl", "jsonl", skip=True)
    assert _read_dir(skipped, "jsonl") == expected
    # The stopping run comes last: a failed Ray Data execution keeps its actor (and its
    # CPU of this 2-CPU cluster) until the driver exits, and a run after it in the same
    # driver waited for that CPU for ever. The command-line run exits.
    capsys.readouterr()
    with _ray_data_console() as console:  # Ray Data's handler keeps its own stream
        assert main(args) == 2
    err = capsys.readouterr().err
    line = f"bert-mts-score: error: {corpus / 'part-1.jsonl'}:3: empty text in column 's1'"
    assert line in err.splitlines() and "Traceback" not in err
    assert "Traceback" not in console.getvalue() and "ERROR" not in console.getvalue()
    assert not out.exists() and list(tmp_path.glob("scored.tmp-*")) == []


def test_ray_refuses_an_unreadable_parquet_part_before_starting(store, tmp_path, capsys) -> None:
    """A garbage part among good ones: one line naming it, exit 2, before the cluster or
    the model (Ray's reader raised ArrowInvalid in the driver: a traceback)."""
    corpus = _corpus(tmp_path / "corpus", "parquet", _rows()[:20])
    (corpus / "part-1.parquet").write_bytes(b"not parquet " * 30)
    args = ["--store", str(store), "--input", str(corpus), "--output", str(tmp_path / "o")]
    args += ["--text-a-column", "s1", "--task", "sentiment", "--ray", "auto"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"bert-mts-score: error: {corpus / 'part-1.parquet'}: not a readable Parquet file: "
        "Parquet magic bytes not found in footer. Either the file is corrupted or this is "
        "not a parquet file."
    ]


def test_ray_keeps_an_existing_output_unless_overwrite(store, tmp_path, capsys) -> None:
    """Refused before the cluster or the model is touched: an existing output without
    --overwrite (one line naming it), and with it a directory that holds anything but
    a scorer's part files (a mistyped --output must not remove someone's directory)."""
    corpus = _corpus(tmp_path / "corpus", "jsonl", _rows()[:5])
    out = tmp_path / "scored"
    out.mkdir()
    (out / "part-00000000.jsonl").write_text("{}\n")
    args = ["--store", str(store), "--input", str(corpus), "--output", str(out)]
    args += ["--text-a-column", "s1", "--task", "sentiment", "--ray", "auto"]
    for extra, fragments in (([], ["already exists", "--overwrite"]), (["--overwrite"], None)):
        if fragments is None:  # with --overwrite: refused for the other file only
            (out / "notes.txt").write_text("mine")
            fragments = ["'notes.txt'", "not only a scorer's part files"]
        capsys.readouterr()
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(f in err[0] for f in fragments), err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "part-00000000.jsonl"]
