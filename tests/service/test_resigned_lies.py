"""A manifest rewritten and re-signed (its hashes and manifest_sha256 recomputed) to lie
about its graph is refused at load: task depths that contradict the graph, a graph
file that is a symbolic link out of the version, variant metrics that contradict
themselves. At start-up in one line (exit 2); at reload with 409, the old version
still serving. What each check reads: model_store.graph_structure, manifest.verify_files,
model_store.metric_consistency."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_store.manifest import StoreError, load_manifest, sha256_of
from model_store.repository import VERSIONS_DIR, resolve_store, set_current
from service.client import Client
from service.engine import Engine, EngineConfig
from tests.model_store.test_graph_choice import mcnemar
from tests.support.commands import assert_one_line_error, run
from tests.support.live_repository import probe, reload
from tests.support.manifests import rewrite_manifest

CPU = EngineConfig(graph="fp32", provider="cpu")


def deeper_sentiment(raw: dict) -> None:
    """sentiment claims the whole 2-layer base as its own (K=2, forking at 0)."""
    task = next(t for t in raw["tasks"] if t["definition"]["name"] == "sentiment")
    task["layers"], task["fork_depth"] = 2, 0
    raw["trunk_layers"] = 0


def symlinked_graph(store: Path, outside: Path) -> None:
    """The graph moved out of the version and linked back in: same bytes, same hash."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(store / "model.onnx", outside)
    (store / "model.onnx").symlink_to(outside)


def figures(int8: float, only_fp32: int, only_int8: int) -> dict:
    """Variant metrics of the tiny store: sentiment measured on 100 rows."""
    rows = 100
    return {
        "source": "test",
        "tasks": {"sentiment": {"metric": "accuracy", "examples": rows, "fp32": 0.5, "int8": int8}},
        "comparisons": {"sentiment": {"int8": mcnemar(only_fp32, only_int8, rows)}},
    }


def with_metrics(metrics: dict):
    def edit(raw: dict) -> None:
        raw["graphs"]["int8"] = raw["graphs"]["fp32"]  # figures need a graph to describe
        raw["variant_metrics"] = metrics

    return edit


@pytest.fixture
def store(tiny_store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_store, tmp_path / "store"))


def test_task_depths_that_contradict_the_graph_are_refused(store: Path) -> None:
    rewrite_manifest(store, deeper_sentiment)
    load_manifest(store)  # hashes and the manifest's own arithmetic pass
    with pytest.raises(StoreError, match="the manifest does not describe its graph"):
        Engine.load_store(store, CPU)


def test_a_graph_that_is_a_symbolic_link_is_refused(store: Path, tmp_path: Path) -> None:
    symlinked_graph(store, tmp_path / "elsewhere" / "model.onnx")
    assert sha256_of(store / "model.onnx") == load_manifest(store, verify=False).files["model.onnx"]
    with pytest.raises(StoreError, match="is a symbolic link"):
        load_manifest(store)


def test_variant_metrics_that_contradict_themselves_are_refused(store: Path) -> None:
    # Honest figures: 10 rows right in fp32 only, 4 in int8 only, 6 points lost.
    rewrite_manifest(store, with_metrics(figures(0.44, 10, 4)))
    Engine.load_store(store, CPU)
    # The same paired test under figures claiming int8 lost nothing.
    rewrite_manifest(store, with_metrics(figures(0.5, 10, 4)))
    with pytest.raises(StoreError, match="contradict themselves"):
        Engine.load_store(store, CPU)
    # Figures and loss agreeing, but a p-value the discordant rows do not give.
    lie = figures(0.44, 10, 4)
    lie["comparisons"]["sentiment"]["int8"]["p_value"] = 0.9
    rewrite_manifest(store, with_metrics(lie))
    with pytest.raises(StoreError, match="p-value"):
        Engine.load_store(store, CPU)


@pytest.mark.parametrize("lie", ["layers", "symlink", "metrics"])
def test_start_up_refuses_each_lie_in_one_line(store: Path, tmp_path: Path, lie: str) -> None:
    if lie == "layers":
        rewrite_manifest(store, deeper_sentiment)
    elif lie == "symlink":
        symlinked_graph(store, tmp_path / "elsewhere" / "model.onnx")
    else:
        rewrite_manifest(store, with_metrics(figures(0.5, 10, 4)))
    result = run("-m", "service", "--model-dir", str(store), "--provider", "cpu", "--port", "1")
    assert_one_line_error(result, str(store))


def test_reload_refuses_a_lying_version_and_keeps_serving(repository: Path, live) -> None:
    with Client(live.url) as client:
        before = probe(client)
        current = resolve_store(repository)
        lying = repository / VERSIONS_DIR / "v29991231T000000000000Z"
        shutil.copytree(current, lying)
        rewrite_manifest(lying, deeper_sentiment)
        set_current(repository, lying.name)
        refused = reload(client)
        assert refused.status_code == 409
        assert "does not describe its graph" in refused.json()["detail"]
        assert probe(client) == before
