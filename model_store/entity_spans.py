"""Per-token tag probabilities -> entities with character offsets, and back.

A tagging task's graph answers per-token logits; clients want what the Hugging Face
token-classification pipeline gives with simple aggregation: entities grouped from
IOB2 tags, each `{"entity_group", "score", "word", "start", "end"}` with `start`/`end`
character offsets into the text exactly as the client sent it (`text[start:end] ==
word`). Training scores its validation split with the same decoding, so the F1 it
reports is the F1 of the answers the service gives: one place, torch-free (the service
and the offline scorer use it).

Decisions, and why:
- A word is labelled by its first sub-token (the others were ignored by the loss, so
  their predictions were never trained), and every sub-token of a word belongs to the
  word's entity: an entity never ends inside a word.
- Grouping follows the pipeline's `group_entities`: a word tagged B- starts an entity,
  I- of the open entity's type continues it, I- of another type (or after O) starts one
  (what conlleval does with such a tag), O closes it.
- `score` is the mean, over the entity's tokens, of each token's probability of the tag
  its word carries.
- A text longer than one window is tagged window by window (`window_starts`); each token
  takes its probabilities from the window in which it has the most context on its
  nearer side (`stitch`), so an entity across a window edge is not lost or doubled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OUTSIDE = "O"


@dataclass(frozen=True)
class Entity:
    """One entity of an answer, in the pipeline's shape."""

    entity_group: str
    score: float
    word: str
    start: int
    end: int

    def to_json(self) -> dict[str, object]:
        return {
            "entity_group": self.entity_group,
            "score": self.score,
            "word": self.word,
            "start": self.start,
            "end": self.end,
        }


def split_tag(tag: str) -> tuple[str, str]:
    """('B' | 'I' | 'O', type) of an IOB2 tag; a tag without a prefix counts as I-."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    if tag[:2] in ("B-", "I-"):
        return tag[0], tag[2:]
    return "I", tag


def decode(
    text: str,
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    probabilities: np.ndarray,
    tags: Sequence[str],
) -> list[Entity]:
    """Entities of one text. `offsets`, `word_ids` and `probabilities` ([tokens, tags])
    are per token of the text (special tokens have word id None and are skipped);
    offsets index `text` in characters."""
    if len(offsets) != len(word_ids) or len(offsets) != len(probabilities):
        raise ValueError("offsets, word ids and probabilities must be one per token")
    words: list[tuple[str, list[int]]] = []  # (tag, token positions) per word, in order
    last_word = None
    for position, word in enumerate(word_ids):
        if word is None:
            last_word = None
            continue
        if word != last_word:
            words.append((tags[int(np.argmax(probabilities[position]))], [position]))
        else:
            words[-1][1].append(position)
        last_word = word
    entities: list[Entity] = []
    group: tuple[str, list[tuple[str, list[int]]]] | None = None

    def close() -> None:
        if group is None:
            return
        kind, members = group
        positions = [p for _, tokens in members for p in tokens]
        scores = [
            float(probabilities[p][tags.index(tag)]) for tag, tokens in members for p in tokens
        ]
        start, end = offsets[positions[0]][0], offsets[positions[-1]][1]
        entities.append(Entity(kind, float(np.mean(scores)), text[start:end], start, end))

    for tag, tokens in words:
        prefix, kind = split_tag(tag)
        if prefix == OUTSIDE:
            close()
            group = None
        elif prefix == "I" and group is not None and group[0] == kind:
            group[1].append((tag, tokens))
        else:
            close()
            group = (kind, [(tag, tokens)])
    close()
    return entities


def window_starts(tokens: int, window: int, stride: int) -> list[int]:
    """Where each window of `window` tokens starts, consecutive windows overlapping by
    `stride` tokens, the last one ending at the last token."""
    if window < 1 or not 0 <= stride < window:
        raise ValueError(f"a window of {window} tokens needs 0 <= stride < {window}, got {stride}")
    if tokens <= window:
        return [0]
    starts = list(range(0, tokens - window, window - stride))
    return [*starts, tokens - window]


def stitch(tokens: int, windows: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """One probability row per token from overlapping windows ((start, [n, tags]) each):
    a token takes the row of the window where its distance to the nearer window edge is
    largest (ties: the earlier window)."""
    width = windows[0][1].shape[-1]
    stitched = np.zeros((tokens, width), dtype=np.float64)
    context = np.full(tokens, -1)
    for start, rows in windows:
        for offset in range(len(rows)):
            position = start + offset
            margin = min(offset, len(rows) - 1 - offset)
            if margin > context[position]:
                stitched[position], context[position] = rows[offset], margin
    if (context < 0).any():
        raise ValueError("the windows leave tokens uncovered")
    return stitched


def spans_to_word_tags(
    word_spans: Sequence[tuple[int, int]], entities: Sequence[tuple[int, int, str]]
) -> list[str]:
    """IOB2 tags of words (character spans) from entity spans (start, end, type): the
    training target of each word's first sub-token. A word inside an entity is B- if it
    is the entity's first word, else I-; a word outside every entity is O."""
    tags: list[str] = []
    ordered = sorted(entities)
    index, previous = 0, None  # previous: the entity the word before belonged to
    for start, end in word_spans:
        while index < len(ordered) and ordered[index][1] <= start:
            index += 1
        inside = index < len(ordered) and ordered[index][0] <= start and end <= ordered[index][1]
        if not inside:
            tags.append(OUTSIDE)
            previous = None
            continue
        tags.append(("I-" if previous == index else "B-") + ordered[index][2])
        previous = index
    return tags
