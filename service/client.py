"""Typed clients for the BERT-MTS HTTP API, synchronous and asynchronous, on httpx.

    from service.client import Client
    with Client("http://127.0.0.1:8000") as client:
        client.sentiment("a gripping, funny film").label_name
        client.similarity("A man plays guitar.", "A man is playing a guitar.").score
        client.predict("topic", "the striker scored twice").label_name   # any served task
        client.predict("similarity", ("A man plays.", "A man is playing.")).score
        [task.name for task in client.tasks()]
        client.predict_many("the film was great").answers["sentiment"].label_name
        client.predict_many(("a", "b"), tasks=["paraphrase", "similarity"]).layer_evaluations

Responses are parsed into the service's own pydantic models, so a client and a server
of the same version cannot disagree on the contract. A 4xx/5xx raises `ApiError` with
the status code and the server's `detail`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from service import schemas

DEFAULT_URL = "http://127.0.0.1:8000"
Model = TypeVar("Model", bound=BaseModel)


class ApiError(Exception):
    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_error:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise ApiError(response.status_code, detail)


def _parse(response: httpx.Response, model: type[Model]) -> Model:
    _raise_for_error(response)
    return model.model_validate_json(response.content)


def _pair(a: str, b: str) -> dict[str, str]:
    return {"sentence1": a, "sentence2": b}


def _pairs(pairs: Sequence[tuple[str, str]]) -> dict[str, list[list[str]]]:
    return {"pairs": [[a, b] for a, b in pairs]}


Item = str | tuple[str, str]
_RESULT = TypeAdapter(schemas.TaskResult)


def _task_path(task: str) -> str:
    return f"/v1/tasks/{task}"


def _item_body(item: Item) -> dict:
    """One input: a text, or a (sentence1, sentence2) pair."""
    return {"text": item} if isinstance(item, str) else _pair(*item)


def _items_body(items: Sequence[Item]) -> dict:
    if all(isinstance(item, str) for item in items):
        return {"texts": list(items)}
    return _pairs(items)  # type: ignore[arg-type]


def _many_body(body: dict, tasks: Sequence[str] | None) -> dict:
    return body if tasks is None else {**body, "tasks": list(tasks)}


def _parse_result(response: httpx.Response) -> schemas.TaskResult:
    _raise_for_error(response)
    return _RESULT.validate_json(response.content)


class Client:
    """Blocking client; reuse one instance (it keeps connections alive)."""

    def __init__(self, base_url: str = DEFAULT_URL, timeout: float = 30.0, **httpx_options) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, **httpx_options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict, model: type[Model]) -> Model:
        return _parse(self._http.post(path, json=body), model)

    def sentiment(self, text: str) -> schemas.SentimentResponse:
        return self._post("/sentiment", {"text": text}, schemas.SentimentResponse)

    def sentiment_batch(self, texts: Sequence[str]) -> schemas.SentimentBatchResponse:
        return self._post("/sentiment", {"texts": list(texts)}, schemas.SentimentBatchResponse)

    def paraphrase(self, sentence1: str, sentence2: str) -> schemas.ParaphraseResponse:
        return self._post("/paraphrase", _pair(sentence1, sentence2), schemas.ParaphraseResponse)

    def paraphrase_batch(self, pairs: Sequence[tuple[str, str]]) -> schemas.ParaphraseBatchResponse:
        return self._post("/paraphrase", _pairs(pairs), schemas.ParaphraseBatchResponse)

    def similarity(self, sentence1: str, sentence2: str) -> schemas.SimilarityResponse:
        return self._post("/similarity", _pair(sentence1, sentence2), schemas.SimilarityResponse)

    def similarity_batch(self, pairs: Sequence[tuple[str, str]]) -> schemas.SimilarityBatchResponse:
        return self._post("/similarity", _pairs(pairs), schemas.SimilarityBatchResponse)

    def predict(self, task: str, item: Item) -> schemas.TaskResult:
        """Any served task, one input: a text, or a (sentence1, sentence2) pair."""
        return _parse_result(self._http.post(_task_path(task), json=_item_body(item)))

    def predict_batch(self, task: str, items: Sequence[Item]) -> schemas.TaskBatchResponse:
        return self._post(_task_path(task), _items_body(items), schemas.TaskBatchResponse)

    def tasks(self) -> list[schemas.TaskDescription]:
        return _parse(self._http.get("/v1/tasks"), schemas.TaskList).tasks

    def task_list(self) -> schemas.TaskList:
        """The tasks with their fork depths, and the model's layer counts."""
        return _parse(self._http.get("/v1/tasks"), schemas.TaskList)

    def predict_many(
        self, item: Item, tasks: Sequence[str] | None = None
    ) -> schemas.MultiTaskResponse:
        """Several tasks about one input (default: every served task of its shape)."""
        body = _many_body(_item_body(item), tasks)
        return self._post("/v1/predict", body, schemas.MultiTaskResponse)

    def predict_many_batch(
        self, items: Sequence[Item], tasks: Sequence[str] | None = None
    ) -> schemas.MultiTaskBatchResponse:
        body = _many_body(_items_body(items), tasks)
        return self._post("/v1/predict", body, schemas.MultiTaskBatchResponse)

    def info(self) -> schemas.ServiceInfo:
        return _parse(self._http.get("/info"), schemas.ServiceInfo)

    def ready(self) -> bool:
        return self._http.get("/ready").status_code == 200

    def metrics(self) -> str:
        return self._http.get("/metrics").text


