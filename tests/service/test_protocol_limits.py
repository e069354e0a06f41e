"""The other protocols' routes share the service's limits: a full queue sheds their
inference routes (429, Retry-After) before the body is read, an oversized body is a 413,
each in the protocol's own error shape; their metadata routes are never shed."""

from __future__ import annotations

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer

INFERENCE = {
    "/v1/embeddings": ({"model": "embedding", "input": "x"}, lambda body: body["error"]["code"]),
    "/embed": ({"inputs": "x"}, lambda body: body["error_type"]),
    "/predict": ({"inputs": "x"}, lambda body: body["error_type"]),
    "/v2/models/sentiment/infer": (
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        lambda body: body["error"],
    ),
}


@pytest.fixture(scope="module")
def app_and_url(embedding_repository):
    settings = Settings(model_dir=embedding_repository, provider="cpu", max_body_bytes=4096)
    app = create_app(settings)
    served = ThreadedServer(app)
    yield app, served.url
    served.stop()


@pytest.mark.parametrize("path", sorted(INFERENCE))
def test_full_queue_sheds_in_the_protocols_shape(app_and_url, monkeypatch, path: str) -> None:
    app, url = app_and_url
    body, shape = INFERENCE[path]
    assert httpx.post(f"{url}{path}", json=body).status_code == 200
    batcher = app.state.models.live.batcher
    monkeypatch.setattr(type(batcher), "full", property(lambda _self: True))
    shed = httpx.post(f"{url}{path}", json=body)
    assert shed.status_code == 429 and shed.headers["retry-after"] == "1"
    assert shape(shed.json())  # the protocol's own error fields, not {"detail"}
    assert "detail" not in shed.json()
    assert httpx.get(f"{url}/v1/models").status_code == 200  # metadata is never shed
    assert httpx.get(f"{url}/v2/models/sentiment").status_code == 200


@pytest.mark.parametrize("path", sorted(INFERENCE))
def test_oversized_body_is_a_413_in_the_protocols_shape(app_and_url, path: str) -> None:
    _, url = app_and_url
    response = httpx.post(f"{url}{path}", content=b"{" + b" " * 8192 + b"}")
    assert response.status_code == 413
    body = response.json()
    assert "detail" not in body and ("error" in body)


def test_a_full_tokenizer_stage_sheds_tokenize_in_the_tei_shape(app_and_url, monkeypatch) -> None:
    """/tokenize shares the tokenizer threads with inference, so it is bounded with them."""
    app, url = app_and_url
    body = {"inputs": "a quiet and moving film " * 40}  # past the inline threshold
    assert httpx.post(f"{url}/tokenize", json=body).status_code == 200
    infer = app.state.infer
    max_items, _ = infer._max_tokenizing
    monkeypatch.setattr(infer, "_tokenizing", [max_items, 0])  # others' texts fill it
    shed = httpx.post(f"{url}/tokenize", json=body)
    assert shed.status_code == 429 and shed.headers["retry-after"] == "1"
    assert shed.json()["error_type"] == "Overloaded"
    assert "tokenizer stage full" in shed.json()["error"]
