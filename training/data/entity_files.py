"""Entity-annotated files -> texts with character spans, validated line by line.

Token classification reads two formats, and both become the same record, a text and
its entities as character spans (`TaggedText`), so that everything downstream (sub-token
alignment, the metric, the answers' offsets) works on one representation:

* **CoNLL** (`.conll`, or `file_format="conll"`): one token and its IOB2 tag per line,
  separated by a tab or spaces; a blank line (or one holding only whitespace, as some
  files write it) ends a sentence. The sentence's text is its tokens joined by single
  spaces, so each token's span is known exactly.
* **JSONL**: `{"text": ..., "entities": [{"start", "end", "label"}, ...]}` with
  character offsets, end exclusive.

Never guess, as the other readers (`training.data.readers`): a malformed line, a tag
outside the IOB2 scheme (an `I-` that does not continue an entity of its type), a span
outside its text, overlapping another, or cutting a word in two is
`<path>:<line>: <reason>`, or is skipped and counted with `skip_bad_rows`. Standard
library only, like the other readers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.data.examples import DataError
from training.data.readers import BadRow, decoded_lines, json_objects

FORMATS = ("conll", "jsonl")
_SUFFIXES = {".conll": "conll", ".jsonl": "jsonl", ".json-lines": "jsonl"}
_TAG = re.compile(r"(?P<prefix>[BI])-(?P<type>\S+)")
OUTSIDE = "O"


@dataclass(frozen=True)
class EntitySpan:
    """One entity: characters [start, end) of its text, and its type."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class TaggedText:
    """A text, its entities (sorted, non-overlapping) and the line it starts on."""

    text: str
    entities: tuple[EntitySpan, ...]
    line: int


@dataclass
class EntityFile:
    """What `read_entity_file` loaded, the lines it skipped, and the entity types in the
    order given (`labels`) or first seen in the file."""

    texts: list[TaggedText]
    skipped_lines: list[int] = field(default_factory=list)
    types: tuple[str, ...] = ()

    @property
    def skipped(self) -> int:
        return len(self.skipped_lines)


def file_format_of(path: Path, file_format: str | None) -> str:
    """`file_format`, or the one the suffix names; DataError when neither says."""
    if file_format is not None:
        if file_format.lower() not in FORMATS:
            raise DataError(
                path, None, f"unknown format {file_format!r}; expected one of {', '.join(FORMATS)}"
            )
        return file_format.lower()
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise DataError(
            path,
            None,
            "cannot tell the format from the suffix: name it .conll or .jsonl, or pass the "
            "format (conll or jsonl)",
        )
    return found


def _conll_sentences(lines: Iterator[str]) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """(first line, [(line, content), ...]) per sentence; blank or whitespace-only lines
    end one."""
    start, rows = 0, []
    for lineno, text in enumerate(lines, start=1):
        content = text.rstrip("\r\n")
        if not content.strip():
            if rows:
                yield start, rows
            start, rows = 0, []
            continue
        if not rows:
            start = lineno
        rows.append((lineno, content))
    if rows:
        yield start, rows


def _conll_text(rows: list[tuple[int, str]]) -> tuple[int, TaggedText | BadRow]:
    """One sentence's tokens and IOB2 tags -> (its first line, its text and spans), or
    (its first bad line, why)."""
    tokens, entities = [], []
    offset, current = 0, None  # current: [start, end, type] of the open entity
    for lineno, content in rows:
        fields = content.split()
        if len(fields) != 2:
            return lineno, BadRow(
                f"expected a token and its tag separated by a tab or spaces, "
                f"got {len(fields)} field{'s' if len(fields) != 1 else ''}"
            )
        token, tag = fields
        start = offset + (1 if tokens else 0)
        end = start + len(token)
        if tag == OUTSIDE:
            current = None
        else:
            match = _TAG.fullmatch(tag)
            if match is None:
                return lineno, BadRow(f"tag {tag!r} is not IOB2 (O, B-<type> or I-<type>)")
            kind = match["type"]
            if match["prefix"] == "B":
                current = [start, end, kind]
                entities.append(current)
            elif current is None or current[2] != kind:
                after = "O" if current is None else f"an entity of type {current[2]}"
                return lineno, BadRow(
                    f"tag {tag!r} follows {after}: IOB2 starts an entity with B-{kind}"
                )
            else:
                current[1] = end
        tokens.append(token)
        offset = end
    spans = tuple(EntitySpan(s, e, t) for s, e, t in entities)
    return rows[0][0], TaggedText(" ".join(tokens), spans, rows[0][0])


