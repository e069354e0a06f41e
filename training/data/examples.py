"""The rows every task reads: :class:`Example`, the :class:`Columns` they come from, and
:class:`DataError`, the one-line ``path:line: reason`` every data problem is reported as.

Torch-free (standard library only), like all of ``training.data``, so that data problems
can be found, tested and reported without the training stack installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class DataError(ValueError):
    """A malformed input file or row.

    ``str(err)`` is one readable line, ``'<path>:<line>: <reason>'`` (or ``'<path>: <reason>'``
    for file-level problems such as a missing file or column, where ``line`` is ``None``).
    That is the format compilers and editors understand, so the location is clickable.
    It subclasses :class:`ValueError` so callers that only care about "bad input" can catch
    the broader type.
    """

    path: str
    line: int | None
    reason: str

    def __init__(self, path: str | os.PathLike[str], line: int | None, reason: str) -> None:
        # Keep the message on one line even if a reason quotes text with newlines.
        reason = reason.replace("\r", "\\r").replace("\n", "\\n")
        path = os.fspath(path)
        # Passing all three to ValueError keeps the exception picklable (cls(*args)), which
        # matters when a data error is raised inside a worker process.
        super().__init__(path, line, reason)
        self.path = path
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Example:
    """One validated row.

    ``label`` is always a float: a class index (0.0, 1.0, ...) for classification tasks, a
    score for regression tasks, so every task shares one type. ``line`` is the 1-based
    physical line where the row starts in its file, kept for tracing predictions and errors
    back to the source.
    """

    text_a: str
    text_b: str | None
    label: float
    line: int


@dataclass(frozen=True)
class Columns:
    """Which columns (TSV/CSV header names, or JSONL keys) hold the texts and the label.

    ``text_b`` is ``None`` for single-sentence tasks. Columns are named rather than indexed
    because the shared files carry extra columns (an unnamed row index, an ``id``).
    """

    text_a: str
    text_b: str | None
    label: str


# Columns a user's file is read from unless the column options say otherwise.
CUSTOM_COLUMNS = Columns(text_a="text", text_b=None, label="label")


def preview(value: str, limit: int = 40) -> str:
    """repr() of a value, shortened so a reason stays readable on one line."""
    if len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)
