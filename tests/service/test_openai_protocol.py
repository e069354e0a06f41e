"""The official `openai` client against a live service on loopback: /v1/embeddings
(float and base64, one text and a list) equals the service's own embedding endpoint,
/v1/models lists the embedding task, and refusals come in OpenAI's error shape."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer

TEXTS = ["a gripping, funny and humane film", "dull .", "東京 naïve café"]


@pytest.fixture(scope="module")
def server(embedding_repository: Path):
    served = ThreadedServer(create_app(Settings(model_dir=embedding_repository, provider="cpu")))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def _own(server, texts: list[str]) -> np.ndarray:
    body = httpx.post(f"{server.url}/v1/tasks/embedding", json={"texts": texts}).json()
    return np.array([r["embedding"] for r in body["results"]], dtype=np.float32)


@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_embeddings_equal_the_services_own(server, client, encoding) -> None:
    extra = {} if encoding is None else {"encoding_format": encoding}
    answer = client.embeddings.create(model="embedding", input=TEXTS, **extra)
    if encoding == "base64":  # asked for explicitly, the client hands the strings back
        decoded = [np.frombuffer(base64.b64decode(item.embedding), "<f4") for item in answer.data]
    else:  # the client's default: it asks for base64 and decodes it itself
        decoded = [item.embedding for item in answer.data]
    vectors = np.array(decoded, dtype=np.float32)
    # float32 values, whichever encoding carried them: bit-identical to /v1/tasks.
    np.testing.assert_array_equal(vectors, _own(server, TEXTS))
    assert [item.index for item in answer.data] == [0, 1, 2]
    assert answer.model == "embedding"
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(TEXTS) * 2
    single = client.embeddings.create(model="embedding", input=TEXTS[1], dimensions=32)
    assert len(single.data) == 1 and len(single.data[0].embedding) == 32
    # "dull ." is [CLS] dull . [SEP]
    assert single.usage.prompt_tokens == 4


def test_models_lists_embedding_tasks(client) -> None:
    assert [model.id for model in client.models.list().data] == ["embedding"]


def test_refusals_in_openai_shape(server, client) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="nope", input="x")
    assert "does not exist" in missing.value.message
    with pytest.raises(openai.BadRequestError) as wrong:
        client.embeddings.create(model="embedding", input="x", dimensions=8)
    assert "dimensions 8 is not supported" in wrong.value.message
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="sentiment", input="x")
    for body, status in (
        (b'{"model": "embedding", "input": []}', 400),
        (b'{"model": "embedding", "input": [1, 2]}', 400),
        (b'{"model": "embedding", "input": "  "}', 400),
        (b'{"model": "embedding"', 400),
        (b"\xff\xfe", 400),
        (b"\xff", 400),
    ):
        response = httpx.post(
            f"{server.url}/v1/embeddings",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    big = httpx.post(
        f"{server.url}/v1/embeddings", json={"model": "embedding", "input": "x" * 2_000_000}
    )
    assert big.status_code == 413 and "error" in big.json()
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'endpoint="/v1/embeddings"' in metrics and 'status="404"' in metrics


def test_retrieve_model(client) -> None:
    """OpenAI's GET /v1/models/{model}: the listed model, or its NotFoundError."""
    model = client.models.retrieve("embedding")
    assert model.id == "embedding" and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("sentiment")  # served, but not an embedding task


def test_too_many_items_is_openais_400(server, client) -> None:
    """OpenAI answers every invalid request with 400; the service's item limit too."""
    limit = Settings.model_fields["max_items_per_request"].default
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="embedding", input=["a text"] * (limit + 1))
    assert refused.value.status_code == 400
    assert f"exceeds the limit of {limit}" in refused.value.message
    assert refused.value.body["type"] == "invalid_request_error"
