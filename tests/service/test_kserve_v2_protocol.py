"""The Open Inference Protocol v2 with tritonclient.http against a live service: health,
metadata, repository index, and inference with JSON and binary tensor data, whose
answers are the service's own endpoints' (probabilities bit-identical, embeddings
equal); refusals are {"error"} 4xx."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer

TEXTS = ["a gripping, funny and humane film", "dull .", "東京 naïve café"]
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def url(embedding_repository: Path):
    served = ThreadedServer(create_app(Settings(model_dir=embedding_repository, provider="cpu")))
    yield served.url
    served.stop()


@pytest.fixture(scope="module")
def client(url: str):
    with triton.InferenceServerClient(url.removeprefix("http://")) as connection:
        yield connection


def _own(url: str, task: str) -> list[dict]:
    return httpx.post(f"{url}/v1/tasks/{task}", json={"texts": TEXTS}).json()["results"]


def _text_input(binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object), binary)
    return tensor


def test_health_and_metadata(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sentiment") and not client.is_model_ready("nope")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("sentiment")
    assert [i["name"] for i in meta["inputs"]] == ["text"]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {
        "probabilities": [-1, 5],
        "label": [-1],
    }
    index = client.get_model_repository_index()
    assert {m["name"] for m in index} == {"sentiment", "embedding"}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_equals_the_services_own(url: str, client, binary: bool) -> None:
    outputs = [
        triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label")
    ]
    result = client.infer("sentiment", [_text_input(binary)], outputs=outputs)
    own = _own(url, "sentiment")
    assert result.as_numpy("probabilities").tolist() == [r["probabilities"] for r in own]
    assert result.as_numpy("label").tolist() == [r["label"] for r in own]
    vectors = client.infer("embedding", [_text_input(binary)]).as_numpy("embedding")
    np.testing.assert_array_equal(
        vectors, np.float32([r["embedding"] for r in _own(url, "embedding")])
    )


def test_refusals(url: str, client) -> None:
    with pytest.raises(InferenceServerException):
        client.infer("nope", [_text_input(False)])
    bad_name = triton.InferInput("sentence", [1], "BYTES")
    bad_name.set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(InferenceServerException, match="takes inputs text"):
        client.infer("sentiment", [bad_name])
    for headers, body in (
        ({}, b"{"),
        ({}, b'{"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}'),
        ({}, b'{"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}'),
        ({"Inference-Header-Content-Length": "999"}, b"{}"),
        (
            {"Inference-Header-Content-Length": "85"},
            b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":8}}]}'[
                :85
            ]
            + b"\xff\xff\xff\xff",
        ),
        ({}, b"\xff\xfe\x00"),
    ):
        response = httpx.post(f"{url}/v2/models/sentiment/infer", content=body, headers=headers)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert list(response.json()) == ["error"]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'endpoint="/v2/models/{task}/infer",status="400",task="sentiment"' in metrics


@pytest.mark.parametrize(
    "length",
    [b"9" * 5000, b"0" * 4300 + b"93", b"\xb2", b"-1", b"+5", b""],
    ids=["5000-nines", "4302-digits", "superscript-two", "negative", "plus", "empty"],
)
def test_a_header_length_that_is_no_ascii_number_is_a_400(url: str, length: bytes) -> None:
    """Python's int() refuses over 4,300 digits, and str.isdigit() passes '²': neither
    may reach the client as a 500."""
    body = b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["fine"]}]}'
    response = httpx.post(
        f"{url}/v2/models/sentiment/infer",
        content=body,
        headers={"Inference-Header-Content-Length": length},
    )
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    assert "Inference-Header-Content-Length" in response.json()["error"]


def test_the_versioned_paths_serve_the_served_version(url: str, client) -> None:
    """Triton's clients send /v2/models/{name}/versions/{version}/... when given a
    version: the version in the model's metadata is served, any other is a 404."""
    [version] = client.get_model_metadata("sentiment")["versions"]
    assert client.get_model_metadata("sentiment", model_version=version)["name"] == "sentiment"
    assert client.is_model_ready("sentiment", model_version=version)
    assert not client.is_model_ready("sentiment", model_version=version + "-other")
    named = client.infer("sentiment", [_text_input(True)], model_version=version)
    plain = client.infer("sentiment", [_text_input(True)])
    assert named.as_numpy("probabilities").tolist() == plain.as_numpy("probabilities").tolist()
    with pytest.raises(InferenceServerException, match="has no version"):
        client.infer("sentiment", [_text_input(False)], model_version=version + "-other")


@pytest.mark.parametrize(
    ("parameters", "outputs", "status"),
    [
        ({"binary_data_output": "false"}, None, 400),
        ({"binary_data_output": 0}, None, 400),
        ({"binary_data_output": None}, None, 400),
        (None, [{"name": "label", "parameters": {"binary_data": "true"}}], 400),
        ({"binary_data_output": False}, None, 200),
        ({"binary_data_output": True}, None, 200),
    ],
)
def test_binary_output_flags_are_json_booleans(url: str, parameters, outputs, status) -> None:
    """A string "false" is truthy: it must not turn binary output on (nor anything else)."""
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]}
    if parameters is not None:
        body["parameters"] = parameters
    if outputs is not None:
        body["outputs"] = outputs
    response = httpx.post(f"{url}/v2/models/sentiment/infer", json=body)
    assert response.status_code == status, response.text
    if status == 400:
        assert list(response.json()) == ["error"]
        assert "must be true or false" in response.json()["error"]
    else:
        binary = parameters["binary_data_output"]
        assert (HEADER in response.headers) is binary
        assert response.headers["content-type"].startswith(
            "application/octet-stream" if binary else "application/json"
        )
