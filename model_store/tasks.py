"""What a task is, as data: the one definition that training, merging and serving share.

A task is named, has a kind and an input shape, and either label names or a value range:

    classification  one of N >= 2 labels          outputs: N logits -> softmax
    binary          a yes/no decision (2 labels)  outputs: 1 logit  -> sigmoid
    multilabel      any subset of N >= 1 labels   outputs: N logits -> N sigmoids, each
                                                  held to its label's threshold
    regression      a score within [low, high]    outputs: 1 value  -> clipped to the range
    embedding       the base's sentence embedding outputs: D values -> L2-normalised
                    (of one text; no tuned layers: it forks at the top of the frozen base)

Like `problem_type` and `id2label` in a transformers config, everything else follows
from the kind: the head's width, the loss, the metric, how raw outputs are read. The
definition is written into every branch (branch.json) and every store (manifest.json)
and read back from there, never re-listed in code. Torch-free: the service reads it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from model_store.quoting import quoted


@dataclass(frozen=True)
class Kind:
    """What a kind fixes, whichever task has it: the one list of kinds (see
    docs/kinds.md for the other two places a new kind touches: its head and loss in
    training/fit/objectives.py, its answer in service/answers.py)."""

    name: str
    metric: str  # the validation metric recorded in every branch
    trained: bool  # False: the base's own pooled output (K = 0)
    labelled: bool  # has label names (else a value range or dimensions)
    head_per_label: bool = False  # one output per label (else one output)
    ranks_pairs: bool = False  # its one output orders pairs: TEI's /rerank may use it


KIND_TABLE: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("classification", "accuracy", True, True, head_per_label=True),
        Kind("binary", "accuracy", True, True, ranks_pairs=True),
        Kind("multilabel", "micro_f1", True, True, head_per_label=True),
        Kind("regression", "pearson", True, False, ranks_pairs=True),
        # An embedding has no labelled data; its graphs are held to PyTorch by cosine.
        Kind("embedding", "cosine", False, False),
    )
}
KINDS = tuple(KIND_TABLE)
# Kinds a branch is trained for; an embedding is the base's own pooled output (K = 0).
TRAINED_KINDS = tuple(name for name, kind in KIND_TABLE.items() if kind.trained)
INPUTS = ("text", "pair")
# Task names appear in URLs, graph output names and metric labels: keep them plain.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,47}")
# A multilabel row's label set travels as a bitmask in one float32 label (exact to 2**24).
MAX_MULTILABELS = 24
DEFAULT_THRESHOLD = 0.5


class TaskDefinitionError(ValueError):
    """A task definition that is incomplete or contradicts itself (one readable line)."""


@dataclass(frozen=True)
class TaskDefinition:
    """One task: name, kind, input shape, and label names, value range or dimensions."""

    name: str
    kind: str
    input: str
    label_names: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    dimensions: int | None = None  # embedding: the vector's size (the base's hidden size)
    # multilabel: each label's decision threshold, tuned on validation (empty: 0.5 each)
    label_thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        problem = _problem_with(self)
        if problem:
            raise TaskDefinitionError(f"task {quoted(self.name)}: {problem}")

    @property
    def pair(self) -> bool:
        """Takes a sentence pair (cross-encoded) rather than one text."""
        return self.input == "pair"

    @property
    def kind_of(self) -> Kind:
        """The kind's definition (metric, head width, what it can answer)."""
        return KIND_TABLE[self.kind]

    @property
    def thresholds(self) -> tuple[float, ...]:
        """multilabel: each label's threshold (0.5 where none was tuned); else ()."""
        if self.kind != "multilabel":
            return ()
        return self.label_thresholds or (DEFAULT_THRESHOLD,) * len(self.label_names)

    @property
    def num_outputs(self) -> int:
        if self.kind == "embedding":
            return int(self.dimensions or 0)
        return len(self.label_names) if self.kind_of.head_per_label else 1

    @property
    def metric_name(self) -> str:
        return self.kind_of.metric

    def describe(self) -> str:
        """One line for logs and listings: 'topic: classification of text (3 labels)'."""
        if self.kind == "regression":
            low, high = self.value_range or (0.0, 0.0)
            return f"{self.name}: regression of {self.input} in [{low:g}, {high:g}]"
        if self.kind == "embedding":
            return f"{self.name}: embedding of {self.input} ({self.dimensions} dimensions)"
        return f"{self.name}: {self.kind} of {self.input} ({', '.join(self.label_names)})"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "input": self.input}
        if self.kind == "regression":
            data["range"] = list(self.value_range or ())
        elif self.kind == "embedding":
            data["dimensions"] = self.dimensions
        else:
            data["labels"] = list(self.label_names)
        if self.kind == "multilabel":
            data["thresholds"] = list(self.thresholds)
        return data

    @classmethod
    def from_json(cls, raw: Any) -> TaskDefinition:
        if not isinstance(raw, dict):
            raise TaskDefinitionError(f"a task definition must be an object, got {raw!r:.60}")
        known = {"name", "kind", "input", "labels", "range", "dimensions", "thresholds"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TaskDefinitionError(f"task definition has unknown keys {', '.join(unknown)}")
        value_range = raw.get("range")
        if value_range is not None:
            if not isinstance(value_range, list) or len(value_range) != 2:
                raise TaskDefinitionError(f"range must be [low, high], got {value_range!r:.60}")
            value_range = tuple(value_range)
        labels = raw.get("labels", [])
        if not isinstance(labels, list):
            raise TaskDefinitionError(f"labels must be a list, got {labels!r:.60}")
        thresholds = raw.get("thresholds", [])
        if not isinstance(thresholds, list):
            raise TaskDefinitionError(f"thresholds must be a list, got {thresholds!r:.60}")
        return cls(
            name=raw.get("name"),
            kind=raw.get("kind"),
            input=raw.get("input"),
            label_names=tuple(labels),
            value_range=value_range,
            dimensions=raw.get("dimensions"),
            label_thresholds=tuple(thresholds),
        )


def _problem_with(task: TaskDefinition) -> str | None:
    """What is wrong with a definition, or None; checked on every construction."""
    if not isinstance(task.name, str) or not NAME_PATTERN.fullmatch(task.name):
        return (
            "a task name is 1-48 characters of a-z, 0-9 and _, starting with a letter "
            f"(it appears in URLs and metric labels), got {quoted(task.name)}"
        )
    if task.kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}, got {quoted(task.kind)}"
    if task.input not in INPUTS:
        return f"input must be one of {', '.join(INPUTS)}, got {quoted(task.input)}"
    labels = task.label_names
    if task.label_thresholds and task.kind != "multilabel":
        return f"a {task.kind} task has no thresholds (they are a multilabel task's)"
    if task.kind == "embedding":
        if labels or task.value_range is not None:
            return "an embedding task has dimensions, not label names or a value range"
        if task.input != "text":
            return "an embedding task takes one text (a pair has no sentence embedding)"
        dims = task.dimensions
        if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
            return (
                f"an embedding task needs its dimensions (a positive integer), got {quoted(dims)}"
            )
        return None
    if task.dimensions is not None:
        return f"a {task.kind} task has no dimensions"
    if task.kind == "regression":
        if labels:
            return "a regression task has a value range, not label names"
        if task.value_range is None:
            return "a regression task needs a value range (low, high)"
        low, high = task.value_range
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            return f"range bounds must be numbers, got {quoted(task.value_range)}"
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            return f"range needs finite low < high, got [{low}, {high}]"
        return None
    if task.value_range is not None:
        return f"a {task.kind} task has label names, not a value range"
    if not all(isinstance(label, str) and label.strip() for label in labels):
        return "label names must be non-empty strings"
    if len(set(labels)) != len(labels):
        return f"label names must be distinct, got {', '.join(labels)}"
    if task.kind == "binary" and len(labels) != 2:
        return f"a binary task has exactly 2 labels (negative, positive), got {len(labels)}"
    if task.kind == "classification" and len(labels) < 2:
        return f"a classification task needs at least 2 labels, got {len(labels)}"
    if task.kind == "multilabel":
        return _threshold_problem(task)
    return None


def _threshold_problem(task: TaskDefinition) -> str | None:
    labels, thresholds = task.label_names, task.label_thresholds
    if not 1 <= len(labels) <= MAX_MULTILABELS:
        return f"a multilabel task has 1 to {MAX_MULTILABELS} labels, got {len(labels)}"
    if any("|" in label for label in labels):
        return "multilabel label names cannot hold '|' (it separates them in data files)"
    if thresholds and len(thresholds) != len(labels):
        return f"a multilabel task has one threshold per label, got {len(thresholds)}"
    for value in thresholds:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not 0.0 < value < 1.0:
            return f"a threshold is a probability strictly between 0 and 1, got {quoted(value)}"
    return None
