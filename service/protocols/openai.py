"""OpenAI-compatible embeddings: `POST /v1/embeddings` and `GET /v1/models`.

What the official `openai` client sends and parses (its `embeddings.create` asks for
base64 unless told otherwise, and decodes float32 little-endian). A model is a served
embedding task, by name (`GET /v1/models` lists them). `dimensions` is accepted only
when it equals the task's native size: the bases are not trained for shortened
(Matryoshka) vectors, so cutting them would silently degrade them. Arrays of token ids
are refused: the service tokenizes with its own tokenizer. Refusals are OpenAI's
`{"error": {"message", "type", "param", "code"}}`; an invalid body is a 400, as there.
"""

from __future__ import annotations

import base64
import time
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, ConfigDict, Field

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
from service.schemas import Text

EMBEDDINGS = "/v1/embeddings"
MODELS = "/v1/models"
MODEL = MODELS + "/{model}"
_CREATED = int(time.time())
_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error"}


def render(status: int, message: str, headers: dict[str, str] | None) -> Response:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    code = {404: "model_not_found", 429: "overloaded", 503: "overloaded"}.get(status)
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json_error(body, status, headers)


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request (`user` is accepted and ignored)."""

    model_config = ConfigDict(extra="forbid")

    input: (
        Text
        | Annotated[list[Text], Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[list[int]], Field(min_length=1)]
    )
    model: str = Field(max_length=200, description="a served embedding task (GET /v1/models)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="only the model's native size")
    user: str | None = Field(None, max_length=256)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of float32 LE")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


ERROR_RESPONSES = {
    status: {"description": description}
    for status, description in (
        (400, "Invalid request (OpenAI error shape)"),
        (404, "No such model"),
        (413, "Request body too large"),
        (415, "Body is not JSON"),
        (429, "Overloaded: the queue is full; retry after Retry-After"),
        (503, "Timed out or not ready"),
    )
}
router = APIRouter(route_class=protocol_route(render, invalid_status=400), tags=["OpenAI"])


def _infer(request: Request) -> Infer:
    return request.app.state.infer


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


EmbeddingsBody = Annotated[
    EmbeddingsRequest,
    Body(
        openapi_examples=examples(
            texts={"model": "embedding", "input": ["a gripping, funny and humane film", "dull ."]},
            one_text_base64={
                "model": "embedding",
                "input": "a gripping film",
                "encoding_format": "base64",
            },
        )
    ),
]


@router.post(EMBEDDINGS, response_model=EmbeddingsResponse, responses=ERROR_RESPONSES)
async def create_embeddings(request: Request, body: EmbeddingsBody) -> Response:
    """Embeddings of one text or a list of texts from a served embedding task (the
    base's sentence embedding, L2-normalised), in order, with their token counts."""
    if isinstance(body.input, list) and body.input and not isinstance(body.input[0], str):
        raise refuse(400, "token arrays are not supported: send the texts")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    infer = _infer(request)
    manifest = infer.served_manifest()
    task = None
    if manifest is not None:
        task = next((t for t in manifest.tasks if t.name == body.model), None)
        if task is not None and task.kind != "embedding":
            raise refuse(400, f"model {body.model!r} is a {task.kind} task, not an embedding")
        if task is not None and body.dimensions not in (None, task.definition.dimensions):
            raise refuse(
                400,
                f"dimensions {body.dimensions} is not supported: model {body.model!r} gives "
                f"{task.definition.dimensions}-dimensional vectors only",
            )
    if manifest is not None and task is None:
        names = ", ".join(t.name for t in manifest.tasks if t.kind == "embedding") or "none"
        raise refuse(404, f"the model {body.model!r} does not exist; served: {names}")
    results: list[TaskResult] = await infer.predict(body.model, Inputs(texts))
    tokens = sum(result.tokens for result in results)
    response = EmbeddingsResponse(
        data=[
            Embedding(index=i, embedding=_encode(r.vector(), body.encoding_format))
            for i, r in enumerate(results)
        ],
        model=body.model,
        usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
    )
    return Response(response.model_dump_json(), media_type="application/json")


def _embedding_tasks(request: Request) -> tuple[list[Model], bool]:
    """The served embedding tasks as OpenAI models, and whether a model is loaded."""
    manifest = _infer(request).served_manifest()
    if manifest is None:
        return [], False
    owner = str(manifest.base_model.get("name", "bert-mts"))
    tasks = [t for t in manifest.tasks if t.kind == "embedding"]
    return [Model(id=t.name, created=_CREATED, owned_by=owner) for t in tasks], True


@router.get(MODELS, response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The served embedding tasks, as OpenAI models."""
    models, _ = _embedding_tasks(request)
    return ModelList(data=models)


@router.get(MODEL, response_model=Model, responses=ERROR_RESPONSES)
async def retrieve_model(request: Request, model: str) -> Model:
    """One served embedding task, as an OpenAI model (404 if there is none by the name)."""
    models, loaded = _embedding_tasks(request)
    if not loaded:
        raise refuse(503, "model not loaded yet")
    found = next((m for m in models if m.id == model), None)
    if found is None:
        names = ", ".join(m.id for m in models) or "none"
        raise refuse(404, f"the model {model!r} does not exist; served: {names}")
    return found


register(
    ProtocolPath(EMBEDDINGS, True),
    ProtocolPath(MODELS, False),
    ProtocolPath(MODEL, False),
)
claim(render, EMBEDDINGS, MODELS)
