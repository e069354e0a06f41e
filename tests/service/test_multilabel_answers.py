"""A multilabel task's answer from its raw outputs, as every reader gives it (torch-free):
one sigmoid per label, the names at or over their own thresholds, the result body of
/v1/tasks/{task}, the Open Inference Protocol's outputs and the scorer's columns."""

from __future__ import annotations

import numpy as np
from scoring.core import answer_columns

from model_store.manifest import TaskEntry
from model_store.tasks import TaskDefinition
from service.answers import answer
from service.engine import Prediction, postprocess
from service.inference import TaskResult
from service.protocols import kserve_v2
from service.routes.tasks import task_result

TASK = TaskEntry(
    definition=TaskDefinition(
        "tags", "multilabel", "text", ("funny", "sad", "long"), label_thresholds=(0.3, 0.5, 0.9)
    ),
    task_id=0,
    output="tags",
    branch_version="v1",
    layers=1,
    pooling="mean",
    validation={},
    fork_depth=1,
)
# sigmoid: 0.4 (>= 0.3: on), 0.5 (at 0.5: on), 0.8 (< 0.9: off)
RAW = np.log(np.array([0.4, 0.5, 0.8]) / (1 - np.array([0.4, 0.5, 0.8])))


def test_each_label_is_held_to_its_own_threshold() -> None:
    values = postprocess(TASK, RAW)
    np.testing.assert_allclose(values, [0.4, 0.5, 0.8])
    assert answer(TASK, values) == {
        "label_names": ["funny", "sad"],
        "probabilities": list(values),
        "thresholds": [0.3, 0.5, 0.9],
    }


def test_result_body_v2_outputs_and_scorer_columns() -> None:
    prediction = Prediction("tags", postprocess(TASK, RAW), False, raw=RAW)
    result = TaskResult(TASK, prediction, "store-1")
    body = task_result(result).model_dump()
    assert body["kind"] == "multilabel" and body["label_names"] == ["funny", "sad"]
    decided = kserve_v2._values(TASK, [result, result], "decisions")
    assert decided.shape == (2, 3) and decided[0].tolist() == [True, True, False]
    assert kserve_v2._values(TASK, [result], "probabilities").shape == (1, 3)
    meta = {m.name: m.shape for m in kserve_v2._output_meta(TASK)}
    assert meta == {"probabilities": [-1, 3], "decisions": [-1, 3]}
    assert answer_columns([TASK])[:3] == [
        "tags_label_names",
        "tags_probabilities",
        "tags_thresholds",
    ]
