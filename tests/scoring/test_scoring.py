"""Offline scoring (`bert-mts-score`): the service's answers, streamed, resumable."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.core import ScoreError, engine_config, resolve_tasks, score_texts
from scoring.formats import InputFile
from scoring.local import Options, score_file, work_dir
from service.app import create_app
from service.engine import Engine
from service.settings import Settings
from tests.support.commands import ROOT, assert_one_line_error, run
from tests.support.samples import pair_rows, sentiment_rows
from training.data.examples import Columns, DataError
from training.data.labels import binary_label
from training.data.readers import read_examples

LONG_TEXT = " ".join(["word"] * 60)  # beyond the tiny store's 32 tokens


@pytest.fixture(scope="module")
def store(tiny_store: Path) -> Path:
    """The session's tiny fp32 store (tests/conftest.py), built once for every module."""
    return tiny_store


@pytest.fixture(scope="module")
def engine(store: Path) -> Engine:
    return Engine.load(store, Settings(model_dir=store, provider="cpu").engine_config())


def _texts() -> list[str]:
    return [text for text, _ in sentiment_rows(21)] + [LONG_TEXT, "ok"]


def _pairs() -> list[tuple[str, str]]:
    return [(a, b) for a, b, _ in pair_rows(19)]


def _write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter=",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


async def _service_answers(engine: Engine, store: Path, task: str, items: list) -> list[dict]:
    """/v1/tasks/{task}'s answer for each item, one request each (a batch of one)."""
    settings = Settings(model_dir=store, provider="cpu")
    app = create_app(settings, engine)
    answers = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            for item in items:
                body = (
                    {"text": item}
                    if isinstance(item, str)
                    else dict(zip(("sentence1", "sentence2"), item, strict=True))
                )
                response = await http.post(f"/v1/tasks/{task}", json=body)
                assert response.status_code == 200, response.text
                answers.append(response.json())
    return answers


def _as_json(value: str):
    return json.loads(value)


# --- the service's answers ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_every_kind_answers_as_the_service_row_by_row(engine, store, tmp_path) -> None:
    """Classification (sentiment) from a CSV, binary (paraphrase) and regression
    (similarity) in one multi-task run from a TSV: equal to /v1/tasks/{task} row by row.
    With batches of one row, as the service runs a lone request, exactly; with the
    default length-sorted batches, up to padding's float rounding (1e-6)."""
    texts = _texts()
    text_file = _write_csv(
        tmp_path / "in.csv", ["id", "sentence"], [[str(i), t] for i, t in enumerate(texts)]
    )
    pairs = _pairs()
    pair_file = _write_csv(
        tmp_path / "in.tsv", ["q1", "q2"], [list(p) for p in pairs], delimiter="\t"
    )
    expected = {
        "sentiment": await _service_answers(engine, store, "sentiment", texts),
        "paraphrase": await _service_answers(engine, store, "paraphrase", pairs),
        "similarity": await _service_answers(engine, store, "similarity", pairs),
    }
    for options, exact in ((Options(batch_size=1), True), (Options(chunk_rows=7), False)):
        approx = (lambda v: v) if exact else (lambda v: pytest.approx(v, abs=1e-6))
        out = tmp_path / f"text-{exact}.csv"
        source = InputFile(text_file, "sentence", None)
        score_file(
            engine, resolve_tasks(engine.manifest, ["sentiment"], False), source, out, options
        )
        rows = _read_rows(out)
        assert [r["sentence"] for r in rows] == texts  # input order, input columns kept
        assert [r["id"] for r in rows] == [str(i) for i in range(len(texts))]
        for row, want in zip(rows, expected["sentiment"], strict=True):
            assert int(row["sentiment_label"]) == want["label"]
            assert row["sentiment_label_name"] == want["label_name"]
            assert _as_json(row["sentiment_probabilities"]) == approx(want["probabilities"])
            assert _as_json(row["truncated"]) == want["truncated"]
        assert any(_as_json(r["truncated"]) for r in rows)

        out = tmp_path / f"pairs-{exact}.tsv"
        tasks = resolve_tasks(engine.manifest, ["paraphrase", "similarity"], True)
        score_file(engine, tasks, InputFile(pair_file, "q1", "q2"), out, options)
        rows = _read_rows(out)
        assert [(r["q1"], r["q2"]) for r in rows] == pairs
        for row, binary, score in zip(
            rows, expected["paraphrase"], expected["similarity"], strict=True
        ):
            assert _as_json(row["paraphrase_decision"]) == binary["decision"]
            assert row["paraphrase_label_name"] == binary["label_name"]
            assert float(row["paraphrase_probability"]) == approx(binary["probability"])
            assert float(row["similarity_score"]) == approx(score["score"])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_embeddings_score_as_the_service_answers(embedding_repository, tmp_path) -> None:
    """The embedding kind: one `<task>_embedding` column, the service's L2-normalised
    vector, beside a classification task of the same rows (one pass over the trunk)."""
    settings = Settings(model_dir=embedding_repository, provider="cpu")
    engine = Engine.load(embedding_repository, settings.engine_config())
    texts = _texts()[:9]
    want = await _service_answers(engine, embedding_repository, "embedding", texts)
    source = _write_csv(tmp_path / "in.csv", ["text"], [[t] for t in texts])
    out = tmp_path / "out.jsonl"
    tasks = resolve_tasks(engine.manifest, ["embedding", "sentiment"], False)
    score_file(engine, tasks, InputFile(source, "text", None), out, Options(batch_size=1))
    rows = _read_rows(out)
    assert [r["text"] for r in rows] == texts
    for row, answer in zip(rows, want, strict=True):
        assert row["embedding_embedding"] == answer["embedding"]
        assert "sentiment_label" in row


