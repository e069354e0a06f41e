"""Entity files (CoNLL and JSONL) -> texts with character spans, and each bad line as
`path:line: reason` or skipped and counted; entity F1 and its paired bootstrap."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.entity_files import iob2_tags, read_entity_file
from training.data.examples import DataError
from training.evaluate.entity_f1 import entity_f1, f1_comparison

CONLL = (
    "Jürgen\tB-person\nHabermas\tI-person\nvisited\tO\nSão  B-location\nPaulo I-location\n"
    "\n"
    "nothing\tO\nhere\tO\n"
    "\t\n"  # a line holding only a tab ends a sentence too (WNUT-17's train file does)
    "Ada\tB-person\n"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _spans(tagged) -> list[tuple[str, str]]:
    return [(tagged.text[e.start : e.end], e.label) for e in tagged.entities]


def test_conll_sentences_become_texts_with_spans(tmp_path: Path) -> None:
    loaded = read_entity_file(_write(tmp_path, "a.conll", CONLL))
    assert [t.text for t in loaded.texts] == [
        "Jürgen Habermas visited São Paulo",
        "nothing here",
        "Ada",
    ]
    assert _spans(loaded.texts[0]) == [("Jürgen Habermas", "person"), ("São Paulo", "location")]
    assert [t.line for t in loaded.texts] == [1, 7, 10]
    assert loaded.types == ("person", "location")
    assert iob2_tags(loaded.types) == ("O", "B-person", "I-person", "B-location", "I-location")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("a\tO\nb\tX-person\n", 2, "tag 'X-person' is not IOB2"),
        ("a\tO\nb\tI-person\n", 2, "tag 'I-person' follows O: IOB2 starts an entity with B-person"),
        ("a\tB-group\nb\tI-person\n", 2, "follows an entity of type group"),
        ("a\tO\nb c\tO\n", 2, "expected a token and its tag"),
        ("a\tO\n\nb\n", 3, "got 1 field"),
    ],
)
def test_bad_conll_lines_name_their_line(tmp_path, text, line, reason) -> None:
    path = _write(tmp_path, "bad.conll", text)
    with pytest.raises(DataError) as caught:
        read_entity_file(path)
    assert caught.value.line == line and reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_bad_sentences_are_skipped_and_counted_when_asked(tmp_path: Path) -> None:
    path = _write(tmp_path, "mixed.conll", "a\tB-x\n\nb\tI-y\n\nc\tO\n")
    loaded = read_entity_file(path, skip_bad_rows=True)
    assert [t.text for t in loaded.texts] == ["a", "c"]
    assert loaded.skipped_lines == [3]


JSONL_GOOD = (
    '{"text": "  Ada Lovelace met 😀 Babbage.", "entities": '
    '[{"start": 21, "end": 28, "label": "person"}, {"start": 2, "end": 14, "label": "person"}]}\n'
    '{"text": "no entities here"}\n'
)


def test_jsonl_spans_are_read_sorted(tmp_path: Path) -> None:
    loaded = read_entity_file(_write(tmp_path, "a.jsonl", JSONL_GOOD))
    assert _spans(loaded.texts[0]) == [("Ada Lovelace", "person"), ("Babbage", "person")]
    assert loaded.texts[1].entities == ()


@pytest.mark.parametrize(
    ("entities", "reason"),
    [
        ('[{"start": 0, "end": 40, "label": "x"}]', "falls outside the text"),
        (
            '[{"start": 0, "end": 5, "label": "x"}, {"start": 3, "end": 9, "label": "x"}]',
            "overlaps",
        ),
        ('[{"start": 1, "end": 5, "label": "x"}]', "cuts a word in two"),
        ('[{"start": 0, "end": 3, "label": "x"}]', "cuts a word in two"),
        ('[{"start": 0, "end": 5, "label": ""}]', "non-empty name"),
        ('[{"start": "0", "end": 5, "label": "x"}]', "must be integers"),
        ('[{"start": 0, "end": 5}]', '{"start": int'),
        ('[{"start": 0, "end": 6, "label": "x"}]', "whitespace"),
    ],
)
def test_bad_jsonl_spans_name_their_line(tmp_path, entities, reason) -> None:
    text = '{"text": "Hello world", "entities": ENTITIES}\n'.replace("ENTITIES", entities)
    path = _write(tmp_path, "bad.jsonl", '{"text": "fine"}\n' + text)
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: .*{reason[:20]}"):
        read_entity_file(path)


def test_labels_fix_the_types_and_their_order(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.conll", CONLL)
    loaded = read_entity_file(path, labels=("location", "person", "group"))
    assert loaded.types == ("location", "person", "group")
    with pytest.raises(DataError, match=r"a\.conll:1: entity type 'location' is not one of"):
        read_entity_file(path, labels=("person",))


def test_the_format_comes_from_the_suffix_or_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.txt", CONLL)
    with pytest.raises(DataError, match="cannot tell the format"):
        read_entity_file(path)
    assert len(read_entity_file(path, file_format="conll").texts) == 3
    with pytest.raises(DataError, match="no such file"):
        read_entity_file(tmp_path / "missing.conll")


def test_the_wnut17_files_read_as_their_readme_counts(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "wnut17-train.conll").exists():
        pytest.skip("../shared/data has no WNUT-17 files")
    train, dev = (read_entity_file(data / f"wnut17-{s}.conll") for s in ("train", "dev"))
    assert (len(train.texts), sum(len(t.entities) for t in train.texts)) == (3394, 1975)
    assert (len(dev.texts), sum(len(t.entities) for t in dev.texts)) == (1009, 836)
    assert sorted(train.types) == sorted(dev.types)


def test_entity_f1_counts_exact_span_and_type_only() -> None:
    gold = [[(0, 3, "person"), (8, 12, "location")], [(0, 4, "group"), (5, 9, "person")]]
    predicted = [[(0, 3, "person"), (8, 12, "person")], [(0, 4, "group"), (5, 8, "person")]]
    score = entity_f1(gold, predicted)
    assert (score.found, score.predicted, score.gold) == (2, 4, 4)
    assert score.precision == score.recall == score.f1 == pytest.approx(0.5)
    assert entity_f1([[]], [[]]).f1 == 0.0


def test_the_paired_bootstrap_sees_a_real_loss_and_no_loss_in_identical_answers() -> None:
    gold = [[(0, 3, "person")] for _ in range(200)]
    same = f1_comparison(gold, gold, gold)
    assert same["loss_points"] == 0 and same["loss_interval_points"] == [0.0, 0.0]
    worse = [[(0, 3, "person")] if i % 4 else [(0, 2, "person")] for i in range(200)]
    lost = f1_comparison(gold, gold, worse)
    assert lost["loss_points"] == pytest.approx(25.0)
    assert lost["loss_interval_points"][0] > 0  # significant: the interval excludes 0
