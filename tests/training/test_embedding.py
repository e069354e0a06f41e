"""The base's sentence embedding as a task of the graph (kind `embedding`, K = 0): it
matches sentence-transformers' `encode` of the same model, joins multi-task requests
(the frozen layers run once), and is published and removed with one flag."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from model_store.tasks import TaskDefinition, TaskDefinitionError
from service.app import create_app
from service.engine import Engine, EngineConfig
from service.settings import Settings
from tests.support.servers import ThreadedServer
from tests.support.tiny_embedding import LAYERS, embedding_repository, sentence_transformer
from training.commands import store as store_cli

TEXTS = [
    "a gripping, funny and humane film",
    "dull .",
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "émigré naïveté 東京",
]
# Stated tolerances: fp32 must match sentence-transformers as closely as two float32
# implementations can; the derived graphs are held to what they lose by construction.
FP32_COSINE = 0.9999
VARIANT_COSINE = {"int8": 0.99, "fp16": 0.999}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return embedding_repository(tmp_path_factory.mktemp("embedding"))


@pytest.fixture(scope="module")
def reference(repo: Path) -> np.ndarray:
    model = sentence_transformer(repo.parent / "base")
    return model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)


@pytest.fixture(scope="module")
def server(repo: Path):
    served = ThreadedServer(create_app(Settings(model_dir=repo, provider="cpu", graph="fp32")))
    yield served
    served.stop()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_definition_is_closed() -> None:
    task = TaskDefinition("embedding", "embedding", "text", dimensions=384)
    assert TaskDefinition.from_json(task.to_json()) == task
    assert task.num_outputs == 384
    for bad in (
        {"input": "pair", "dimensions": 8},
        {"input": "text"},
        {"input": "text", "dimensions": 8, "label_names": ("a", "b")},
    ):
        with pytest.raises(TaskDefinitionError):
            TaskDefinition("e", "embedding", **bad)
    with pytest.raises(TaskDefinitionError):
        TaskDefinition("s", "regression", "text", value_range=(0, 1), dimensions=3)


def test_store_holds_every_frozen_layer_and_a_zero_layer_branch(repo: Path) -> None:
    manifest = load_manifest(resolve_store(repo))
    task = manifest.task("embedding")
    assert (task.kind, task.layers, task.fork_depth, task.pooling) == (
        "embedding",
        0,
        LAYERS,
        "mean",
    )
    assert task.definition.dimensions == 32
    assert manifest.frozen_layers == LAYERS and manifest.trunk_layers == LAYERS - 1
    # Publishing states each graph's agreement with PyTorch as a cosine.
    cosines = {v: float(c["embedding"]) for v, c in manifest.extra["embedding_cosine"].items()}
    assert set(cosines) == {"fp32", "int8", "fp16"}
    assert cosines["fp32"] >= FP32_COSINE


def test_served_vectors_match_sentence_transformers(server, reference: np.ndarray) -> None:
    response = httpx.post(f"{server.url}/v1/tasks/embedding", json={"texts": TEXTS}, timeout=30)
    assert response.status_code == 200, response.text
    served = np.array([r["embedding"] for r in response.json()["results"]], dtype=np.float32)
    assert served.shape == reference.shape
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    assert _cosines(served, reference).min() >= FP32_COSINE
    one = httpx.post(f"{server.url}/v1/tasks/embedding", json={"text": TEXTS[0]}).json()
    assert one["kind"] == "embedding" and len(one["embedding"]) == 32


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_variant_cosines(repo: Path, reference: np.ndarray, variant: str) -> None:
    engine = Engine.load(repo, EngineConfig(graph=variant, provider="cpu"))
    rows = engine.encode(TEXTS)
    predictions = engine.run(rows, [[engine.task_id("embedding")]] * len(rows))
    vectors = np.stack([p["embedding"].values for p in predictions])
    assert _cosines(vectors, reference).min() >= VARIANT_COSINE[variant]


def test_listed_and_joined_with_a_classifier_over_shared_layers(server) -> None:
    tasks = {t["name"]: t for t in httpx.get(f"{server.url}/v1/tasks").json()["tasks"]}
    assert tasks["embedding"]["kind"] == "embedding"
    assert (tasks["embedding"]["layers"], tasks["embedding"]["fork_depth"]) == (0, LAYERS)
    assert tasks["embedding"]["dimensions"] == 32 and tasks["embedding"]["labels"] is None
    body = {"text": TEXTS[0], "tasks": ["embedding", "sentiment"]}
    many = httpx.post(f"{server.url}/v1/predict", json=body).json()
    # The frozen layers once (L) plus sentiment's one tuned layer, not L + L.
    assert many["layer_evaluations"] == LAYERS + 1 < 2 * LAYERS
    alone = {
        task: httpx.post(f"{server.url}/v1/tasks/{task}", json={"text": TEXTS[0]}).json()
        for task in ("embedding", "sentiment")
    }
    assert many["answers"]["sentiment"]["probabilities"] == alone["sentiment"]["probabilities"]
    assert many["answers"]["embedding"]["embedding"] == alone["embedding"]["embedding"]
    pair = {"sentence1": "a", "sentence2": "b", "tasks": ["embedding"]}
    assert httpx.post(f"{server.url}/v1/predict", json=pair).status_code == 422


def test_remove_and_training_refused(repo: Path, tmp_path: Path) -> None:
    base = str(repo.parent / "base")
    args = ["publish", "--store", str(repo), "--base-model", base, "--no-activate"]
    assert store_cli.main([*args, "--remove", "embedding"]) == 0
    from training.commands.train import build_parser

    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["--task", "e", "--kind", "embedding"])
    assert refused.value.code == 2
