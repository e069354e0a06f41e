"""The HTTP service against its contract, on a tiny store the tests build themselves."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest

from service import schemas
from service.app import create_app
from service.client import ApiError, AsyncClient, Client
from service.engine import Engine
from service.settings import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, Settings
from tests.support.commands import assert_one_line_error, run
from tests.support.servers import ThreadedServer

LONG_TEXT = " ".join(["word"] * 200)  # far beyond the tiny store's 32 tokens


@pytest.fixture(scope="module")
def store(tiny_store: Path) -> Path:
    return tiny_store


@pytest.fixture(scope="module")
def settings(store: Path) -> Settings:
    return Settings(model_dir=store, provider="cpu", max_items_per_request=8, max_body_bytes=4096)


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Engine:
    return Engine.load(settings.model_dir, settings.engine_config())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(settings, engine):
    app = create_app(settings, engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


# --- the contract ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sentiment_single_and_batch(client: httpx.AsyncClient, engine: Engine) -> None:
    single = (await client.post("/sentiment", json={"text": "a fine film"})).json()
    assert set(single) == {"label", "label_name", "probabilities", "truncated", "model_version"}
    assert len(single["probabilities"]) == 5
    assert sum(single["probabilities"]) == pytest.approx(1.0, abs=1e-6)
    assert single["label"] == max(range(5), key=lambda i: single["probabilities"][i])
    assert single["label_name"] == engine.tasks["sentiment"].label_names[single["label"]]
    assert single["model_version"] == engine.version("sentiment")
    assert single["truncated"] is False

    texts = ["a fine film", LONG_TEXT, "dull"]
    batch = (await client.post("/sentiment", json={"texts": texts})).json()
    assert batch["model_version"] == engine.version("sentiment")
    assert [r["truncated"] for r in batch["results"]] == [False, True, False]
    assert batch["results"][0]["label"] == single["label"]
    assert batch["results"][0]["probabilities"] == pytest.approx(single["probabilities"], abs=1e-5)


async def tokenizing_threads(
    settings: Settings, engine: Engine, monkeypatch, inline_chars: int, posts: list[tuple]
) -> list[threading.Thread]:
    """The thread that tokenized each of `posts` ((path, body) in order), served with
    `inline_tokenizing_chars` = `inline_chars`."""
    threads = []
    encode = engine.encode

    def recording_encode(*args, **kwargs):
        threads.append(threading.current_thread())
        return encode(*args, **kwargs)

    monkeypatch.setattr(engine, "encode", recording_encode)
    app = create_app(settings.model_copy(update={"inline_tokenizing_chars": inline_chars}), engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path, body in posts:
                await client.post(path, json=body)
    return threads


@pytest.mark.anyio
async def test_short_requests_are_tokenized_on_the_loop_and_long_ones_in_the_threads(
    settings: Settings, engine: Engine, monkeypatch
) -> None:
    """A request of at most `inline_tokenizing_chars` characters is tokenized on the
    event loop (cheaper than the hand-off, and never behind long texts in the
    threads); a longer one in a tokenizer thread, where it cannot hold the loop."""
    posts = [
        ("/sentiment", {"text": "one"}),
        ("/v1/tasks/similarity", {"sentence1": "a", "sentence2": "b"}),
        ("/v1/predict", {"text": "eleven characters"}),
        ("/sentiment", {"texts": ["six ch", "five!"]}),  # 11 characters in all
    ]
    threads = await tokenizing_threads(settings, engine, monkeypatch, 10, posts)
    assert [t is threading.main_thread() for t in threads] == [True, True, False, False]
    assert all(t.name.startswith("tokenize") for t in threads[2:])


@pytest.mark.anyio
async def test_with_inline_tokenizing_off_every_request_is_tokenized_in_a_thread(
    settings: Settings, engine: Engine, monkeypatch
) -> None:
    posts = [
        ("/sentiment", {"text": "one"}),
        ("/v1/tasks/similarity", {"sentence1": "a", "sentence2": "b"}),
    ]
    threads = await tokenizing_threads(settings, engine, monkeypatch, 0, posts)
    assert len(threads) == 2
    assert all(t.name.startswith("tokenize") for t in threads)


@pytest.mark.anyio
async def test_responses_are_json_of_the_documented_models(client: httpx.AsyncClient) -> None:
    """Routes encode their own bodies: the shape must still be the response_model's."""
    for path, body, model in (
        ("/sentiment", {"text": "a"}, schemas.SentimentResponse),
        ("/sentiment", {"texts": ["a", "b"]}, schemas.SentimentBatchResponse),
        ("/v1/tasks/paraphrase", {"pairs": [["a", "b"]]}, schemas.TaskBatchResponse),
        ("/v1/predict", {"text": "a"}, schemas.MultiTaskResponse),
    ):
        response = await client.post(path, json=body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        parsed = model.model_validate_json(response.content)
        assert json.loads(parsed.model_dump_json()) == response.json()


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint", ["/paraphrase", "/similarity"])
async def test_pair_endpoints_single_and_batch(client, engine, endpoint: str) -> None:
    task = endpoint.strip("/")
    single = (await client.post(endpoint, json={"sentence1": "a b", "sentence2": "a c"})).json()
    pairs = [["a b", "a c"], [LONG_TEXT, "short"]]
    batch = (await client.post(endpoint, json={"pairs": pairs})).json()
    assert single["model_version"] == batch["model_version"] == engine.version(task)
    assert [r["truncated"] for r in batch["results"]] == [False, True]
    if task == "paraphrase":
        assert set(single) == {"is_paraphrase", "probability", "truncated", "model_version"}
        assert 0 <= single["probability"] <= 1
        assert single["is_paraphrase"] == (single["probability"] >= 0.5)
        assert batch["results"][0]["probability"] == pytest.approx(single["probability"], abs=1e-5)
    else:
        assert set(single) == {"score", "truncated", "model_version"}
        assert 0 <= single["score"] <= 5
        assert batch["results"][0]["score"] == pytest.approx(single["score"], abs=1e-5)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("endpoint", "body", "status", "fragment"),
    [
        ("/sentiment", {"text": ""}, 422, "at least 1 character"),
        ("/sentiment", {"text": "   "}, 422, "at least 1 character"),
        ("/sentiment", {"text": 5}, 422, "valid string"),
        ("/sentiment", {}, 422, 'no field: this route accepts {\\"text\\"} or {\\"texts\\"}'),
        ("/sentiment", {"texts": []}, 422, "at least 1 item"),
        ("/sentiment", {"texts": ["ok"] * 9}, 422, "exceeds the limit of 8"),
        ("/sentiment", {"text": "a", "colour": "red"}, 422, "unknown field 'colour'"),
        ("/paraphrase", {"sentence1": "only one"}, 422, "missing field 'sentence2'"),
        ("/similarity", {"pairs": [["a", "b", "c"]]}, 422, "at most 2 items"),
        ("/similarity", {"pairs": [["a", ""]]}, 422, "at least 1 character"),
        ("/sentiment", {"text": "x" * 5000}, 413, "exceeds the limit of 4096 bytes"),
    ],
)
async def test_bad_input_is_a_4xx_with_a_json_detail(client, endpoint, body, status, fragment):
    response = await client.post(endpoint, json=body)
    assert response.status_code == status
    assert fragment in json.dumps(response.json()["detail"])


