"""Where a task's examples come from (a file, its columns and format), as recorded in
every branch so that evaluation later reads the very data training read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.data.examples import Columns
from training.data.labels import LabelParser
from training.data.readers import LoadResult, read_examples


@dataclass(frozen=True)
class DatasetFile:
    """A preset's default train file (in ``--data-dir``) and the columns it reads."""

    filename: str
    columns: Columns


@dataclass(frozen=True)
class DataSource:
    """Where a task's examples come from: a file, its columns and format.

    Recorded in every branch, so that evaluating the branch (or a store built from it)
    later reads the very data it was trained and validated on, never a default file.
    """

    path: Path
    columns: Columns
    file_format: str | None = None
    skip_bad_rows: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "columns": {
                "text_a": self.columns.text_a,
                "text_b": self.columns.text_b,
                "label": self.columns.label,
            },
            "format": self.file_format,
            "skip_bad_rows": self.skip_bad_rows,
        }

    @classmethod
    def from_json(cls, raw: dict) -> DataSource:
        columns = raw["columns"]
        return cls(
            path=Path(raw["path"]),
            columns=Columns(columns["text_a"], columns.get("text_b"), columns["label"]),
            file_format=raw.get("format"),
            skip_bad_rows=bool(raw.get("skip_bad_rows", False)),
        )

    def read(self, parse_label: LabelParser, limit: int | None = None) -> LoadResult:
        return read_examples(
            self.path,
            self.columns,
            parse_label,
            file_format=self.file_format,
            skip_bad_rows=self.skip_bad_rows,
            limit=limit,
        )
