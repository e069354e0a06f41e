"""A task's answer for one row, by the task's kind: the one place that reads it.

The engine turns a head's raw outputs into values (probabilities, a probability, a
score: `service.engine.postprocess`); this turns those values into the fields an
answer has. The HTTP routes and the offline scorer (`scoring/`) both call it, so a
file scored offline gets exactly the answers `/v1/tasks/{task}` gives. Torch- and
HTTP-free on purpose: the scorer and its Ray workers import it without the web stack.
"""

from __future__ import annotations

import numpy as np

from model_store.manifest import TaskEntry

# The answer fields of each kind, in the order a row's columns are written.
FIELDS: dict[str, tuple[str, ...]] = {
    "classification": ("label", "label_name", "probabilities"),
    "binary": ("decision", "label_name", "probability"),
    "multilabel": ("label_names", "probabilities", "thresholds"),
    "regression": ("score",),
    "embedding": ("embedding",),
}


def normalized(values: np.ndarray) -> np.ndarray:
    """An embedding L2-normalised as sentence-transformers' Normalize module does
    (x / max(|x|, 1e-12)), in float32."""
    vector = np.asarray(values, dtype=np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def label_of(task: TaskEntry, values: np.ndarray) -> int:
    """Classification: the most probable label's index; binary: 1 if positive."""
    if task.kind == "binary":
        return int(values[0] >= 0.5)
    return int(values.argmax())


def decisions(task: TaskEntry, values: np.ndarray) -> np.ndarray:
    """Multilabel: for each label, whether its probability is at or over its threshold."""
    return np.asarray(values) >= np.asarray(task.definition.thresholds)


def answer(task: TaskEntry, values: np.ndarray) -> dict[str, object]:
    """The answer fields of one row (FIELDS[task.kind], in that order) from its values."""
    if task.kind == "classification":
        label = label_of(task, values)
        return {
            "label": label,
            "label_name": task.label_names[label],
            "probabilities": [float(p) for p in values],
        }
    if task.kind == "binary":
        label = label_of(task, values)
        return {
            "decision": bool(label),
            "label_name": task.label_names[label],
            "probability": float(values[0]),
        }
    if task.kind == "multilabel":
        chosen = decisions(task, values)
        return {
            "label_names": [n for n, on in zip(task.label_names, chosen, strict=True) if on],
            "probabilities": [float(p) for p in values],
            "thresholds": list(task.definition.thresholds),
        }
    if task.kind == "embedding":
        return {"embedding": normalized(values).tolist()}
    return {"score": float(values[0])}