def test_the_scorers_engine_answers_as_the_services(engine, store) -> None:
    """The scorer's session (scoring.core.engine_config: ORT's per-shape memory
    patterns off) gives the service's session's answers exactly, over batches of many
    shapes (a pattern is planned per shape; the arithmetic must not change)."""
    scorer = Engine.load(store, engine_config(provider="cpu"))

    def pattern(e: Engine) -> bool:
        return e.session._session.get_session_options().enable_mem_pattern

    assert not pattern(scorer) and pattern(engine)
    texts = _texts()
    for tasks in (["sentiment"], ["paraphrase", "similarity"]):
        pair = tasks != ["sentiment"]
        texts_b = list(reversed(texts)) if pair else None
        for batch_size in (1, 3, 7, 32):
            want = score_texts(
                engine, resolve_tasks(engine.manifest, tasks, pair), texts, texts_b, batch_size
            )
            got = score_texts(
                scorer, resolve_tasks(scorer.manifest, tasks, pair), texts, texts_b, batch_size
            )
            assert got == want


# --- formats, resume, bad rows ------------------------------------------------------------


def _input(tmp_path: Path, fmt: str) -> Path:
    texts = _texts()
    if fmt == "jsonl":
        path = tmp_path / "in.jsonl"
        lines = [json.dumps({"n": i, "sentence": t, "meta": {"k": i}}) for i, t in enumerate(texts)]
        path.write_text("\n".join(lines) + "\n")
        return path
    if fmt == "parquet":
        path = tmp_path / "in.parquet"
        pq.write_table(pa.table({"n": list(range(len(texts))), "sentence": texts}), path)
        return path
    return _write_csv(
        tmp_path / "in.csv", ["n", "sentence"], [[str(i), t] for i, t in enumerate(texts)]
    )


class Stop(Exception):
    pass


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_an_interrupted_run_resumes_to_the_same_file(engine, tmp_path, fmt) -> None:
    """Stopped after 2 chunks of 5 rows, then resumed: the output is byte for byte the
    uninterrupted run's, and only the missing chunks were scored again."""
    source = InputFile(_input(tmp_path, fmt), "sentence", None)
    tasks = resolve_tasks(engine.manifest, ["sentiment", "sentiment"], False)
    options = Options(chunk_rows=5)
    whole = tmp_path / f"whole.{fmt}"
    score_file(engine, tasks, source, whole, options)

    out = tmp_path / f"out.{fmt}"

    def stop_after_two(index: int, rows: int) -> None:
        if index == 1:
            raise Stop

    with pytest.raises(Stop):
        score_file(engine, tasks, source, out, options, on_chunk=stop_after_two)
    assert not out.exists()  # never half-written
    assert len(list(work_dir(out).glob("0*.json"))) == 2

    scored = []
    summary = score_file(
        engine,
        tasks,
        source,
        out,
        options,
        resume=True,
        on_chunk=lambda index, rows: scored.append(index),
    )
    assert summary.resumed_chunks == 2 and scored == [1, 2, 3, 4]  # done ones reported once
    assert summary.rows == len(_texts())
    assert out.read_bytes() == whole.read_bytes()
    assert not work_dir(out).exists()
    rows = _read_rows(out)
    assert [r["sentence"] for r in rows] == _texts()
    if fmt != "csv":
        assert [r["n"] for r in rows] == list(range(len(_texts())))
    if fmt == "parquet":
        assert pq.ParquetFile(out).schema_arrow.field("sentiment_probabilities").type == (
            pa.list_(pa.float64())
        )


