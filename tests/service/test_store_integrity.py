"""A store whose manifest is consistently wrong (re-sealed) is refused by its probe
answers: permuted task ids, swapped outputs, another graph, edited probes; at start-up
(one line, exit 2) and at reload (409, the old model keeps serving)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_store import probes
from model_store.manifest import StoreError, load_manifest, sha256_of
from model_store.repository import set_current
from service.client import Client
from service.engine import Engine, EngineConfig
from tests.support.commands import assert_one_line_error, run
from tests.support.live_repository import probe, reload
from tests.support.manifests import rewrite_manifest

CPU = EngineConfig(graph="fp32", provider="cpu")


def _fp32_and_int8(directory: Path) -> None:
    from tests.support.tiny_store import build_tiny_store

    build_tiny_store(directory, variants=("fp32", "int8"))


def _mean_pooling(directory: Path) -> None:
    from tests.support.tiny_store import build_tiny_store

    build_tiny_store(directory, pooling="mean")


@pytest.fixture(scope="module")
def store(stores) -> Path:
    return stores.get("tiny-int8", _fp32_and_int8) / "store"


def _copy(store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(store, tmp_path / "copy"))


def _swap_first_two(raw: dict) -> None:
    """What a buggy publisher could write: tasks 0 and 1 trade ids and places."""
    tasks = raw["tasks"]
    tasks[0]["task_id"], tasks[1]["task_id"] = 1, 0
    tasks[0], tasks[1] = tasks[1], tasks[0]


def _swap_outputs(raw: dict) -> None:
    """paraphrase and similarity (both one value wide) read each other's head."""
    by_name = {t["definition"]["name"]: t for t in raw["tasks"]}
    a, b = by_name["paraphrase"], by_name["similarity"]
    a["output"], b["output"] = b["output"], a["output"]


def test_publish_records_probes_that_the_graphs_reproduce(store: Path) -> None:
    manifest = load_manifest(store)
    recorded = manifest.extra[probes.PROBES_KEY]
    assert set(recorded["tasks"]) == {"sentiment", "paraphrase", "similarity"}
    assert len(recorded["tasks"]["sentiment"]["outputs"][0]) == 5
    assert len(recorded["tasks"]["paraphrase"]["inputs"][0]) == 2
    for variant in ("fp32", "int8"):
        engine = Engine.load_store(store, EngineConfig(graph=variant, provider="cpu"))
        assert engine.probe_drift is not None
        assert engine.probe_drift <= probes.TOLERANCES[variant] + probes.RELATIVE_TOLERANCES[
            variant
        ] * max(abs(v) for t in recorded["tasks"].values() for r in t["outputs"] for v in r)
    assert float(recorded["drift"]["fp32"]) <= probes.TOLERANCES["fp32"]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (_swap_first_two, "does not reproduce its recorded probe answers"),
        (_swap_outputs, "does not reproduce its recorded probe answers"),
        (
            lambda raw: raw["probes"]["tasks"]["similarity"]["outputs"][0].__setitem__(0, 3.0),
            "task similarity does not reproduce",
        ),
        (lambda raw: raw.pop("probes"), "records no probe answers"),
        (lambda raw: raw["probes"]["tasks"].pop("sentiment"), "probes recorded for"),
        (
            lambda raw: raw["probes"]["tasks"]["sentiment"].__setitem__("outputs", [[1e999]]),
            "probe answers are malformed",
        ),
    ],
)
def test_a_consistently_wrong_manifest_is_refused(store, tmp_path, edit, says) -> None:
    copy = _copy(store, tmp_path)
    rewrite_manifest(copy, edit)
    load_manifest(copy)  # the hashes and structure still pass: only the probes catch it
    with pytest.raises(StoreError, match=says):
        Engine.load_store(copy, CPU)


def test_a_graph_that_pools_otherwise_is_refused(stores, tiny_store, tmp_path: Path) -> None:
    """The graph of a store whose branches pool by mean, under a manifest recorded for
    CLS pooling, with the file's hash re-recorded: every hash passes, the probes fail."""
    cls_store = Path(shutil.copytree(tiny_store, tmp_path / "cls"))
    mean_store = stores.get("tiny-mean", _mean_pooling) / "store"
    graph = cls_store / "model.onnx"
    shutil.copy(mean_store / "model.onnx", graph)
    rewrite_manifest(
        cls_store, lambda raw: raw["files"].__setitem__("model.onnx", sha256_of(graph))
    )
    with pytest.raises(StoreError, match="does not reproduce its recorded probe answers"):
        Engine.load_store(cls_store, CPU)


def test_start_up_refuses_a_permuted_store_in_one_line(store, tmp_path) -> None:
    copy = _copy(store, tmp_path)
    rewrite_manifest(copy, _swap_first_two)
    result = run("-m", "service", "--model-dir", str(copy), "--provider", "cpu", "--port", "1")
    assert_one_line_error(result, "its recorded probe answers")


def test_reload_refuses_a_permuted_version_and_keeps_serving(tiny, repository, live) -> None:
    with Client(live.url) as client:
        before = probe(client)
        version = tiny.publish(repository, tiny.make("similarity", 31), activate=False)
        rewrite_manifest(repository / "versions" / version, _swap_first_two)
        set_current(repository, version)
        refused = reload(client)
        assert refused.status_code == 409
        assert "its recorded probe answers" in refused.json()["detail"]
        assert probe(client) == before


def test_probe_rows_interleave_tasks() -> None:
    """Each task's rows sit between other tasks' rows (what makes a mix-up visible)."""

    class Recorder:
        def encode(self, a, b=None):
            return [(a[0], b[0] if b else None)]

        def pad(self, rows):
            return rows

    batch = probes.build_batch(Recorder(), [(0, [["x"], ["y"]]), (1, [["p", "q"], ["r", "s"]])])
    assert batch.task_sets == [[0], [1], [0], [1]]
    assert batch.batch == [("x", None), ("p", "q"), ("y", None), ("r", "s")]
    assert json.dumps(probes.record({"t": [["x"]]}, {"t": np.zeros((1, 2))}))
