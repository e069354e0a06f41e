"""The Open Inference Protocol (KServe v2 / Triton HTTP): health, metadata, infer.

Every served task is a model, by its name. A text task takes one BYTES input `text`
(shape [n] or [n, 1], UTF-8), a pair task two, `text` and `text_pair`. Outputs follow
the task's kind, as the service's own endpoints answer it:

    classification  probabilities FP64 [n, labels], label INT64 [n]
    binary          probability FP64 [n], decision BOOL [n]
    multilabel      probabilities FP64 [n, labels], decisions BOOL [n, labels]
    regression      score FP64 [n]
    embedding       embedding FP32 [n, dimensions] (L2-normalised)

(FP64 where the service's own JSON carries float64: the numbers are the same bits.)
Inputs and outputs may be JSON or the binary tensor data extension: a body whose first
`Inference-Header-Content-Length` bytes are the JSON header, followed by each input's
bytes (`parameters.binary_data_size`); BYTES elements are a 4-byte little-endian length
and the bytes. Outputs come back binary when an output asks `binary_data` or the
request `binary_data_output`. Refusals are `{"error": message}`.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model_store.manifest import TaskEntry
from service.answers import decisions
from service.inference import Infer, Inputs, TaskResult
from service.protocols.common import (
    ProtocolPath,
    claim,
    examples,
    json_error,
    protocol_route,
    refuse,
    register,
    self_contained,
)
from service.validation import error_lines, problem

HEADER_LENGTH = "Inference-Header-Content-Length"
MODEL = "/v2/models/{task}"
# Triton's clients name the version when they are given one: the same routes, under it.
VERSION = MODEL + "/versions/{version}"
INFER, VERSION_INFER = MODEL + "/infer", VERSION + "/infer"
READY, VERSION_READY = MODEL + "/ready", VERSION + "/ready"
_INPUTS = {False: ("text",), True: ("text", "text_pair")}
_OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "classification": (("probabilities", "FP64"), ("label", "INT64")),
    "binary": (("probability", "FP64"), ("decision", "BOOL")),
    # one column per label, in the task's order: its probability, and whether it is on
    "multilabel": (("probabilities", "FP64"), ("decisions", "BOOL")),
    "regression": (("score", "FP64"),),
    "embedding": (("embedding", "FP32"),),
}
_NUMPY = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "BOOL": "?"}


def render(status: int, message: str, headers: dict[str, str] | None) -> Response:
    return json_error({"error": message}, status, headers)


class TensorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: Literal["BYTES"]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class TensorOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """The JSON (or the binary request's JSON header) of an inference request."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[TensorIn] = Field(min_length=1, max_length=2)
    outputs: list[TensorOut] | None = Field(None, max_length=8)


class TensorMeta(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = "bert-mts"
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]


router = APIRouter(route_class=protocol_route(render, invalid_status=400), tags=["KServe v2"])
_MODEL_ERRORS = {
    404: {"description": "No such model ({error})"},
    503: {"description": "No model loaded yet ({error})"},
}


def _infer(request: Request) -> Infer:
    return request.app.state.infer


def _task(request: Request, name: str, version: str | None = None) -> TaskEntry:
    """The served task by its model name; with a version, only if that version is the
    one served (its branch version: a model has one version at a time)."""
    manifest = _infer(request).served_manifest()
    if manifest is None:
        raise refuse(503, "model not loaded yet")
    task = next((t for t in manifest.tasks if t.name == name), None)
    if task is None:
        raise refuse(
            404, f"unknown model {name!r}; served: {', '.join(t.name for t in manifest.tasks)}"
        )
    if version is not None and version != task.branch_version:
        raise refuse(
            404, f"model {name!r} has no version {version!r}; served: {task.branch_version}"
        )
    return task


def _output_meta(task: TaskEntry) -> list[TensorMeta]:
    per_row = ("probabilities", "decisions", "embedding")
    return [
        TensorMeta(
            name=name,
            datatype=dtype,
            shape=[-1, task.definition.num_outputs] if name in per_row else [-1],
        )
        for name, dtype in _OUTPUTS[task.kind]
    ]


@router.get("/v2/health/live")
async def live() -> dict:
    """The process is up."""
    return {"live": True}


@router.get("/v2/health/ready", responses={503: {"description": "No model loaded yet"}})
async def ready(request: Request) -> Response:
    """A model is loaded (200), else 503."""
    loaded = _infer(request).served_manifest() is not None
    return json_error({"ready": loaded}, 200 if loaded else 503, None)


@router.get("/v2")
async def server_metadata(request: Request) -> dict:
    """Server name, version and the protocol extensions it supports."""
    return {
        "name": "bert-mts",
        "version": request.app.version,
        "extensions": ["binary_tensor_data"],
    }


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> list[dict]:
    """Every served task, as a ready model (its version: the task's branch version)."""
    manifest = _infer(request).served_manifest()
    tasks = manifest.tasks if manifest is not None else ()
    return [{"name": t.name, "version": t.branch_version, "state": "READY"} for t in tasks]


@router.get(MODEL, response_model=ModelMetadata, responses=_MODEL_ERRORS)
async def model_metadata(request: Request, task: str) -> ModelMetadata:
    """A task's inputs (BYTES texts) and outputs (by its kind)."""
    return _metadata(_task(request, task))


@router.get(VERSION, response_model=ModelMetadata, responses=_MODEL_ERRORS)
async def model_version_metadata(request: Request, task: str, version: str) -> ModelMetadata:
    """The same, for the version served (404 for any other)."""
    return _metadata(_task(request, task, version))


def _metadata(entry: TaskEntry) -> ModelMetadata:
    return ModelMetadata(
        name=entry.name,
        versions=[entry.branch_version],
        inputs=[TensorMeta(name=n, datatype="BYTES", shape=[-1]) for n in _INPUTS[entry.pair]],
        outputs=_output_meta(entry),
    )


@router.get(READY, responses=_MODEL_ERRORS)
async def model_ready(request: Request, task: str) -> dict:
    """200 when the task is served (404 otherwise)."""
    entry = _task(request, task)
    return {"name": entry.name, "ready": True}


@router.get(VERSION_READY, responses=_MODEL_ERRORS)
async def model_version_ready(request: Request, task: str, version: str) -> dict:
    """200 when the task is served at this version (404 otherwise)."""
    entry = _task(request, task, version)
    return {"name": entry.name, "version": version, "ready": True}


def _header_length(header: str, body_size: int) -> int:
    """The JSON header's length from `Inference-Header-Content-Length`: ASCII digits
    only, no more than the body's size has (`str.isdigit` also accepts "²", and `int`
    refuses more than 4,300 digits with a ValueError), and within the body."""
    if (
        not 0 < len(header) <= len(str(body_size))
        or not header.isascii()
        or not header.isdigit()
        or int(header) > body_size
    ):
        raise refuse(400, f"{HEADER_LENGTH} must be a length within the body, got {header[:20]!r}")
    return int(header)


def _split_body(request: Request, body: bytes) -> tuple[InferRequest, bytes]:
    header = request.headers.get(HEADER_LENGTH)
    if header is None:
        json_part, binary = body, b""
    else:
        length = _header_length(header, len(body))
        json_part, binary = body[:length], body[length:]
    try:
        return InferRequest.model_validate_json(json_part), binary
    except ValidationError as err:
        errors = err.errors(include_url=False, include_input=False)
        try:
            parsed = json.loads(json_part)
        except ValueError:  # not JSON at all: pydantic's error says where
            line = error_lines(errors)
        else:
            line = problem([InferRequest], parsed, errors)
        raise refuse(400, f"invalid inference request: {line}") from None


def _texts(tensor: TensorIn, binary: bytes, offset: int) -> tuple[list[str], int]:
    """A BYTES tensor's texts, from its JSON data or its binary bytes at `offset`."""
    count = math.prod(tensor.shape)
    if len(tensor.shape) == 2 and tensor.shape[1] != 1:
        raise refuse(
            400, f"input {tensor.name} has shape {tensor.shape}: one text per row ([n] or [n, 1])"
        )
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise refuse(400, f"input {tensor.name}: binary_data_size beyond the body")
        raw, items, at = binary[offset : offset + size], [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise refuse(400, f"input {tensor.name}: truncated BYTES element")
            length = int.from_bytes(raw[at : at + 4], "little")
            items.append(raw[at + 4 : at + 4 + length])
            if at + 4 + length > len(raw):
                raise refuse(400, f"input {tensor.name}: truncated BYTES element")
            at += 4 + length
        offset += size
    else:
        if tensor.data is None:
            raise refuse(400, f"input {tensor.name} has neither data nor binary_data_size")
        items = list(_flatten(tensor.data))
    if len(items) != count or count < 1:
        raise refuse(400, f"input {tensor.name}: shape {tensor.shape} but {len(items)} elements")
    texts = []
    for item in items:
        try:
            text = item.decode("utf-8") if isinstance(item, bytes) else item
        except UnicodeDecodeError:
            raise refuse(400, f"input {tensor.name} holds bytes that are not UTF-8") from None
        if not isinstance(text, str) or not text.strip() or not _encodable(text):
            raise refuse(400, f"input {tensor.name}: every element must be a non-empty text")
        texts.append(text)
    return texts, offset


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _flatten(data: list[Any]):
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _flag(parameters: dict[str, Any] | None, name: str, default: bool) -> bool:
    """A boolean parameter: a JSON true or false, else a 400 (the string "false" is
    truthy, and must not turn binary output on)."""
    value = (parameters or {}).get(name, default)
    if not isinstance(value, bool):
        raise refuse(400, f"parameter {name} must be true or false, got {str(value)[:40]!r}")
    return value


def _values(task: TaskEntry, results: list[TaskResult], name: str) -> np.ndarray:
    if name == "probabilities":
        return np.array([r.prediction.values for r in results], dtype=np.float64)
    if name == "label":
        return np.array([r.label for r in results], dtype=np.int64)
    if name in ("probability", "score"):
        return np.array([r.score for r in results], dtype=np.float64)
    if name == "decision":
        return np.array([bool(r.label) for r in results], dtype=bool)
    if name == "decisions":
        return np.array([decisions(task, r.prediction.values) for r in results], dtype=bool)
    return np.stack([r.vector() for r in results]).astype(np.float32)


_TEXTS = ["a gripping, funny and humane film", "dull ."]
_INFER_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": self_contained(InferRequest),
                "examples": examples(
                    texts={
                        "inputs": [
                            {"name": "text", "shape": [2], "datatype": "BYTES", "data": _TEXTS}
                        ]
                    },
                    one_output={
                        "id": "request-1",
                        "inputs": [
                            {
                                "name": "text",
                                "shape": [1, 1],
                                "datatype": "BYTES",
                                "data": [_TEXTS[0]],
                            }
                        ],
                        "outputs": [{"name": "label"}],
                    },
                ),
            }
        },
        "required": True,
    }
}
# The examples' model: a classification task taking one text (the default's sentiment).
InferModel = Annotated[
    str, Path(openapi_examples=examples(sentiment="sentiment"), description="a served task")
]
_INFER_ERRORS = {
    400: {"description": "Invalid request ({error})"},
    413: {"description": "Request body too large ({error})"},
    **_MODEL_ERRORS,
}


