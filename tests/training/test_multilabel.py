"""The multilabel kind, piece by piece on data the tests write: its definition (labels,
thresholds), its label column ('|'-separated names or a JSON list, bad rows as
path:line), its loss, its metrics (micro and macro F1), its threshold rule, its paired
test, and its answers as the service and the scorer give them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from model_store.tasks import KIND_TABLE, TRAINED_KINDS, TaskDefinition, TaskDefinitionError
from training.data.examples import Columns, DataError
from training.data.labels import label_mask, label_set
from training.data.readers import read_examples
from training.evaluate import multilabel

NAMES = ("funny", "sad", "long")
TAGS = TaskDefinition("tags", "multilabel", "text", NAMES)


def test_definition_round_trips_with_its_thresholds() -> None:
    assert TAGS.thresholds == (0.5, 0.5, 0.5) and TAGS.num_outputs == 3
    assert TAGS.metric_name == "micro_f1" and "multilabel" in TRAINED_KINDS
    tuned = TaskDefinition("tags", "multilabel", "text", NAMES, label_thresholds=(0.3, 0.5, 0.9))
    raw = tuned.to_json()
    assert raw["thresholds"] == [0.3, 0.5, 0.9]
    assert TaskDefinition.from_json(raw) == tuned
    assert "thresholds" not in TaskDefinition("s", "binary", "text", ("n", "p")).to_json()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"label_names": ()}, "1 to 24 labels"),
        ({"label_names": tuple(f"l{i}" for i in range(25))}, "1 to 24 labels"),
        ({"label_names": ("a|b", "c")}, "'|'"),
        ({"label_thresholds": (0.5,)}, "one threshold per label"),
        ({"label_thresholds": (0.5, 1.0, 0.5)}, "strictly between 0 and 1"),
    ],
)
def test_bad_multilabel_definitions_are_one_line(fields: dict, says: str) -> None:
    values = {"name": "tags", "kind": "multilabel", "input": "text", "label_names": NAMES}
    with pytest.raises(TaskDefinitionError, match=says):
        TaskDefinition(**(values | fields))


def test_only_multilabel_tasks_have_thresholds() -> None:
    with pytest.raises(TaskDefinitionError, match="no thresholds"):
        TaskDefinition("s", "classification", "text", ("a", "b"), label_thresholds=(0.5, 0.5))


def test_every_kind_is_defined_once() -> None:
    assert set(KIND_TABLE) == {"classification", "binary", "multilabel", "regression", "embedding"}


def test_label_sets_parse_to_bitmasks_and_unknown_names_are_errors() -> None:
    parse = label_set(NAMES)
    assert parse("funny|long") == 0b101 and parse(" sad ") == 0b010 and parse("") == 0
    assert label_mask(NAMES, parse("long|funny")) == ("funny", "long")
    for raw in ("happy", "funny|", "funny||sad"):
        with pytest.raises(ValueError):
            parse(raw)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_and_jsonl_label_columns(tmp_path: Path) -> None:
    columns = Columns("text", None, "tags")
    csv = _write(tmp_path / "t.csv", 'text,tags\nok one,funny|sad\nnone,\nlong one,"long"\n')
    loaded = read_examples(csv, columns, label_set(NAMES))
    assert [e.label for e in loaded.examples] == [0b011, 0, 0b100]
    rows = [{"text": "a", "tags": ["sad", "long"]}, {"text": "b", "tags": []}]
    jsonl = _write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    assert [e.label for e in read_examples(jsonl, columns, label_set(NAMES)).examples] == [6, 0]


def test_unknown_names_are_path_line_or_skipped_and_counted(tmp_path: Path) -> None:
    columns = Columns("text", None, "tags")
    csv = _write(tmp_path / "bad.csv", "text,tags\nfine,funny\nbad,funny|happy\nok,sad\n")
    with pytest.raises(DataError) as caught:
        read_examples(csv, columns, label_set(NAMES))
    assert str(caught.value).startswith(f"{csv}:3: ") and "'happy'" in str(caught.value)
    loaded = read_examples(csv, columns, label_set(NAMES), skip_bad_rows=True)
    assert [e.label for e in loaded.examples] == [1, 2] and loaded.skipped_lines == [3]


def test_micro_and_macro_f1() -> None:
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    decided = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
    # micro: 2 right, 3 predicted, 3 true; macro: funny 1, sad 0, long 0
    assert math.isclose(multilabel.micro_f1(truth, decided), 2 * 2 / 6)
    assert math.isclose(multilabel.macro_f1(truth, decided), 1 / 3)
    labels = np.array([0b001, 0b011, 0], dtype=np.float32)
    assert (multilabel.multi_hot(labels, 3) == truth).all()


def test_thresholds_maximise_each_labels_f1_and_stay_at_half_when_few_positives() -> None:
    rng = np.random.default_rng(0)
    n = 40
    positives = np.arange(n) < 20
    # label 0: positives at probability 0.2-0.3, negatives at 0.05-0.15: the best cut is
    # between them, far below 0.5; label 1 has 3 positives: too few to tune.
    p0 = np.where(positives, rng.uniform(0.2, 0.3, n), rng.uniform(0.05, 0.15, n))
    p1 = rng.uniform(0.0, 1.0, n)
    mask = positives.astype(np.int64) | ((np.arange(n) < 3).astype(np.int64) << 1)
    logits = np.log(np.stack([p0, p1], axis=1) / (1 - np.stack([p0, p1], axis=1)))
    thresholds = multilabel.tune_thresholds(logits, mask.astype(np.float32), 2)
    assert 0.15 < thresholds[0] < 0.2 and thresholds[1] == 0.5
    scores = multilabel.f1_scores(logits[:, :1], (mask & 1).astype(np.float32), thresholds[:1])
    assert scores["micro_f1"] == 1.0


def test_the_paired_test_is_a_bootstrap_over_rows() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 3))
    labels = rng.integers(0, 8, size=50).astype(np.float32)
    same = multilabel.f1_comparison(labels, (0.5,) * 3, logits, logits)
    assert same["test"] == "paired_bootstrap" and same["loss_points"] == 0
    assert same["loss_interval_points"] == [0.0, 0.0] and same["disagreement"] == 0
    worse = multilabel.f1_comparison(labels, (0.5,) * 3, logits, -logits)
    assert worse["rows"] == 50 and worse["disagreement"] > 0.5
    assert (
        worse["loss_interval_points"][0] <= worse["loss_points"] <= worse["loss_interval_points"][1]
    )


def test_the_loss_is_binary_cross_entropy_per_label() -> None:
    torch = pytest.importorskip("torch")
    from training.fit.objectives import task_spec

    spec = task_spec(TAGS)
    outputs = torch.tensor([[2.0, -1.0, 0.5]])
    loss = spec.loss(outputs, torch.tensor([0b101], dtype=torch.float32))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        outputs, torch.tensor([[1.0, 0.0, 1.0]])
    )
    assert torch.isclose(loss, expected)
    assert spec.parse_label("sad") == 2.0
    assert spec.metric(outputs.numpy(), np.array([0b101], dtype=np.float32)) == 1.0


def test_the_report_captions_a_multilabel_task() -> None:
    pytest.importorskip("matplotlib")
    from training.report import page

    assert "3 labels" in page.caption(TAGS) and "every label" in page.caption(TAGS)


def test_a_variant_of_a_multilabel_task_gets_the_bootstrap() -> None:
    from training.evaluate.paired_test import compare_with_reference

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(40, 3))

    result = SimpleNamespace(  # what the paired test reads of a scored task
        task=SimpleNamespace(definition=TAGS),
        labels=rng.integers(0, 8, size=40).astype(np.float32),
        outputs={"fp32": logits, "int8": logits + 0.01},
    )
    comparison = compare_with_reference(result, "int8")
    assert comparison["test"] == "paired_bootstrap" and comparison["rows"] == 40
