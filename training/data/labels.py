"""Label parsers: a task's raw label strings -> floats, refusing what no one meant.

A class index, a class name, a binary decision (0/1, true/false or its two names) or a
score within a range; anything else is a ``ValueError`` whose message the readers turn
into a ``path:line: reason``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from training.data.examples import preview as _preview

# Plain decimal numbers only. float() alone would also accept "nan", "inf", "1_0" (= 10.0)
# and non-ASCII digits, none of which is a label anyone meant to write.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

LabelParser = Callable[[str], float]
"""Turns a raw label string into a float; raises ``ValueError(reason)`` if it is invalid."""


def _parse_number(raw: str) -> float:
    """Parse a plain, finite decimal number (surrounding whitespace allowed)."""
    text = raw.strip()
    if not text:
        raise ValueError("empty label")
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{_preview(text)} is not a number")
    value = float(text)
    if not math.isfinite(value):  # e.g. "1e999"
        raise ValueError(f"{_preview(text)} is not a finite number")
    return value


# The parsers are small frozen dataclasses rather than closures so that they are picklable
# (worker processes) and print as e.g. ClassLabel(num_classes=5) in logs and configs.


@dataclass(frozen=True)
class _ClassLabel:
    num_classes: int

    def __call__(self, raw: str) -> float:
        value = _parse_number(raw)
        if not value.is_integer():
            raise ValueError(f"{_preview(raw.strip())} is not a whole class index")
        if not 0 <= value < self.num_classes:
            raise ValueError(f"class index {int(value)} is out of range 0..{self.num_classes - 1}")
        return float(int(value))  # int() also turns -0.0 into 0.0


@dataclass(frozen=True)
class _NamedClassLabel:
    """A label given by name or by 0-based index into `names`."""

    names: tuple[str, ...]

    def __call__(self, raw: str) -> float:
        text = raw.strip()
        if text in self.names:
            return float(self.names.index(text))
        try:
            return _ClassLabel(len(self.names))(text)
        except ValueError:
            shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
            raise ValueError(
                f"{_preview(text)} is neither a label name ({shown}) "
                f"nor an index 0..{len(self.names) - 1}"
            ) from None


@dataclass(frozen=True)
class _BinaryLabel:
    names: tuple[str, ...] = ()

    def __call__(self, raw: str) -> float:
        text = raw.strip()
        lowered = text.lower()
        if text in self.names:
            return float(self.names.index(text))
        if lowered == "true":
            return 1.0
        if lowered == "false":
            return 0.0
        value = _parse_number(text)
        if value not in (0.0, 1.0):
            raise ValueError("expected 0, 1, true or false")
        return 1.0 if value == 1.0 else 0.0


# Separates a multilabel row's names in a CSV/TSV cell ("sports|politics").
LABEL_SEPARATOR = "|"


@dataclass(frozen=True)
class _LabelSet:
    """Any subset of `names`, by name, as a bitmask (bit i: names[i]); empty: none.
    One float carries it so that every kind shares `Example.label` (exact to 2**24:
    model_store.tasks caps a multilabel task's labels)."""

    names: tuple[str, ...]
    allows_empty: bool = True

    def __call__(self, raw: str) -> float:
        mask = 0
        for part in raw.split(LABEL_SEPARATOR):
            name = part.strip()
            if not name and not raw.strip():
                continue
            if name not in self.names:
                shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
                raise ValueError(f"{_preview(name)} is not a label name ({shown})")
            mask |= 1 << self.names.index(name)
        return float(mask)


def label_set(names: Sequence[str]) -> LabelParser:
    """Parser for a multilabel row: label names separated by '|' (empty: no label);
    an unknown or empty name is an error, never dropped."""
    if not names or len(set(names)) != len(names):
        raise ValueError(f"need distinct label names, got {list(names)!r}")
    return _LabelSet(tuple(names))


def label_mask(names: Sequence[str], value: float) -> tuple[str, ...]:
    """The names a `label_set` bitmask holds, in the task's order (for reports, tests)."""
    return tuple(name for i, name in enumerate(names) if int(value) >> i & 1)


@dataclass(frozen=True)
class _ScoreLabel:
    low: float
    high: float

    def __call__(self, raw: str) -> float:
        value = _parse_number(raw)
        if not self.low <= value <= self.high:
            raise ValueError(f"score {value:g} is outside [{self.low:g}, {self.high:g}]")
        return value


def class_label(num_classes: int) -> LabelParser:
    """Parser for a class index in ``0..num_classes-1``.

    Accepts ``"3"``, ``"3.0"`` and ``" 3 "`` (files written by pandas often store classes as
    floats); rejects empty strings, fractional values such as ``"2.5"``, out-of-range indices
    and non-numbers instead of rounding or clamping them.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return _ClassLabel(num_classes)


def binary_label(names: Sequence[str] = ()) -> LabelParser:
    """Parser for a binary label: ``0``/``1``/``0.0``/``1.0``/``true``/``false``, or one of
    the two label ``names`` (negative first).

    The words are case-insensitive (JSON booleans arrive as ``"True"``/``"False"``). Anything
    else, including an empty string, is rejected.
    """
    return _BinaryLabel(tuple(names))


def named_class_label(names: Sequence[str]) -> LabelParser:
    """Parser for a class given by its name (exactly, after stripping) or its 0-based
    index; anything else is an error naming the labels, never a guess."""
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"need at least 2 distinct label names, got {list(names)!r}")
    return _NamedClassLabel(tuple(names))


def score_label(low: float, high: float) -> LabelParser:
    """Parser for a real-valued score within ``[low, high]`` (inclusive).

    Rejects empty strings, ``nan``, infinities and values out of range: a score outside the
    documented scale means the row is corrupt, not that it should be clipped.
    """
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"need finite low < high, got low={low!r}, high={high!r}")
    return _ScoreLabel(float(low), float(high))