def test_resume_refuses_a_changed_run(engine, tmp_path) -> None:
    source = InputFile(_input(tmp_path, "csv"), "sentence", None)
    tasks = resolve_tasks(engine.manifest, ["sentiment"], False)
    out = tmp_path / "out.csv"

    def stop(index: int, rows: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        score_file(engine, tasks, source, out, Options(chunk_rows=5), on_chunk=stop)
    with pytest.raises(ScoreError, match="chunk_rows"):
        score_file(engine, tasks, source, out, Options(chunk_rows=6), resume=True)


def test_bad_rows_stop_with_their_line_or_are_skipped_and_counted(engine, tmp_path) -> None:
    path = tmp_path / "in.tsv"
    path.write_text("a\tb\nfine\tgood\n\tno first\nx\ty\nonly one field\nlast\t  \n")
    source = InputFile(path, "a", "b")
    tasks = resolve_tasks(engine.manifest, ["similarity"], True)
    with pytest.raises(DataError) as err:
        score_file(engine, tasks, source, tmp_path / "out.jsonl")
    assert str(err.value) == f"{path}:3: empty text in column 'a'"
    assert not (tmp_path / "out.jsonl").exists()

    summary = score_file(
        engine, tasks, source, tmp_path / "out.jsonl", Options(skip_bad_rows=True, chunk_rows=2)
    )
    assert [line for line, _ in summary.skipped] == [3, 5, 6]
    rows = _read_rows(tmp_path / "out.jsonl")
    assert [(r["a"], r["b"]) for r in rows] == [("fine", "good"), ("x", "y")]


def test_broken_quoting_stops_the_scorer_as_it_stops_training(engine, tmp_path) -> None:
    """One CSV/TSV record reader (training.data.readers.csv_records): the same error, at
    the line where the broken record starts, even with --skip-bad-rows."""
    path = tmp_path / "q.tsv"
    path.write_text('sentence\tlabel\nOk.\t1\n"never closed\t1\nMore.\t0\n')
    with pytest.raises(DataError) as training:
        read_examples(path, Columns("sentence", None, "label"), binary_label())
    tasks = resolve_tasks(engine.manifest, ["sentiment"], False)
    for skip in (False, True):
        with pytest.raises(DataError) as scoring:
            options = Options(skip_bad_rows=skip)
            score_file(
                engine, tasks, InputFile(path, "sentence", None), tmp_path / "o.csv", options
            )
        assert str(scoring.value) == str(training.value)
        assert scoring.value.line == 3


# --- the command ----------------------------------------------------------------------------


def test_the_command_scores_a_file(store, tmp_path) -> None:
    source = _input(tmp_path, "parquet")
    out = tmp_path / "scored.jsonl"
    result = run(
        "-m",
        "scoring",
        "--store",
        str(store),
        "--task",
        "sentiment",
        "--input",
        str(source),
        "--text-a-column",
        "sentence",
        "--output",
        str(out),
        "--provider",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    assert f"scored {len(_texts())} rows (sentiment)" in result.stderr
    rows = _read_rows(out)
    assert len(rows) == len(_texts())
    assert {"n", "sentence", "sentiment_label", "sentiment_probabilities"} <= set(rows[0])


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--task", "nope"], ["unknown task 'nope'"]),
        (["--task", "paraphrase"], ["task paraphrase needs --text-b-column"]),
        (["--text-a-column", "missing"], ["has no column 'missing'", "--text-a-column"]),
        (["--batch-size", "0"], ["--batch-size", "must be at least 1"]),
        (["--task", "all", "--task", "sentiment"], ["cannot be combined"]),
        (["--ray", "auto", "--resume"], ["--resume is for single-machine runs"]),
        (["--ray", "auto"], ["--ray"]),  # a CSV file, or no Ray installed: one line either way
    ],
)
def test_misuse_is_one_line_and_exit_2(store, tmp_path, extra, fragments) -> None:
    source = _input(tmp_path, "csv")
    result = run(
        "-m",
        "scoring",
        "--store",
        str(store),
        "--input",
        str(source),
        "--output",
        str(tmp_path / "o.csv"),
        "--text-a-column",
        "sentence",
        *extra,
    )
    assert_one_line_error(result, *fragments)


def test_an_unknown_output_format_is_one_line(store, tmp_path) -> None:
    result = run(
        "-m",
        "scoring",
        "--store",
        str(store),
        "--input",
        str(_input(tmp_path, "csv")),
        "--output",
        str(tmp_path / "o.xlsx"),
        "--text-a-column",
        "sentence",
    )
    assert_one_line_error(result, "cannot tell the format", ".parquet")


def test_the_scorer_does_not_import_torch() -> None:
    """Online-side code: the scorer and its Ray workers run without the training stack."""
    code = (
        "import sys, scoring.cli, scoring.local, scoring.formats, scoring.ray_job, scoring.core;"
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