@router.post(INFER, openapi_extra=_INFER_BODY, responses=_INFER_ERRORS)
async def infer(request: Request, task: InferModel) -> Response:
    """Run a task on BYTES text tensors (JSON or binary tensor data); outputs by kind."""
    return await _run(request, _task(request, task))


@router.post(VERSION_INFER, openapi_extra=_INFER_BODY, responses=_INFER_ERRORS)
async def infer_version(request: Request, task: InferModel, version: str) -> Response:
    """The same, for the version served (404 for any other)."""
    return await _run(request, _task(request, task, version))


async def _run(request: Request, entry: TaskEntry) -> Response:
    """Check the whole request (inputs, outputs, flags) before it costs inference."""
    task = entry.name
    body = await request.body()
    parsed, binary = _split_body(request, body)
    wanted = _INPUTS[entry.pair]
    names = [t.name for t in parsed.inputs]
    if sorted(names) != sorted(wanted):
        raise refuse(400, f"model {task} takes inputs {', '.join(wanted)}, got {', '.join(names)}")
    texts, offset = {}, 0
    for tensor in parsed.inputs:  # binary data follows the header in the inputs' order
        texts[tensor.name], offset = _texts(tensor, binary, offset)
    if entry.pair and len(texts["text"]) != len(texts["text_pair"]):
        raise refuse(400, "inputs text and text_pair must hold as many elements")
    inputs = Inputs(texts["text"], texts["text_pair"] if entry.pair else None)
    known = [name for name, _ in _OUTPUTS[entry.kind]]
    asked = [o.name for o in parsed.outputs] if parsed.outputs else known
    unknown = [name for name in asked if name not in known]
    if unknown:
        raise refuse(400, f"model {task} has no output {unknown[0]!r}; it has {', '.join(known)}")
    all_binary = _flag(parsed.parameters, "binary_data_output", False)
    binary_of = {
        o.name: _flag(o.parameters, "binary_data", all_binary) for o in parsed.outputs or []
    }
    results = await _infer(request).predict(task, inputs)
    dtypes = dict(_OUTPUTS[entry.kind])
    outputs, chunks = [], []
    for name in asked:
        values = _values(entry, results, name)
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": dtypes[name],
            "shape": list(values.shape),
        }
        if binary_of.get(name, all_binary):
            raw = values.astype(_NUMPY[dtypes[name]]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values.ravel().tolist()
        outputs.append(tensor)
    header: dict[str, Any] = {
        "model_name": task,
        "model_version": entry.branch_version,
        "outputs": outputs,
    }
    if parsed.id is not None:
        header["id"] = parsed.id
    encoded = json.dumps(header, ensure_ascii=True, allow_nan=False).encode()
    if not chunks:
        return Response(encoded, media_type="application/json")
    return Response(
        encoded + b"".join(chunks),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(encoded))},
    )


register(
    ProtocolPath(INFER, True),
    ProtocolPath(VERSION_INFER, True),
    ProtocolPath(READY, False),
    ProtocolPath(VERSION_READY, False),
    ProtocolPath(MODEL, False),
    ProtocolPath(VERSION, False),
    ProtocolPath("/v2/health/live", False),
    ProtocolPath("/v2/health/ready", False),
    ProtocolPath("/v2/repository/index", False),
    ProtocolPath("/v2", False),
)
claim(render, "/v2")