JSON = {"content-type": "application/json"}
# Bytes an attacker or a careless client sends; each must be a 4xx with a JSON detail
# and leave the server healthy (the whole class, not three cases).
HOSTILE = [
    ("/sentiment", b'{"text": "\\ud800"}', JSON, 422, "valid string"),
    ("/sentiment", b'{"texts": ["ok", "\\udfff x"]}', JSON, 422, "valid string"),
    ("/paraphrase", b'{"sentence1": NaN, "sentence2": "x"}', JSON, 422, "valid string"),
    ("/similarity", b'{"sentence1": Infinity, "sentence2": -Infinity}', JSON, 422, "string"),
    ("/sentiment", b'{"\\ud800": "x"}', JSON, 422, "unknown field '\\\\ud800'"),
    ("/paraphrase", b"\xff\xfe not utf-8", {"content-type": "text/plain"}, 415, "JSON"),
    ("/sentiment", b"\xff\xfe not utf-8", JSON, 400, "not valid JSON"),
    ("/sentiment", b'{"text": ', JSON, 400, "not valid JSON"),
    ("/sentiment", b"[" * 2000 + b"]" * 2000, JSON, 400, ""),
    ("/sentiment", b'{"text": {"a": {"b": {"c": [[[[1]]]]}}}}', JSON, 422, "valid string"),
    ("/v1/tasks/sentiment", b'{"text": "\\ud800"}', JSON, 422, "valid string"),
    ("/v1/tasks/%00", b'{"text": "x"}', JSON, 404, "unknown task"),
    ("/v1/tasks/" + "x" * 60, b'{"text": "x"}', JSON, 422, "at most 48"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "body", "headers", "status", "fragment"), HOSTILE)
