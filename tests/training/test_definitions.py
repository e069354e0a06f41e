"""Task definitions are checked wherever they enter: a preset's name with another
definition, a contradicting head width, or a metric the graph does not reproduce is
refused at publish (leaving nothing behind) and at start-up / reload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_store.manifest import StoreError
from model_store.presets import (
    METRIC_TOLERANCE,
    PRESET_DEFINITIONS,
    DefinitionError,
    check_metrics,
    check_presets,
)
from model_store.repository import BRANCHES_DIR, resolve_store
from model_store.tasks import TaskDefinition, TaskDefinitionError
from service.engine import Engine, EngineConfig
from tests.support.manifests import rewrite_manifest
from training.commands import store as store_cli
from training.data.presets import PRESETS
from training.errors import MergeError
from training.fit.branch import BranchError, load_branch, read_branch_info
from training.graph.merge import LoadedBranch, publish_store

CPU = EngineConfig(graph="fp32", provider="cpu")


def _task(raw: dict, name: str) -> dict:
    return next(t for t in raw["tasks"] if t["definition"]["name"] == name)


def test_training_presets_are_the_stores_presets() -> None:
    assert {n: p.definition for n, p in PRESETS.items()} == PRESET_DEFINITIONS


@pytest.mark.parametrize(
    "definition",
    [
        TaskDefinition("similarity", "regression", "pair", value_range=(-1.0, 6.0)),
        TaskDefinition(
            "sentiment", "classification", "pair", PRESET_DEFINITIONS["sentiment"].label_names
        ),
        TaskDefinition("paraphrase", "regression", "pair", value_range=(0.0, 1.0)),
        TaskDefinition("similarity", "binary", "pair", ("low", "high")),
    ],
)
def test_a_presets_name_with_another_definition_is_refused(definition) -> None:
    with pytest.raises(DefinitionError, match=f"task {definition.name} is a preset"):
        check_presets([definition])
    check_presets([PRESET_DEFINITIONS[definition.name]])
    check_presets([TaskDefinition("topic", "regression", "pair", value_range=(-1.0, 6.0))])


@pytest.mark.parametrize("value_range", [[6.0, -1.0], [2.0, 2.0], [], [1.0]])
def test_an_inverted_or_empty_range_is_refused(value_range) -> None:
    raw = {"name": "topic", "kind": "regression", "input": "pair", "range": value_range}
    with pytest.raises(TaskDefinitionError):
        TaskDefinition.from_json(raw)


def test_a_recorded_metric_the_graph_does_not_reproduce_is_refused() -> None:
    validation = {"metric": "accuracy", "value": 0.513}
    check_metrics([("sentiment", validation)], {"tasks": {"sentiment": {"fp32": 0.5141}}})
    check_metrics([("sentiment", validation)], {"unavailable": "no data"})
    check_metrics([("sentiment", {})], {"tasks": {"sentiment": {"fp32": 0.458}}})
    with pytest.raises(DefinitionError, match="pooling or kind does not match"):
        check_metrics([("sentiment", validation)], {"tasks": {"sentiment": {"fp32": 0.458}}})
    assert METRIC_TOLERANCE < 0.513 - 0.458


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            lambda raw: _task(raw, "similarity")["definition"].__setitem__("range", [-1, 6]),
            "preset",
        ),
        (lambda raw: _task(raw, "sentiment")["definition"].__setitem__("input", "pair"), "preset"),
        (
            lambda raw: (
                _task(raw, "sentiment")["validation"].update(metric="accuracy", value=0.9),
                raw.__setitem__("variant_metrics", {"tasks": {"sentiment": {"fp32": 0.2}}}),
            ),
            "pooling or kind does not match",
        ),
    ],
)
def test_start_up_and_reload_refuse_a_contradicting_definition(tiny_store, tmp_path, edit, says):
    copy = Path(shutil.copytree(tiny_store, tmp_path / "copy"))
    rewrite_manifest(copy, edit)
    with pytest.raises(StoreError, match=says):
        Engine.load_store(copy, CPU)


def _edited_branch(branch: Path, tmp_path: Path, edit) -> Path:
    copy = Path(shutil.copytree(branch, tmp_path / "edited" / branch.parent.name / branch.name))
    meta = json.loads((copy / "branch.json").read_text())
    edit(meta)
    (copy / "branch.json").write_text(json.dumps(meta))
    return copy


def test_publish_refuses_a_redefined_preset_and_leaves_nothing(tiny, repository, tmp_path):
    branch = tiny.make("similarity", 60)
    bad = _edited_branch(branch, tmp_path, lambda m: m["definition"].__setitem__("range", [-1, 6]))
    args = ["publish", "--store", str(repository), "--base-model", str(tiny.base_dir)]
    before = resolve_store(repository)
    with pytest.raises(MergeError, match="task similarity is a preset"):
        store_cli.main([*args, "--branch", str(bad)])
    assert resolve_store(repository) == before
    assert not (repository / BRANCHES_DIR / "similarity" / read_branch_info(bad).version).exists()
    assert store_cli.main([*args, "--branch", str(branch)]) == 0  # the corrected one


def test_labels_that_do_not_match_the_head_are_refused(tiny, tmp_path) -> None:
    branch = tiny.make("sentiment", 61)
    bad = _edited_branch(
        branch,
        tmp_path,
        lambda m: m["definition"].__setitem__("labels", [*m["definition"]["labels"], "sixth"]),
    )
    with pytest.raises(BranchError, match="does not fit"):
        load_branch(bad, tiny.base)


def test_publish_refuses_a_metric_it_cannot_reproduce(tiny, tmp_path) -> None:
    branch = LoadedBranch(*load_branch(tiny.make("paraphrase", 62), tiny.base))
    recorded = {**branch.info.meta, "validation": {"metric": "accuracy", "value": 0.9}}
    branch = LoadedBranch(branch.model, type(branch.info)(branch.info.path, recorded))
    out = tmp_path / "store"

    def measured(manifest):
        return {"tasks": {"paraphrase": {"fp32": 0.5, "metric": "accuracy"}}}

    with pytest.raises(MergeError, match=r"scores 0\.5000 accuracy"):
        publish_store(tiny.base, [branch], out, ("fp32",), metrics=measured)
    assert not out.exists() and not list(tmp_path.glob(".store*"))