def _is_word_character(character: str) -> bool:
    return character.isalnum() or character == "_"


def _span_problem(text: str, span: object, previous_end: int) -> str | None:
    """Why one JSONL entity is unusable, or None."""
    if not isinstance(span, dict) or set(span) != {"start", "end", "label"}:
        return 'each entity is {"start": int, "end": int, "label": str}'
    start, end, label = span["start"], span["end"], span["label"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
        return f"entity offsets must be integers, got {start!r}, {end!r}"
    if not isinstance(label, str) or not label.strip() or label != label.strip():
        return f"entity label must be a non-empty name without surrounding spaces, got {label!r}"
    if label == OUTSIDE or " " in label:
        return f"entity label {label!r} is reserved or holds a space"
    if not 0 <= start < end <= len(text):
        return f"entity [{start}, {end}) falls outside the text ({len(text)} characters)"
    if start < previous_end:
        return f"entity [{start}, {end}) overlaps the one before it"
    if text[start:end] != text[start:end].strip():
        return f"entity [{start}, {end}) starts or ends with whitespace"
    cuts_start = (
        start > 0 and _is_word_character(text[start - 1]) and _is_word_character(text[start])
    )
    cuts_end = (
        end < len(text) and _is_word_character(text[end - 1]) and _is_word_character(text[end])
    )
    if cuts_start or cuts_end:
        return f"entity [{start}, {end}) ({text[start:end]!r}) cuts a word in two"
    return None


def _jsonl_text(lineno: int, obj: dict) -> TaggedText:
    text, spans = obj.get("text"), obj.get("entities", [])
    if not isinstance(text, str) or not text.strip():
        raise BadRow('expected a non-empty string "text"')
    if not isinstance(spans, list):
        raise BadRow('"entities" must be a list')
    ordered = sorted(
        spans, key=lambda s: (s.get("start", 0), s.get("end", 0)) if isinstance(s, dict) else (0, 0)
    )
    entities, previous_end = [], 0
    for span in ordered:
        problem = _span_problem(text, span, previous_end)
        if problem:
            raise BadRow(problem)
        entities.append(EntitySpan(span["start"], span["end"], span["label"]))
        previous_end = span["end"]
    return TaggedText(text, tuple(entities), lineno)


def _records(path: Path, fmt: str) -> Iterator[tuple[int, TaggedText | BadRow]]:
    with open(path, "rb") as handle:
        lines = decoded_lines(os.fspath(path), handle)
        if fmt == "conll":
            for _, rows in _conll_sentences(lines):
                yield _conll_text(rows)
            return
        for lineno, obj in json_objects(lines):
            if isinstance(obj, BadRow):
                yield lineno, obj
                continue
            try:
                yield lineno, _jsonl_text(lineno, obj)
            except BadRow as bad:
                yield lineno, bad


def read_entity_file(
    path: str | os.PathLike[str],
    *,
    file_format: str | None = None,
    labels: tuple[str, ...] | None = None,
    skip_bad_rows: bool = False,
) -> EntityFile:
    """Read a CoNLL or JSONL entity file; DataError (`path:line: reason`) on the first
    bad sentence unless `skip_bad_rows`. `labels` fixes the entity types and their order
    (an entity of another type is then a bad row); else the types come from the file, in
    the order first seen."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "no such file")
    fmt = file_format_of(path, file_format)
    texts, skipped, seen = [], [], list(labels or ())
    for lineno, record in _records(path, fmt):
        if isinstance(record, TaggedText) and labels is not None:
            unknown = sorted({e.label for e in record.entities} - set(labels))
            if unknown:
                record = BadRow(
                    f"entity type {unknown[0]!r} is not one of the given labels "
                    f"({', '.join(labels)})"
                )
        if isinstance(record, BadRow):
            if not skip_bad_rows:
                raise DataError(path, lineno, record.reason)
            skipped.append(lineno)
            continue
        texts.append(record)
        for entity in record.entities:
            if entity.label not in seen:
                seen.append(entity.label)
    if not texts:
        raise DataError(path, None, "no usable sentences (the file is empty or every one is bad)")
    return EntityFile(texts, skipped, tuple(seen))


def iob2_tags(types: tuple[str, ...]) -> tuple[str, ...]:
    """The tag set of a tagging task over `types`: O, then B- and I- of each type."""
    return (OUTSIDE, *[f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")])