async def test_hostile_bodies_are_a_4xx_with_json_and_leave_the_server_healthy(
    client, path, body, headers, status, fragment
) -> None:
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in json.dumps(response.json()["detail"])
    healthy = await client.post("/sentiment", json={"text": "still fine"})
    assert healthy.status_code == 200


def test_the_batch_token_bound_defaults_per_provider_and_a_setting_overrides_it() -> None:
    assert Settings().batch_tokens_for("CPUExecutionProvider") == CPU_BATCH_TOKENS
    assert Settings().batch_tokens_for("CUDAExecutionProvider") == GPU_BATCH_TOKENS
    assert CPU_BATCH_TOKENS < GPU_BATCH_TOKENS
    chosen = Settings(max_batch_tokens=777)
    assert {
        chosen.batch_tokens_for(p) for p in ("CPUExecutionProvider", "CUDAExecutionProvider")
    } == {777}


@pytest.mark.anyio
async def test_health_ready_info_metrics_docs(client, engine) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).status_code == 200
    info = (await client.get("/info")).json()
    assert [t["name"] for t in info["tasks"]] == ["sentiment", "paraphrase", "similarity"]
    assert info["execution_provider"] == "CPUExecutionProvider" and info["graph"] == "fp32"
    assert info["graph_reason"] == "the store has no int8 graph"  # the tiny store: fp32 only
    assert info["batching"]["max_items_per_request"] == 8
    assert isinstance(info["batching"]["max_batch_size"], int)  # not 32.0
    assert '"max_batch_size":32' in (await client.get("/info")).text.replace(" ", "")
    # Unset, the batch's token bound is the provider's: the CPU one here.
    assert info["batching"]["max_batch_tokens"] == CPU_BATCH_TOKENS
    await client.post("/sentiment", json={"text": "counted"})
    await client.post("/v1/tasks/similarity", json={"sentence1": "a", "sentence2": "b"})
    await client.post("/v1/tasks/nonsense", json={"text": "a"})
    metrics = (await client.get("/metrics")).text
    assert 'bert_mts_requests_total{endpoint="/sentiment",status="200",task="sentiment"}' in metrics
    generic = 'endpoint="/v1/tasks/{task}",status="200",task="similarity"'
    assert f"bert_mts_requests_total{{{generic}}}" in metrics
    assert 'endpoint="/v1/tasks/{task}",status="404",task="other"' in metrics
    assert "bert_mts_batch_size_rows_count" in metrics and "bert_mts_queue_depth_rows" in metrics
    assert f'version="{engine.version("similarity")}"' in metrics
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/sentiment", "/paraphrase", "/similarity", "/health", "/ready", "/info"} <= set(paths)
    assert {"/v1/tasks", "/v1/tasks/{task}"} <= set(paths)


