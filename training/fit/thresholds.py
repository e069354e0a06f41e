"""After training a multilabel branch: its per-label thresholds, tuned on the kept
epoch's validation outputs and written into the task definition the branch records
(branch.json), so the store, the service and the scorer answer with them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from training.data.examples import Example
from training.evaluate import multilabel
from training.fit.objectives import TaskSpec, task_spec
from training.fit.trainer import TrainResult, labels_of

RULE = (
    f"per label, the cut maximising its validation F1; 0.5 with fewer than "
    f"{multilabel.MIN_POSITIVES_TO_TUNE} positive validation rows"
)


def with_tuned_thresholds(result: TrainResult, spec: TaskSpec, val: Sequence[Example]) -> TaskSpec:
    """The spec (and the result's model) with thresholds tuned on `val`."""
    labels = labels_of(val).numpy()
    thresholds = multilabel.tune_thresholds(result.val_outputs, labels, spec.num_outputs)
    tuned = task_spec(replace(spec.definition, label_thresholds=thresholds))
    result.model.spec = tuned
    return tuned


def tuned_summary(result: TrainResult, spec: TaskSpec, val: Sequence[Example]) -> dict:
    """The validation figures at the tuned thresholds (micro F1 is the task's metric)."""
    labels = labels_of(val).numpy()
    scores = multilabel.f1_scores(result.val_outputs, labels, spec.definition.thresholds)
    return {
        "value": scores["micro_f1"],
        "macro_f1": scores["macro_f1"],
        "value_at_0.5": result.best.val_metric,
        "thresholds": list(spec.definition.thresholds),
        "threshold_rule": RULE,
    }
