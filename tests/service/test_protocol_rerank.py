"""text-embeddings-inference's POST /rerank against a live service: it ranks with the
served similarity task (or the one the setting names), its scores are that task's own
answers, and its refusals come as TEI's {"error", "error_type"}; a setting naming a
task the store lacks, or one that takes no pairs, ends start-up in one line."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

from service import __main__ as serve_main
from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer

QUERY = "a gripping film"
TEXTS = ["a dull film", "a gripping, funny film", "the weather is cold", "gripping"]


def _serve(store: Path, **settings) -> ThreadedServer:
    return ThreadedServer(create_app(Settings(model_dir=store, provider="cpu", **settings)))


@pytest.fixture(scope="module")
def url(tiny_store: Path):
    served = _serve(tiny_store, max_items_per_request=8)
    yield served.url
    served.stop()


def _own(url: str, task: str) -> list[dict]:
    pairs = [[QUERY, t] for t in TEXTS]
    return httpx.post(f"{url}/v1/tasks/{task}", json={"pairs": pairs}).json()["results"]


def test_rerank_orders_by_the_similarity_score(url: str) -> None:
    answer = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": TEXTS}).json()
    own = [r["score"] for r in _own(url, "similarity")]
    assert sorted(a["index"] for a in answer) == list(range(len(TEXTS)))
    assert [a["score"] for a in answer] == sorted(own, reverse=True)
    assert all(own[a["index"]] == a["score"] and set(a) == {"index", "score"} for a in answer)
    body = {"query": QUERY, "texts": TEXTS, "return_text": True}
    with_text = httpx.post(f"{url}/rerank", json=body).json()
    assert [a["text"] for a in with_text] == [TEXTS[a["index"]] for a in answer]


def test_rerank_setting_picks_a_binary_task_and_raw_scores_are_logits(tiny_store: Path) -> None:
    served = _serve(tiny_store, tei_rerank_task="paraphrase")
    try:
        body = {"query": QUERY, "texts": TEXTS}
        answer = httpx.post(f"{served.url}/rerank", json=body).json()
        own = [r["probability"] for r in _own(served.url, "paraphrase")]
        assert [a["score"] for a in answer] == sorted(own, reverse=True)
        raw = httpx.post(f"{served.url}/rerank", json={**body, "raw_scores": True}).json()
        assert [a["index"] for a in raw] == [a["index"] for a in answer]  # sigmoid keeps order
        for logit in raw:
            assert math.isclose(
                1 / (1 + math.exp(-logit["score"])), own[logit["index"]], rel_tol=1e-5
            )
    finally:
        served.stop()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"query": QUERY, "texts": []}, 422),
        ({"query": QUERY, "texts": ["x"] * 9}, 422),  # over max_items_per_request
        ({"query": QUERY, "texts": ["x", 3]}, 422),
        ({"query": 3, "texts": ["x"]}, 422),
        ({"query": QUERY}, 422),
        ({"query": QUERY, "texts": ["x"], "top_n": 1}, 422),  # unknown fields, as the others
        ({"query": QUERY, "texts": [" ".join(["word"] * 200)]}, 413),  # the pair is too long
        (b"{", 400),
    ],
    ids=[
        "empty",
        "too-many",
        "non-string",
        "query-not-string",
        "no-texts",
        "unknown",
        "long",
        "bad-json",
    ],
)
def test_rerank_refusals_in_tei_shape(url: str, body, status: int) -> None:
    if isinstance(body, bytes):
        headers = {"content-type": "application/json"}
        response = httpx.post(f"{url}/rerank", content=body, headers=headers)
    else:
        response = httpx.post(f"{url}/rerank", json=body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "error_type"}


def test_long_pair_is_cut_when_asked(url: str) -> None:
    body = {"query": QUERY, "texts": [" ".join(["word"] * 200)], "truncate": True}
    assert httpx.post(f"{url}/rerank", json=body).status_code == 200


def test_no_rerank_task_says_what_to_set(embedding_repository: Path) -> None:
    served = _serve(embedding_repository)  # sentiment and embedding: no pair task
    try:
        response = httpx.post(f"{served.url}/rerank", json={"query": QUERY, "texts": ["x"]})
        assert response.status_code == 422
        assert "BERT_MTS_TEI_RERANK_TASK" in response.json()["error"]
    finally:
        served.stop()


@pytest.mark.parametrize(
    ("task", "reason"), [("missing", "the store lacks"), ("sentiment", "needs a regression")]
)
def test_start_up_refuses_a_rerank_setting_it_cannot_serve(
    tiny_store: Path, monkeypatch, capsys, task: str, reason: str
) -> None:
    monkeypatch.setenv("BERT_MTS_TEI_RERANK_TASK", task)
    monkeypatch.setattr(serve_main, "CleanExitServer", None)  # never reached
    assert serve_main.main(["--model-dir", str(tiny_store), "--provider", "cpu"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert reason in line and task in line
