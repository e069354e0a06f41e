"""A request with a wrong or missing field gets one line naming the fields the route
accepts (not every request shape's pydantic errors: `{"sentence"}` to /similarity gave
nine), and a wrong value only the errors of the shape its fields chose; on the service's
routes (the full list under `errors`) and on every protocol's, in its own shape."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer

TEXT_SHAPES = ('"text"', '"texts"')
PAIR_SHAPES = ('"sentence1"', '"sentence2"', '"pairs"')


@pytest.fixture(scope="module")
def presets_url(tiny_store: Path):
    served = ThreadedServer(create_app(Settings(model_dir=tiny_store, provider="cpu")))
    yield served.url
    served.stop()


@pytest.fixture(scope="module")
def protocols_url(embedding_repository: Path):
    served = ThreadedServer(create_app(Settings(model_dir=embedding_repository, provider="cpu")))
    yield served.url
    served.stop()


def _one_line(message: object) -> str:
    assert isinstance(message, str) and "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "path", ["/v1/tasks/sentiment", "/similarity", "/sentiment", "/v1/predict"]
)
def test_a_wrong_field_is_one_line_naming_the_accepted_fields(presets_url: str, path: str) -> None:
    response = httpx.post(f"{presets_url}{path}", json={"sentence": "a quiet film"})
    assert response.status_code == 422, response.text
    body = response.json()
    line = _one_line(body["detail"])
    assert "unknown field 'sentence'" in line
    accepted = {"/sentiment": TEXT_SHAPES, "/similarity": PAIR_SHAPES}.get(
        path, TEXT_SHAPES + PAIR_SHAPES
    )
    for field in TEXT_SHAPES + PAIR_SHAPES:
        assert (field in line) is (field in accepted), (field, line)
    assert "missing" not in line  # no shape was chosen: none of them is half-sent
    if path == "/v1/predict":
        assert '"tasks"?' in line  # optional fields are marked
    assert body["errors"] and all({"type", "loc", "msg"} <= set(e) for e in body["errors"])


def test_a_missing_field_of_the_chosen_shape_is_named(presets_url: str) -> None:
    response = httpx.post(f"{presets_url}/similarity", json={"sentence1": "a", "pair": "b"})
    line = _one_line(response.json()["detail"])
    assert line.startswith("unknown field 'pair' and missing field 'sentence2': "), line


def test_a_wrong_value_names_only_its_own_shapes_error(presets_url: str) -> None:
    response = httpx.post(f"{presets_url}/similarity", json={"sentence1": "a", "sentence2": 3})
    assert response.status_code == 422
    line = _one_line(response.json()["detail"])
    assert line == "sentence2: Input should be a valid string"


@pytest.mark.parametrize("body", [[{"text": "a"}], "a quiet film", 3])
def test_a_body_that_is_no_object_says_what_the_route_takes(presets_url: str, body) -> None:
    response = httpx.post(f"{presets_url}/sentiment", json=body)
    assert response.status_code == 422
    line = _one_line(response.json()["detail"])
    assert line.startswith("the body must be a JSON object") and '"texts"' in line


@pytest.mark.parametrize(
    ("path", "body", "status", "message_of", "accepted"),
    [
        (
            "/v1/embeddings",
            {"inputs": "x", "model": "embedding"},
            400,
            lambda b: b["error"]["message"],
            ('"input"', '"model"', '"encoding_format"?'),
        ),
        ("/embed", {"input": "x"}, 422, lambda b: b["error"], ('"inputs"', '"normalize"?')),
        ("/predict", {"text": "x"}, 422, lambda b: b["error"], ('"inputs"', '"raw_scores"?')),
        ("/tokenize", {"texts": ["x"]}, 422, lambda b: b["error"], ('"inputs"',)),
        (
            "/v2/models/sentiment/infer",
            {"input": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
            400,
            lambda b: b["error"],
            ('"inputs"', '"outputs"?'),
        ),
    ],
)
def test_protocols_name_the_accepted_fields_in_their_own_shape(
    protocols_url: str, path: str, body, status: int, message_of, accepted
) -> None:
    response = httpx.post(f"{protocols_url}{path}", json=body)
    assert response.status_code == status, response.text
    assert "detail" not in response.json()
    line = _one_line(message_of(response.json()))
    [wrong] = set(body) - {"model"}
    assert f"unknown field '{wrong}'" in line, line
    for field in accepted:
        assert field in line, (field, line)
