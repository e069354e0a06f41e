"""The one object between HTTP and inference (as `Infer` in text-embeddings-inference).

A route hands it a task name and inputs and gets typed results back; it never touches
the queue or the engine itself. The flow is one way: check the task and the inputs'
shape, tokenize in a worker thread (off the event loop), queue the rows in the live
model's batcher, await them within the request timeout, and read the raw values by the
task's kind. Every refusal is a `ServiceError` carrying its HTTP status, so routes stay
thin and the service answers the same way whichever route was called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from model_store.manifest import TaskEntry
from service.batcher import QueueFull, RequestTooLarge, ShuttingDown
from service.engine import Engine, Prediction
from service.metrics import ServiceMetrics
from service.reloader import ModelReloader

RETRY_AFTER_SECONDS = "1"
# Tokenizing is fast (the Rust tokenizer releases the GIL); two threads keep a burst of
# requests from queueing behind one large batch request. A request of a few items is
# tokenized on the event loop: that takes tens of microseconds, less than the hand-off
# to a thread would.
_TOKENIZER_THREADS = 2
_INLINE_TOKENIZE_ITEMS = 4


class ServiceError(Exception):
    """A request the service will not answer, with the status and detail to send."""

    def __init__(self, status: int, detail: str, retry: bool = False) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = {"Retry-After": RETRY_AFTER_SECONDS} if retry else None


@dataclass(frozen=True)
class Inputs:
    """One request's inputs: texts, or pairs (`texts_b` then holds the second texts)."""

    texts_a: Sequence[str]
    texts_b: Sequence[str] | None = None

    @property
    def pair(self) -> bool:
        return self.texts_b is not None

    def __len__(self) -> int:
        return len(self.texts_a)


@dataclass(frozen=True)
class TaskResult:
    """A post-processed answer for one input, read by the task's kind."""

    task: TaskEntry
    prediction: Prediction
    model_version: str

    @property
    def truncated(self) -> bool:
        return self.prediction.truncated

    @property
    def label(self) -> int:
        """Classification: the most probable label's index; binary: 1 if positive."""
        values = self.prediction.values
        if self.task.kind == "binary":
            return int(values[0] >= 0.5)
        return int(values.argmax())

    @property
    def label_name(self) -> str:
        return self.task.label_names[self.label]

    @property
    def probabilities(self) -> list[float]:
        return [float(p) for p in self.prediction.values]

    @property
    def score(self) -> float:
        return float(self.prediction.values[0])


class Infer:
    """Validate, tokenize, queue, await and read results, for any served task."""

    def __init__(
        self,
        models: ModelReloader,
        metrics: ServiceMetrics,
        max_items_per_request: int,
        request_timeout_s: float,
    ) -> None:
        self._models = models
        self._metrics = metrics
        self._max_items = max_items_per_request
        self._timeout_s = request_timeout_s
        self._tokenizers = ThreadPoolExecutor(_TOKENIZER_THREADS, thread_name_prefix="tokenize")

    def close(self) -> None:
        self._tokenizers.shutdown(wait=True)

    def served_tasks(self) -> list[TaskEntry]:
        live = self._models.live
        return list(live.engine.manifest.tasks) if live is not None else []

    def task(self, name: str) -> TaskEntry:
        """The served task of that name: 503 before a model is loaded, 404 if unknown."""
        live = self._models.live
        if live is None:
            raise ServiceError(503, "model not loaded yet", retry=True)
        task = live.engine.tasks.get(name)
        if task is None:
            served = ", ".join(sorted(live.engine.tasks)) or "none"
            raise ServiceError(404, f"unknown task {name!r}; served tasks: {served}")
        return task

    async def predict(self, task_name: str, inputs: Inputs) -> list[TaskResult]:
        """Answers for every input, in order, all from one model version."""
        if len(inputs) > self._max_items:
            raise ServiceError(
                422,
                f"batch of {len(inputs)} items exceeds the limit of {self._max_items} per request",
            )
        loop = asyncio.get_running_loop()
        while True:
            live = self._models.live  # one (engine, batcher) pair for the whole request
            if live is None:
                raise ServiceError(503, "model not loaded yet", retry=True)
            task = self.task(task_name)
            if task.pair != inputs.pair:
                wanted = "a text pair (sentence1, sentence2 or pairs)" if task.pair else "one text"
                raise ServiceError(422, f"task {task.name} takes {wanted} per input")
            if len(inputs) <= _INLINE_TOKENIZE_ITEMS:
                rows = live.engine.encode(inputs.texts_a, inputs.texts_b)
                break
            rows = await loop.run_in_executor(
                self._tokenizers, live.engine.encode, inputs.texts_a, inputs.texts_b
            )
            if self._models.live is live:
                break
            # A reload swapped the model while this request was being tokenized: encode
            # again for the new one (its tokenizer, tasks and batcher), as if it came now.
        engine, batcher = live.engine, live.batcher
        try:
            futures = batcher.submit(rows, [task.task_id] * len(rows))
        except QueueFull as err:
            self._metrics.shed.inc()
            raise ServiceError(503, f"overloaded: {err}; retry later", retry=True) from err
        except RequestTooLarge as err:
            raise ServiceError(422, str(err)) from err
        except ShuttingDown as err:
            raise ServiceError(503, str(err), retry=True) from err
        try:
            predictions = await asyncio.wait_for(asyncio.gather(*futures), self._timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(
                503, f"no answer within {self._timeout_s} s; retry later", retry=True
            ) from None
        self._metrics.items.labels(task.name).inc(len(predictions))
        return [self._result(engine, task, p) for p in predictions]

    @staticmethod
    def _result(engine: Engine, task: TaskEntry, prediction: Prediction) -> TaskResult:
        return TaskResult(task, prediction, engine.version(task.name))
