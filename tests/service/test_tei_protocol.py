"""text-embeddings-inference's routes, called as its documented requests (raw httpx)
against a live service: /embed and /predict equal the service's own endpoints, /predict
picks its task by the inputs' shape or the setting, /tokenize matches the tokenizer,
and refusals come as TEI's {"error", "error_type"}."""

from __future__ import annotations

import math
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer

TEXTS = ["a gripping, funny and humane film", "dull ."]


@pytest.fixture(scope="module")
def repo(embedding_repository: Path) -> Path:
    return embedding_repository


@pytest.fixture(scope="module")
def url(repo: Path):
    served = ThreadedServer(create_app(Settings(model_dir=repo, provider="cpu")))
    yield served.url
    served.stop()


def _own(url: str, task: str, texts: list[str]) -> list[dict]:
    return httpx.post(f"{url}/v1/tasks/{task}", json={"texts": texts}).json()["results"]


def test_embed(url: str) -> None:
    vectors = httpx.post(f"{url}/embed", json={"inputs": TEXTS}).json()
    own = [r["embedding"] for r in _own(url, "embedding", TEXTS)]
    np.testing.assert_array_equal(np.float32(vectors), np.float32(own))
    single = httpx.post(f"{url}/embed", json={"inputs": TEXTS[0]}).json()
    # alone, not padded beside a longer text: equal up to float rounding
    np.testing.assert_allclose(single, vectors[:1], atol=1e-6)
    raw = httpx.post(f"{url}/embed", json={"inputs": TEXTS, "normalize": False}).json()
    raw = np.array(raw)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), vectors, atol=1e-6)


def test_predict_picks_the_only_text_classifier(url: str) -> None:
    answer = httpx.post(f"{url}/predict", json={"inputs": TEXTS[0]}).json()
    own = _own(url, "sentiment", TEXTS[:1])[0]
    assert [a["score"] for a in answer] == sorted(own["probabilities"], reverse=True)
    assert answer[0]["label"] == own["label_name"]
    batch = httpx.post(f"{url}/predict", json={"inputs": [[t] for t in TEXTS]}).json()
    assert len(batch) == 2 and batch[0] == answer
    raw = httpx.post(f"{url}/predict", json={"inputs": TEXTS[0], "raw_scores": True}).json()
    logits = {a["label"]: a["score"] for a in raw}
    total = sum(math.exp(v) for v in logits.values())
    probabilities = {a["label"]: a["score"] for a in answer}
    for label, logit in logits.items():
        assert math.isclose(math.exp(logit) / total, probabilities[label], rel_tol=1e-5)


def test_tokenize(url: str) -> None:
    rows = httpx.post(f"{url}/tokenize", json={"inputs": ["dull ."]}).json()
    assert [t["text"] for t in rows[0]] == ["[CLS]", "dull", ".", "[SEP]"]
    assert rows[0][1] == {
        "id": rows[0][1]["id"],
        "text": "dull",
        "special": False,
        "start": 0,
        "stop": 4,
    }
    bare = httpx.post(
        f"{url}/tokenize", json={"inputs": "dull .", "add_special_tokens": False}
    ).json()
    assert [t["text"] for t in bare[0]] == ["dull", "."]


def _word_spans(tokens: list[dict]) -> list[tuple[int, int]]:
    """The spans of whole words: a word's pieces ("##...") joined to its first."""
    spans: list[tuple[int, int]] = []
    for token in tokens:
        if token["text"].startswith("##") and spans:
            spans[-1] = (spans[-1][0], token["stop"])
        else:
            spans.append((token["start"], token["stop"]))
    return spans


@pytest.mark.parametrize(
    "text",
    [
        "   hello world",
        "  Naïve CAFÉ 🙂 über\t  déjà\n",
        "\n  " + "naïve café 🙂 " * 1000,  # past the characters read: the text is cut
    ],
    ids=["leading-spaces", "accents-and-emoji", "cut"],
)
def test_tokenize_offsets_index_the_text_as_sent(url: str, text: str) -> None:
    """text[start:stop] is each token's source in what the client sent, whitespace,
    accents, emoji and cutting included."""
    for inputs in (text, [text]):
        body = {"inputs": inputs, "add_special_tokens": False}
        [tokens] = httpx.post(f"{url}/tokenize", json=body).json()
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        spans = _word_spans(tokens)
        assert spans and spans == words[: len(spans)], (spans, words[:5])


def test_refusals_in_tei_shape(url: str) -> None:
    long_text = " ".join(["word"] * 200)
    for path, body, status in (
        ("/predict", {"inputs": ["a", "b"]}, 422),  # a pair: no pair task is served
        ("/predict", {"inputs": [["a"], ["a", "b"]]}, 422),
        ("/embed", {"inputs": []}, 422),
        ("/embed", {"inputs": long_text}, 413),
        ("/tokenize", {"inputs": 3}, 422),
        ("/tokenize", {"inputs": " \t "}, 422),  # sent as is, but still not blank
        ("/embed", b"{", 400),
        ("/predict", b"\xff", 400),
    ):
        if isinstance(body, bytes):
            response = httpx.post(
                f"{url}{path}", content=body, headers={"content-type": "application/json"}
            )
        else:
            response = httpx.post(f"{url}{path}", json=body)
        assert response.status_code == status, (path, body, response.text)
        assert set(response.json()) == {"error", "error_type"}
    truncated = httpx.post(f"{url}/embed", json={"inputs": long_text, "truncate": True})
    assert truncated.status_code == 200
    # The service's own routes keep their own shape.
    assert "detail" in httpx.post(f"{url}/v1/tasks/embedding", json={}).json()


@pytest.mark.parametrize(
    ("task", "inputs", "status"),
    [("sentiment", "x", 200), ("sentiment", ["a", "b"], 422), ("embedding", "x", 422)],
)
def test_predict_task_setting(repo: Path, task: str, inputs, status: int) -> None:
    served = ThreadedServer(
        create_app(Settings(model_dir=repo, provider="cpu", tei_predict_task=task))
    )
    try:
        response = httpx.post(f"{served.url}/predict", json={"inputs": inputs})
        assert response.status_code == status, response.text
        if status == 200:
            own = _own(served.url, task, [inputs])[0]
            assert response.json()[0]["label"] == own["label_name"]
        else:
            assert set(response.json()) == {"error", "error_type"}
    finally:
        served.stop()
