"""text-embeddings-inference-compatible routes: `POST /embed`, `/predict`, `/rerank`,
`/tokenize`.

The request and response shapes of Hugging Face's text-embeddings-inference (TEI), so
its clients work unchanged:

- `/embed` `{"inputs": text | [texts], "normalize": true, "truncate": false}` answers
  `[[floats], ...]` from the served embedding task (the only one, or the one named
  `embedding`); `normalize: false` gives the raw mean-pooled vector.
- `/predict` `{"inputs": ..., "raw_scores": false, "truncate": false}`: `inputs` is a
  text, a pair `[a, b]`, or a batch `[[a], [b]]` / `[[a, b], ...]`; the answer is
  `[{"label", "score"}]` sorted by score (a list of those for a batch). TEI serves one
  classifier; here the task is the `BERT_MTS_TEI_PREDICT_TASK` setting, else the only
  served classification, binary or regression task taking the inputs' shape (text or
  pair); when several do and none is set, a 422 names them. Scores are probabilities
  (a binary task's two labels score 1 - p and p; a regression task's one label, its
  name, scores the value); `raw_scores` gives the logits (a binary task's as the
  two-class logits 0 and z, whose softmax is 1 - p, p).
- `/rerank` `{"query", "texts": [...], "raw_scores": false, "return_text": false,
  "truncate": false}` scores each (query, text) pair with a pair task and answers
  `[{"index", "score"[, "text"]}]`, highest score first. The task is
  `BERT_MTS_TEI_RERANK_TASK`, else the served `similarity` task, else the only served
  regression or binary pair task; with none (or several), a 422 says what to set.
  Scores are the task's score (regression) or probability (binary); `raw_scores` gives
  the raw output (the logit of a binary task).
- `/tokenize` `{"inputs": text | [texts], "add_special_tokens": true}` answers each
  text's tokens `{"id", "text", "special", "start", "stop"}`; `text[start:stop]` is a
  token's source in the text as sent (in characters; special tokens have none).

Inputs longer than the model's maximum length are refused (413) unless `truncate` is
true, as TEI does. Refusals are TEI's `{"error", "error_type"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from model_store.tasks import TaskDefinition
from service.inference import Infer, Inputs, TaskResult
from service.protocols.common import (
    ProtocolPath,
    claim,
    examples,
    json_error,
    protocol_route,
    refuse,
    register,
)
from service.schemas import Text, TextAsSent

EMBED, PREDICT, RERANK, TOKENIZE = "/embed", "/predict", "/rerank", "/tokenize"
_LABELLED = ("classification", "binary", "regression")
RERANK_SETTING = "BERT_MTS_TEI_RERANK_TASK"


def render(status: int, message: str, headers: dict[str, str] | None) -> Response:
    kind = {413: "Validation", 415: "Validation", 400: "Validation", 422: "Validation"}.get(
        status, "Overloaded" if status in (429, 503) else "Backend"
    )
    if status == 404:
        kind = "Validation"
    return json_error({"error": message, "error_type": kind}, status, headers)


Texts = Text | Annotated[list[Text], Field(min_length=1)]
Item = Annotated[list[Text], Field(min_length=1, max_length=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedRequest(_Strict):
    inputs: Texts
    normalize: bool = True
    truncate: bool = False
    truncation_direction: str = Field("Right", pattern="^(Right|right)$")


class PredictRequest(_Strict):
    inputs: Text | Item | Annotated[list[Item], Field(min_length=1)]
    raw_scores: bool = False
    truncate: bool = False
    truncation_direction: str = Field("Right", pattern="^(Right|right)$")


class RerankRequest(_Strict):
    query: Text
    texts: Annotated[list[Text], Field(min_length=1)]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    truncation_direction: str = Field("Right", pattern="^(Right|right)$")


class Rank(BaseModel):
    index: int
    score: float
    text: str | None = None


class TokenizeRequest(_Strict):
    # Not stripped: a token's start and stop index the text as sent.
    inputs: TextAsSent | Annotated[list[TextAsSent], Field(min_length=1)]
    add_special_tokens: bool = True


class Score(BaseModel):
    label: str
    score: float


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


ERROR_RESPONSES = {
    status: {"description": f"{description} (TEI error shape)"}
    for status, description in (
        (400, "Body could not be parsed"),
        (413, "Body too large, or an input over the max length without truncate"),
        (415, "Body is not JSON"),
        (422, "Invalid input, or no task to answer"),
        (429, "Overloaded: the queue is full; retry after Retry-After"),
        (503, "Timed out or not ready"),
    )
}
router = APIRouter(route_class=protocol_route(render), tags=["text-embeddings-inference"])


def _infer(request: Request) -> Infer:
    return request.app.state.infer


def _json(value) -> Response:
    return Response(to_json(value), media_type="application/json")


def _check_truncation(results: list[TaskResult], truncate: bool, max_len: int) -> None:
    if not truncate and any(result.truncated for result in results):
        raise refuse(
            413,
            f"Input validation error: inputs must have at most {max_len} tokens "
            "(send truncate: true to cut them)",
        )


def _embedding_task(infer: Infer) -> str:
    manifest = infer.served_manifest()
    if manifest is None:
        raise refuse(503, "model not loaded yet")
    names = [t.name for t in manifest.tasks if t.kind == "embedding"]
    if not names:
        raise refuse(422, "the served model has no embedding task")
    return "embedding" if "embedding" in names else names[0]


EmbedBody = Annotated[
    EmbedRequest,
    Body(
        openapi_examples=examples(
            texts={"inputs": ["a gripping, funny and humane film", "dull ."]},
            one_text_raw={"inputs": "a gripping film", "normalize": False},
        )
    ),
]
# The default model's only text classifier answers these (a pair needs the setting).
PredictBody = Annotated[
    PredictRequest,
    Body(
        openapi_examples=examples(
            one_text={"inputs": "a gripping, funny and humane film"},
            batch={"inputs": [["a gripping film"], ["dull ."]], "raw_scores": True},
        )
    ),
]
TokenizeBody = Annotated[
    TokenizeRequest,
    Body(
        openapi_examples=examples(
            one_text={"inputs": "a gripping film"},
            texts_without_special_tokens={
                "inputs": ["  naïve café", "dull ."],
                "add_special_tokens": False,
            },
        )
    ),
]


@router.post(EMBED, response_model=list[list[float]], responses=ERROR_RESPONSES)
async def embed(request: Request, body: EmbedBody) -> Response:
    """Sentence embeddings of one text or a batch (TEI's /embed)."""
    infer = _infer(request)
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    results = await infer.predict(_embedding_task(infer), Inputs(texts))
    manifest = infer.served_manifest()
    _check_truncation(results, body.truncate, manifest.max_seq_len if manifest else 0)
    vectors = [r.vector(body.normalize).tolist() for r in results]
    return _json(vectors)


def _predict_task(request: Request, infer: Infer, pair: bool) -> str:
    manifest = infer.served_manifest()
    if manifest is None:
        raise refuse(503, "model not loaded yet")
    configured = request.app.state.settings.tei_predict_task
    if configured:
        task = next((t for t in manifest.tasks if t.name == configured), None)
        if task is None or task.kind not in _LABELLED:
            what = "not served" if task is None else f"a {task.kind} task"
            raise refuse(422, f"BERT_MTS_TEI_PREDICT_TASK names {configured!r}, which is {what}")
        return configured  # Infer refuses inputs of the other shape
    fitting = [t.name for t in manifest.tasks if t.kind in _LABELLED and t.pair == pair]
    shape = "text pairs" if pair else "single texts"
    if len(fitting) != 1:
        found = ", ".join(fitting) or "none"
        raise refuse(
            422,
            f"/predict answers the only classification task taking {shape}; the model "
            f"serves {found}: set BERT_MTS_TEI_PREDICT_TASK to choose one",
        )
    return fitting[0]


def _scores(result: TaskResult, raw_scores: bool) -> list[Score]:
    task = result.task
    raw = np.asarray(result.prediction.raw, dtype=np.float64)
    if task.kind == "classification":
        values = raw if raw_scores else result.prediction.values
        scores = [
            Score(label=n, score=float(v)) for n, v in zip(task.label_names, values, strict=True)
        ]
    elif task.kind == "binary":
        negative, positive = task.label_names
        if raw_scores:
            pairs = ((negative, 0.0), (positive, float(raw[0])))
        else:
            pairs = ((negative, 1.0 - result.score), (positive, result.score))
        scores = [Score(label=n, score=v) for n, v in pairs]
    else:
        scores = [Score(label=task.name, score=float(raw[0]) if raw_scores else result.score)]
    return sorted(scores, key=lambda s: s.score, reverse=True)


@router.post(
    PREDICT,
    response_model=list[Score] | list[list[Score]],
    responses=ERROR_RESPONSES,
)
async def predict(request: Request, body: PredictBody) -> Response:
    """A classification of one text, one pair, or a batch (TEI's /predict)."""
    infer = _infer(request)
    raw = body.inputs
    single = not (isinstance(raw, list) and raw and isinstance(raw[0], list))
    items = [[raw]] if isinstance(raw, str) else ([raw] if single else raw)
    sizes = {len(item) for item in items}
    if len(sizes) != 1:
        raise refuse(422, "a batch holds only texts or only pairs, not both")
    pair = sizes.pop() == 2
    inputs = Inputs([i[0] for i in items], [i[1] for i in items] if pair else None)
    results = await infer.predict(_predict_task(request, infer, pair), inputs)
    manifest = infer.served_manifest()
    _check_truncation(results, body.truncate, manifest.max_seq_len if manifest else 0)
    answers = [_scores(r, body.raw_scores) for r in results]
    return _json(answers[0] if single else answers)


def rerank_setting_problem(configured: str | None, tasks: Sequence[TaskDefinition]) -> str | None:
    """Why `BERT_MTS_TEI_RERANK_TASK` cannot be served from these tasks, or None;
    checked at start-up (one line, exit 2) and again per request after a reload."""
    if not configured:
        return None
    task = next((t for t in tasks if t.name == configured), None)
    if task is None:
        served = ", ".join(t.name for t in tasks) or "none"
        return f"{RERANK_SETTING} names {configured!r}, which the store lacks (it has {served})"
    if not task.pair or not task.kind_of.ranks_pairs:
        return (
            f"{RERANK_SETTING} names {configured!r}, a {task.kind} task of {task.input}: "
            "/rerank needs a regression or binary task of pairs"
        )
    return None


def _rerank_task(request: Request, infer: Infer) -> str:
    manifest = infer.served_manifest()
    if manifest is None:
        raise refuse(503, "model not loaded yet")
    definitions = [t.definition for t in manifest.tasks]
    configured = request.app.state.settings.tei_rerank_task
    if configured:
        problem = rerank_setting_problem(configured, definitions)
        if problem:
            raise refuse(422, problem)
        return configured
    ranking = [t.name for t in definitions if t.pair and t.kind_of.ranks_pairs]
    if "similarity" in ranking:
        return "similarity"
    if len(ranking) != 1:
        found = ", ".join(ranking) or "none"
        raise refuse(
            422,
            "/rerank answers the served similarity task, else the only regression or "
            f"binary task of pairs; the model serves {found}: set {RERANK_SETTING}",
        )
    return ranking[0]


RerankBody = Annotated[
    RerankRequest,
    Body(
        openapi_examples=examples(
            ranked={
                "query": "a gripping film",
                "texts": ["a dull film", "a thrilling, gripping movie"],
                "return_text": True,
            },
        )
    ),
]


@router.post(RERANK, response_model=list[Rank], responses=ERROR_RESPONSES)
async def rerank(request: Request, body: RerankBody) -> Response:
    """The texts ordered by their relevance to the query, best first (TEI's /rerank)."""
    infer = _infer(request)
    task = _rerank_task(request, infer)
    inputs = Inputs([body.query] * len(body.texts), list(body.texts))
    results = await infer.predict(task, inputs)
    manifest = infer.served_manifest()
    _check_truncation(results, body.truncate, manifest.max_seq_len if manifest else 0)
    scores = [
        float(np.asarray(r.prediction.raw, dtype=np.float64)[0]) if body.raw_scores else r.score
        for r in results
    ]
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    answer = [
        {"index": i, "score": scores[i], **({"text": body.texts[i]} if body.return_text else {})}
        for i in order
    ]
    return _json(answer)


@router.post(TOKENIZE, response_model=list[list[SimpleToken]], responses=ERROR_RESPONSES)
async def tokenize(request: Request, body: TokenizeBody) -> Response:
    """Each text's tokens as the model sees them (TEI's /tokenize)."""
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    rows = await _infer(request).tokenize(texts)
    answer = [
        [
            SimpleToken(
                id=t.id,
                text=t.text,
                special=t.special,
                start=t.span[0] if t.span else None,
                stop=t.span[1] if t.span else None,
            )
            for t in row
            if body.add_special_tokens or not t.special
        ]
        for row in rows
    ]
    return _json(answer)


register(
    ProtocolPath(EMBED, True),
    ProtocolPath(PREDICT, True),
    ProtocolPath(RERANK, True),
    ProtocolPath(TOKENIZE, False),
)
claim(render, EMBED, PREDICT, RERANK, TOKENIZE)