@pytest.mark.anyio
async def test_not_ready_before_the_model_is_loaded(settings) -> None:
    app = create_app(settings, None)  # lifespan not started: nothing loaded
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/ready")).status_code == 503
        response = await http.post("/sentiment", json={"text": "early"})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"


class SlowEngine(Engine):
    """The real engine, made slow enough for queues and timeouts to show."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.started = threading.Event()

    def run(self, rows, task_ids):
        self.started.set()
        time.sleep(0.3)
        return super().run(rows, task_ids)


@pytest.mark.anyio
async def test_overload_is_429_and_timeouts_503_with_retry_after(settings, engine) -> None:
    slow = SlowEngine(engine.manifest, engine.session)
    tight = settings.model_copy(update={"max_queue_items": 2, "request_timeout_s": 5.0})
    app = create_app(tight, slow)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            busy = asyncio.ensure_future(http.post("/sentiment", json={"text": "first"}))
            await asyncio.sleep(0.1)  # the first row is now inside the slow engine
            queued = asyncio.ensure_future(http.post("/sentiment", json={"texts": ["a", "b"]}))
            await asyncio.sleep(0.1)  # two rows wait: the queue is full
            shed = await http.post("/sentiment", json={"text": "c"})
            assert shed.status_code == 429 and shed.headers["retry-after"] == "1"
            assert "overloaded" in shed.json()["detail"]
            assert (await busy).status_code == 200 and (await queued).status_code == 200
            never = await http.post("/sentiment", json={"texts": ["a", "b", "c"]})
            assert never.status_code == 422 and "exceeds the queue" in never.json()["detail"]
            metrics = (await http.get("/metrics")).text
            assert "bert_mts_shed_requests_total 1.0" in metrics

    impatient = settings.model_copy(update={"request_timeout_s": 0.05})
    app = create_app(impatient, slow)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            late = await http.post("/similarity", json={"sentence1": "a", "sentence2": "b"})
            assert late.status_code == 503 and late.headers["retry-after"] == "1"
            assert "no answer within 0.05 s" in late.json()["detail"]


# --- a real server under concurrent load ----------------------------------------------------


@pytest.fixture
def live_server(settings, engine):
    """uvicorn on loopback in a thread; stopped (gracefully) after the test."""
    server = ThreadedServer(
        create_app(settings.model_copy(update={"max_items_per_request": 256}), engine)
    )
    yield server.url
    server.stop()


def _requests() -> list[tuple[str, tuple[str, ...]]]:
    words = ["good", "bad", "a long and winding story about", "cats", "rain", "the market"]
    calls = []
    for i in range(48):
        a, b = words[i % 6] + f" {i}", words[(i * 5) % 6] + " again"
        calls.append((("sentiment", "paraphrase", "similarity")[i % 3], (a, b)))
    return calls


def _value(task: str, response) -> list[float]:
    if task == "sentiment":
        return response.probabilities
    return [response.probability if task == "paraphrase" else response.score]


def test_concurrent_mixed_load_matches_unbatched_calls(live_server: str) -> None:
    calls = _requests()
    with Client(live_server) as client:
        unbatched = []
        for task, (a, b) in calls:
            response = client.sentiment(a) if task == "sentiment" else getattr(client, task)(a, b)
            unbatched.append(_value(task, response))
        metrics_before = client.metrics()

    async def hammer():
        async with AsyncClient(live_server) as client:

            async def one(task, a, b):
                if task == "sentiment":
                    return await client.sentiment(a)
                return await getattr(client, task)(a, b)

            return await asyncio.gather(*(one(task, a, b) for task, (a, b) in calls * 3))

    concurrent = asyncio.run(hammer())
    for index, response in enumerate(concurrent):
        task = calls[index % len(calls)][0]
        assert _value(task, response) == pytest.approx(unbatched[index % len(calls)], abs=1e-5)

    with Client(live_server) as client:
        metrics = client.metrics()
        with pytest.raises(ApiError) as error:
            client.sentiment("")
        assert error.value.status_code == 422

    def batches_over_one(text: str) -> float:
        count = float(re.search(r"bert_mts_batch_size_rows_count (\S+)", text).group(1))
        ones = float(re.search(r'bert_mts_batch_size_rows_bucket\{le="1.0"\} (\S+)', text).group(1))
        return count - ones

    assert batches_over_one(metrics_before) == 0  # sequential calls: batches of one
    assert batches_over_one(metrics) > 0  # concurrent calls were batched together


def test_graceful_shutdown_finishes_in_flight_requests(settings, engine) -> None:
    slow = SlowEngine(engine.manifest, engine.session)
    server = ThreadedServer(create_app(settings, slow))
    answers: list[httpx.Response] = []
    url = f"{server.url}/sentiment"
    request = threading.Thread(
        target=lambda: answers.append(httpx.post(url, json={"texts": ["a", "b"]}, timeout=30))
    )
    request.start()
    assert slow.started.wait(timeout=30)  # the request is now inside the slow engine
    server.stop()  # what SIGTERM does
    request.join(timeout=30)
    assert [a.status_code for a in answers] == [200]
    assert len(answers[0].json()["results"]) == 2
    assert not server.thread.is_alive()


# --- process and packaging ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model-dir", "/nonexistent/store"], "does not exist"),
        (["--port", "99999"], "setting port"),
        pytest.param(
            ["--provider", "cuda"],
            "CUDA",
            marks=pytest.mark.skipif(
                "CUDAExecutionProvider" in ort.get_available_providers(),
                reason="this host has a CUDA provider",
            ),
        ),
    ],
)
def test_start_up_misuse_is_one_line(store: Path, args: list[str], fragment: str) -> None:
    full = ["--model-dir", str(store), *args] if "--model-dir" not in args else args
    assert_one_line_error(run("-m", "service", *full), fragment)


def test_a_default_repository_at_its_old_place_gets_a_one_line_hint(tmp_path: Path) -> None:
    """Releases before models/ built the default repository at model_store/default."""
    (tmp_path / "model_store" / "default" / "versions").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=tmp_path,
        env={**os.environ, "BERT_MTS_MODELS_DIR": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result, "models/default", "mv model_store/default models/default")


def test_console_script_is_installed_and_refuses_a_missing_store(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "bert-mts-serve"
    result = subprocess.run(
        [str(script), "--model-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "does not exist" in result.stderr


def _broken_store(store: Path, target: Path, damage: str) -> Path:
    shutil.copytree(store, target)
    if damage == "manifest":
        (target / "manifest.json").write_text('{"format_version": 1, "tasks": [')
    elif damage == "hash":
        graph = target / "model.onnx"
        data = bytearray(graph.read_bytes())
        data[len(data) // 3] ^= 0x01
        graph.write_bytes(bytes(data))
    elif damage == "missing-file":
        (target / "tokenizer.json").unlink()
    elif damage == "dangling-current":
        repository = target.parent / "repository"
        (repository / "versions").mkdir(parents=True)
        (repository / "CURRENT").write_text("v20990101T000000000000Z\n")
        return repository
    return target


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("manifest", "not valid JSON"),
        ("hash", "model.onnx is corrupt"),
        ("missing-file", "tokenizer.json is missing"),
        ("dangling-current", "which does not exist"),
    ],
)
def test_start_up_faults_are_one_line(store: Path, tmp_path: Path, damage: str, fragment: str):
    broken = _broken_store(store, tmp_path / "store", damage)
    assert_one_line_error(run("-m", "service", "--model-dir", str(broken)), fragment)
