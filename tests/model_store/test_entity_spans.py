"""Token probabilities -> entities with character offsets into the text as sent, with the
real tokenizer: leading spaces, accents, emoji, words split into sub-tokens, IOB2
grouping, and texts longer than a window."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from model_store.entity_spans import decode, spans_to_word_tags, stitch, window_starts

TAGS = ("O", "B-person", "I-person", "B-location", "I-location")


@pytest.fixture(scope="module")
def tokenizer(tiny_store: Path) -> Tokenizer:
    loaded = Tokenizer.from_file(str(tiny_store / "tokenizer.json"))
    loaded.no_truncation()
    return loaded


def _probabilities(encoding, word_tags: dict[int, str], first: float = 0.9) -> np.ndarray:
    """Per token: the word's tag at `first` on its first sub-token; later sub-tokens
    lean to O (0.6), which decoding must ignore (a word is labelled by its first)."""
    rows, seen = [], set()
    for word in encoding.word_ids:
        row = np.full(len(TAGS), (1 - first) / (len(TAGS) - 1))
        if word is not None and word not in seen:
            row[TAGS.index(word_tags.get(word, "O"))] = first
            seen.add(word)
        else:
            row = np.full(len(TAGS), 0.1)
            row[0] = 0.6
        rows.append(row)
    return np.array(rows)


def _word_index(encoding, text: str, word: str) -> int:
    start = text.index(word)
    for span, word_id in zip(encoding.offsets, encoding.word_ids, strict=True):
        if word_id is not None and span[0] == start:
            return word_id
    raise AssertionError(f"no word starts at {word!r}")


def test_offsets_index_the_text_as_sent(tokenizer: Tokenizer) -> None:
    text = "   Héllo, Jürgen Habermas visited Zürich 😀 and São Paulo!"
    encoding = tokenizer.encode(text)
    tags = {
        _word_index(encoding, text, "Jürgen"): "B-person",
        _word_index(encoding, text, "Habermas"): "I-person",
        _word_index(encoding, text, "Zürich"): "B-location",
        _word_index(encoding, text, "São"): "B-location",
        _word_index(encoding, text, "Paulo"): "I-location",
    }
    probabilities = _probabilities(encoding, tags)
    entities = decode(text, encoding.offsets, encoding.word_ids, probabilities, TAGS)
    assert [(e.entity_group, e.word) for e in entities] == [
        ("person", "Jürgen Habermas"),
        ("location", "Zürich"),
        ("location", "São Paulo"),
    ]
    for entity in entities:
        assert text[entity.start : entity.end] == entity.word
    # Sub-tokens after a word's first lean to O, 0.1 on the word's tag: the score is
    # the mean over the entity's tokens, each at its word's tag.
    first, last = text.index("Jürgen"), text.index("Habermas")
    token_tags = [
        "B-person" if span[0] < last else "I-person"
        for span, word in zip(encoding.offsets, encoding.word_ids, strict=True)
        if word is not None and first <= span[0] < last + len("Habermas")
    ]
    rows = [
        row
        for row, span, word in zip(probabilities, encoding.offsets, encoding.word_ids, strict=True)
        if word is not None and first <= span[0] < last + len("Habermas")
    ]
    expected = np.mean([row[TAGS.index(tag)] for row, tag in zip(rows, token_tags, strict=True)])
    assert len(rows) > 2 and entities[0].score == pytest.approx(expected)


def test_every_sub_token_of_a_word_belongs_to_its_entity(tokenizer: Tokenizer) -> None:
    text = "Thisisanunusuallylongwordpiece arrives"
    encoding = tokenizer.encode(text)
    assert len([w for w in encoding.word_ids if w == 0]) > 2  # split into sub-tokens
    probabilities = _probabilities(encoding, {0: "B-person"})
    (entity,) = decode(text, encoding.offsets, encoding.word_ids, probabilities, TAGS)
    assert entity.word == "Thisisanunusuallylongwordpiece"
    assert (entity.start, entity.end) == (0, 30)


def test_grouping_follows_the_pipelines_simple_strategy(tokenizer: Tokenizer) -> None:
    """B- starts, I- of the same type continues, I- after O or of another type starts a
    new entity, O closes."""
    text = "alice bob carol dave erin"
    encoding = tokenizer.encode(text)
    tags = {0: "B-person", 1: "B-person", 2: "I-location", 3: "I-location", 4: "I-person"}
    entities = decode(
        text, encoding.offsets, encoding.word_ids, _probabilities(encoding, tags), TAGS
    )
    assert [(e.entity_group, e.word) for e in entities] == [
        ("person", "alice"),
        ("person", "bob"),
        ("location", "carol dave"),
        ("person", "erin"),
    ]


def test_windows_cover_every_token_and_stitch_from_the_most_central() -> None:
    starts = window_starts(300, 126, 32)
    assert starts[0] == 0 and starts[-1] == 300 - 126
    assert all(b - a == 94 for a, b in itertools.pairwise(starts[:-1]))
    assert window_starts(100, 126, 32) == [0]
    with pytest.raises(ValueError, match="stride"):
        window_starts(300, 126, 126)
    truth = np.random.default_rng(0).random((300, len(TAGS)))
    # Each window sees the truth except near its own edges, where it is wrong: the
    # stitched rows must all come from a window where the token is well inside.
    windows = []
    for start in starts:
        rows = truth[start : start + 126].copy()
        rows[:10] = rows[-10:] = -1.0
        windows.append((start, rows))
    stitched = stitch(300, windows)
    assert np.array_equal(stitched[10:-10], truth[10:-10])


def test_a_long_text_keeps_an_entity_across_a_window_edge(tokenizer: Tokenizer) -> None:
    text = " ".join(["word"] * 150 + ["Ada", "Lovelace"] + ["word"] * 150)
    encoding = tokenizer.encode(text)
    probabilities = _probabilities(
        encoding,
        {
            _word_index(encoding, text, "Ada"): "B-person",
            _word_index(encoding, text, "Lovelace"): "I-person",
        },
    )
    starts = window_starts(len(encoding.ids), 126, 32)
    assert len(starts) > 2
    windows = [(s, probabilities[s : s + 126]) for s in starts]
    stitched = stitch(len(encoding.ids), windows)
    (entity,) = decode(text, encoding.offsets, encoding.word_ids, stitched, TAGS)
    assert entity.word == "Ada Lovelace" and text[entity.start : entity.end] == "Ada Lovelace"


def test_spans_become_word_tags_for_training() -> None:
    words = [(0, 3), (4, 7), (8, 12), (13, 17), (18, 22)]  # "New York city hall open"
    spans = [(0, 7, "location"), (13, 17, "location")]
    assert spans_to_word_tags(words, spans) == [
        "B-location",
        "I-location",
        "O",
        "B-location",
        "O",
    ]
