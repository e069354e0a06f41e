"""The graph a repository serves is decided at publish and kept: a publish whose figures
would switch it (and so every other task's answers) is refused in one line unless the
operator says `keep` or `update`; the service serves the record. End to end, with real
publishes into copies of the shipped models: tests/training/test_publish_isolation.py."""

from __future__ import annotations

import dataclasses

import pytest

from model_store.graph_choice import SERVED_KEY, choose_graph
from model_store.manifest import Manifest
from tests.model_store.test_graph_choice import manifest_with, mcnemar, with_tests
from training.errors import UsageError
from training.graph.graph_policy import decide_served_graphs

KEEPS = with_tests(mcnemar(4, 4))  # int8 loses nothing anywhere
LOSES = with_tests(mcnemar(40, 2))  # int8 loses 3.8 points of sentiment, p < 0.001


def published(metrics: dict, record: dict | None = None) -> Manifest:
    manifest = manifest_with(metrics)
    if record is not None:
        manifest.extra[SERVED_KEY] = record
    return manifest


def decide(previous: Manifest | None, new: Manifest, changed=("sentiment",), choice=None):
    return decide_served_graphs(previous, changed, choice, 1.0)(new)


def test_a_new_repository_records_what_its_figures_choose() -> None:
    record = decide(None, published(KEEPS))
    assert record["cpu"]["variant"] == "int8" and record["cuda"]["variant"] == "fp16"
    assert record["cpu"]["tolerance_points"] == 1.0
    assert decide(None, published(LOSES))["cpu"]["variant"] == "fp32"


def test_a_publish_that_would_switch_the_graph_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError) as refused:
        decide(published(KEEPS), published(LOSES))
    message = str(refused.value)
    assert "\n" not in message
    assert "from int8 to fp32" in message and "paraphrase, similarity" in message
    assert "--graph-choice keep" in message and "--graph-choice update" in message
    assert "sentiment: loss 3.80 points" in message  # why, with the deciding figures


def test_keep_serves_the_previous_graph_and_update_the_new_one() -> None:
    kept = decide(published(KEEPS), published(LOSES), choice="keep")
    assert kept["cpu"]["variant"] == "int8"
    assert "kept by --graph-choice keep" in kept["cpu"]["reason"]
    assert decide(published(KEEPS), published(LOSES), choice="update")["cpu"]["variant"] == "fp32"


def test_a_kept_choice_survives_later_publishes_whose_verdict_did_not_move() -> None:
    kept = decide(published(KEEPS), published(LOSES), choice="keep")
    previous = published(LOSES, kept)
    later = decide(previous, published(LOSES), changed=("paraphrase",))
    assert later["cpu"]["variant"] == "int8"  # no --graph-choice needed again


def test_a_publish_replacing_every_task_is_free_to_choose() -> None:
    with pytest.raises(UsageError):  # similarity is still there
        decide(published(KEEPS), published(LOSES), changed=("sentiment", "paraphrase"))
    everything = ("sentiment", "paraphrase", "similarity")
    assert decide(published(KEEPS), published(LOSES), everything)["cpu"]["variant"] == "fp32"


def test_unmeasurable_new_graphs_are_refused_naming_data_dir() -> None:
    unmeasured = published({"unavailable": "validation data not readable at publish (x)"})
    with pytest.raises(UsageError, match="pass --data-dir DIR"):
        decide(published(KEEPS), unmeasured)


def test_the_service_serves_the_record_at_its_tolerance_and_decides_again_at_another() -> None:
    kept = decide(published(KEEPS), published(LOSES), choice="keep")
    served = published(LOSES, kept)
    choice = choose_graph(served, cuda=False, tolerance_points=1.0)
    assert choice.variant == "int8" and choice.reason.startswith("recorded at publish: ")
    assert choose_graph(served, cuda=False, tolerance_points=2.0).variant == "fp32"
    # A record naming a graph the store lacks is ignored, not served.
    lacking = dataclasses.replace(served, graphs={"fp32": "model.onnx"})
    assert choose_graph(lacking, cuda=False, tolerance_points=1.0).variant == "fp32"