class AsyncClient:
    """The same calls for asyncio code; reuse one instance."""

    def __init__(self, base_url: str = DEFAULT_URL, timeout: float = 30.0, **httpx_options) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, **httpx_options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict, model: type[Model]) -> Model:
        return _parse(await self._http.post(path, json=body), model)

    async def sentiment(self, text: str) -> schemas.SentimentResponse:
        return await self._post("/sentiment", {"text": text}, schemas.SentimentResponse)

    async def sentiment_batch(self, texts: Sequence[str]) -> schemas.SentimentBatchResponse:
        return await self._post(
            "/sentiment", {"texts": list(texts)}, schemas.SentimentBatchResponse
        )

    async def paraphrase(self, sentence1: str, sentence2: str) -> schemas.ParaphraseResponse:
        return await self._post(
            "/paraphrase", _pair(sentence1, sentence2), schemas.ParaphraseResponse
        )

    async def paraphrase_batch(
        self, pairs: Sequence[tuple[str, str]]
    ) -> schemas.ParaphraseBatchResponse:
        return await self._post("/paraphrase", _pairs(pairs), schemas.ParaphraseBatchResponse)

    async def similarity(self, sentence1: str, sentence2: str) -> schemas.SimilarityResponse:
        return await self._post(
            "/similarity", _pair(sentence1, sentence2), schemas.SimilarityResponse
        )

    async def similarity_batch(
        self, pairs: Sequence[tuple[str, str]]
    ) -> schemas.SimilarityBatchResponse:
        return await self._post("/similarity", _pairs(pairs), schemas.SimilarityBatchResponse)

    async def predict(self, task: str, item: Item) -> schemas.TaskResult:
        return _parse_result(await self._http.post(_task_path(task), json=_item_body(item)))

    async def predict_batch(self, task: str, items: Sequence[Item]) -> schemas.TaskBatchResponse:
        return await self._post(_task_path(task), _items_body(items), schemas.TaskBatchResponse)

    async def tasks(self) -> list[schemas.TaskDescription]:
        return _parse(await self._http.get("/v1/tasks"), schemas.TaskList).tasks

    async def task_list(self) -> schemas.TaskList:
        return _parse(await self._http.get("/v1/tasks"), schemas.TaskList)

    async def predict_many(
        self, item: Item, tasks: Sequence[str] | None = None
    ) -> schemas.MultiTaskResponse:
        body = _many_body(_item_body(item), tasks)
        return await self._post("/v1/predict", body, schemas.MultiTaskResponse)

    async def predict_many_batch(
        self, items: Sequence[Item], tasks: Sequence[str] | None = None
    ) -> schemas.MultiTaskBatchResponse:
        body = _many_body(_items_body(items), tasks)
        return await self._post("/v1/predict", body, schemas.MultiTaskBatchResponse)

    async def info(self) -> schemas.ServiceInfo:
        return _parse(await self._http.get("/info"), schemas.ServiceInfo)

    async def ready(self) -> bool:
        return (await self._http.get("/ready")).status_code == 200

    async def metrics(self) -> str:
        return (await self._http.get("/metrics")).text
