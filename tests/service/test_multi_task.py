"""One input, several tasks: `POST /v1/predict` on a store whose tasks fork from the
frozen layers at four different depths, against the single-task endpoints; the visible
cost (fork depths, layer evaluations); the refusals; and the clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from model_store.manifest import load_manifest
from model_store.tasks import TaskDefinition
from service.app import create_app
from service.client import AsyncClient, Client
from service.engine import Engine
from service.settings import Settings
from tests.support.servers import ThreadedServer

LAYERS = 4
# Task -> K on the 4-layer tiny base: forks at layers 3, 1, 2 and 0.
DEPTHS = {"sentiment": 1, "topic": 3, "paraphrase": 2, "similarity": 4}
TOPIC = TaskDefinition("topic", "classification", "text", ("sports", "politics", "science"))
# Answers of a multi-task row against the same input asked task by task (fp32).
TOLERANCE = 1e-5
TEXT = "the striker scored a late goal"
PAIR = ("a man plays guitar", "a man is playing music")


def _build(directory: Path) -> None:
    from tests.support.tiny_store import build_forked_store

    build_forked_store(
        directory,
        LAYERS,
        {task: (TOPIC if task == "topic" else task, k) for task, k in DEPTHS.items()},
    )


@pytest.fixture(scope="module")
def store(stores) -> Path:
    return stores.get("forked", _build) / "store"


@pytest.fixture(scope="module")
def settings(store: Path) -> Settings:
    return Settings(model_dir=store, provider="cpu", max_items_per_request=8)


@pytest.fixture(scope="module")
def live(settings: Settings):
    server = ThreadedServer(create_app(settings))
    yield server
    server.stop()


def values(answer) -> np.ndarray:
    """An answer's numbers, whatever its kind."""
    if answer.kind == "classification":
        return np.array(answer.probabilities)
    return np.array([answer.probability if answer.kind == "binary" else answer.score])


def test_manifest_states_each_fork_and_the_layer_evaluations(store: Path) -> None:
    manifest = load_manifest(store)
    assert {t.name: t.fork_depth for t in manifest.tasks} == {
        task: LAYERS - k for task, k in DEPTHS.items()
    }
    assert (manifest.trunk_layers, manifest.frozen_layers) == (0, 3)
    assert manifest.layer_evaluations(["sentiment"]) == LAYERS
    assert manifest.layer_evaluations(["sentiment", "topic"]) == 3 + 1 + 3
    assert manifest.layer_evaluations(["paraphrase", "similarity"]) == 2 + 2 + 4


def test_one_text_asks_every_text_task_and_matches_the_task_endpoints(live) -> None:
    with Client(live.url) as client:
        many = client.predict_many(TEXT)
        assert many.tasks == ["sentiment", "topic"] and many.layer_evaluations == 7
        for task in many.tasks:
            answer = many.answers[task]
            single = client.predict(task, TEXT)
            assert answer.task == task and answer.model_version == single.model_version
            assert np.abs(values(answer) - values(single)).max() <= TOLERANCE
            assert answer.label_name == single.label_name


def test_a_batch_of_pairs_asks_chosen_tasks_and_matches_the_task_endpoints(live) -> None:
    pairs = [PAIR, ("how do I cook rice", "what is the way to cook rice"), ("a", "b c d")]
    with Client(live.url) as client:
        many = client.predict_many_batch(pairs, tasks=["similarity", "paraphrase", "similarity"])
        assert many.tasks == ["similarity", "paraphrase"] and many.layer_evaluations == 8
        assert len(many.results) == len(pairs)
        for task in many.tasks:
            singles = client.predict_batch(task, pairs).results
            for row, single in zip(many.results, singles, strict=True):
                assert np.abs(values(row[task]) - values(single)).max() <= TOLERANCE


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"text": TEXT, "tasks": ["sentiment", "nope"]}, "unknown task 'nope'; served tasks"),
        ({"text": TEXT, "tasks": ["sentiment", "paraphrase"]}, "task paraphrase takes a text pair"),
        ({"texts": [TEXT], "tasks": []}, "tasks is empty"),
        ({"sentence1": "a", "sentence2": "b", "tasks": ["topic"]}, "task topic takes one text"),
        ({"text": TEXT, "tasks": "sentiment"}, "list"),
    ],
)
def test_bad_task_lists_are_422_with_a_clear_detail(live, body, fragment) -> None:
    response = httpx.post(f"{live.url}/v1/predict", json=body)
    assert response.status_code == 422
    assert fragment in str(response.json()["detail"])


def test_task_list_shows_fork_depths_and_shared_layers(live) -> None:
    with Client(live.url) as client:
        listing = client.task_list()
    assert {t.name: t.fork_depth for t in listing.tasks} == {
        task: LAYERS - k for task, k in DEPTHS.items()
    }
    assert (listing.num_layers, listing.shared_layers, listing.frozen_layers) == (LAYERS, 0, 3)


@pytest.mark.anyio
async def test_async_client_and_multi_task_rows_batch_with_single_task_rows(settings) -> None:
    """Multi-task and single-task rows of concurrent requests share one engine run; each
    request gets its own tasks' answers."""
    engine = Engine.load(settings.model_dir, settings.engine_config())
    runs: list[list[tuple[int, ...]]] = []
    original = engine.run

    def recording(rows, task_sets):
        runs.append(list(task_sets))
        return original(rows, task_sets)

    engine.run = recording  # type: ignore[method-assign]
    held = settings.model_copy(update={"max_wait_ms": 2000.0, "max_batch_size": 3})
    app = create_app(held, engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncClient("http://test", transport=transport) as client:
            many, one, pair = await asyncio.gather(
                client.predict_many(TEXT),
                client.predict("topic", TEXT),
                client.predict_many(PAIR, tasks=["paraphrase"]),
            )
    assert len(runs) == 1 and sorted(runs[0]) == [(0, 1), (1,), (2,)]
    assert np.abs(values(many.answers["topic"]) - values(one)).max() <= TOLERANCE
    assert set(many.answers) == {"sentiment", "topic"} and set(pair.answers) == {"paraphrase"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_multi_task_requests_are_counted_and_shed_like_task_requests(settings) -> None:
    engine = Engine.load(settings.model_dir, settings.engine_config())
    app = create_app(settings, engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.post("/v1/predict", json={"text": TEXT})).status_code == 200
            batcher = app.state.models.live.batcher
            batcher.max_queue_items = 0  # as if the queue were full
            shed = await http.post("/v1/predict", json={"text": TEXT})
            assert shed.status_code == 429 and "overloaded" in shed.json()["detail"]
            metrics = (await http.get("/metrics")).text
    assert 'bert_mts_requests_total{endpoint="/v1/predict",status="200",task=""} 1.0' in metrics
    assert 'bert_mts_requests_total{endpoint="/v1/predict",status="429",task=""} 1.0' in metrics
