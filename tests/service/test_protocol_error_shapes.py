"""Every path under a foreign protocol's prefix refuses in that protocol's error shape,
those no route of it saw (405 for another method, 404 for no such path) included; the
service's own paths keep `{"detail"}`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer

SHAPES = {
    "openai": lambda body: (
        list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}
    ),
    "tei": lambda body: set(body) == {"error", "error_type"},
    "v2": lambda body: list(body) == ["error"] and isinstance(body["error"], str),
    "own": lambda body: list(body) == ["detail"],
}
CASES = [
    ("GET", "/v1/embeddings", 405, "openai"),
    ("POST", "/v1/models", 405, "openai"),
    ("GET", "/v1/models/nope", 404, "openai"),
    ("GET", "/v1/embeddings/more", 404, "openai"),
    ("GET", "/embed", 405, "tei"),
    ("GET", "/predict", 405, "tei"),
    ("PUT", "/tokenize", 405, "tei"),
    ("GET", "/v2/models/sentiment/infer", 405, "v2"),
    ("POST", "/v2/health/live", 405, "v2"),
    ("GET", "/v2/nothing", 404, "v2"),
    ("GET", "/v2/models/sentiment/versions/no-such", 404, "v2"),
    ("GET", "/sentiment", 405, "own"),
    ("GET", "/v1/nothing", 404, "own"),
    ("GET", "/embedding", 404, "own"),  # a prefix of nothing but /embed's letters
]


@pytest.fixture(scope="module")
def url(embedding_repository: Path):
    served = ThreadedServer(create_app(Settings(model_dir=embedding_repository, provider="cpu")))
    yield served.url
    served.stop()


@pytest.mark.parametrize(("method", "path", "status", "shape"), CASES)
def test_refusals_come_in_the_paths_protocol_shape(
    url: str, method: str, path: str, status: int, shape: str
) -> None:
    response = httpx.request(method, f"{url}{path}")
    assert response.status_code == status, response.text
    assert SHAPES[shape](response.json()), response.text
