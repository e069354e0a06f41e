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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from model_store.manifest import Manifest, TaskEntry
from model_store.tokenizer import MAX_CHARS_PER_TOKEN, Token
from service import tracing
from service.answers import label_of, normalized
from service.batcher import QueueFull, RequestTooLarge, ShuttingDown
from service.engine import Engine, Prediction
from service.metrics import ServiceMetrics
from service.reloader import ModelReloader

RETRY_AFTER_SECONDS = "1"
# Every request is tokenized in a worker thread, never on the event loop: the loop
# then only parses, queues and answers, and under load the tokenizing of many requests
# runs beside it (the Rust tokenizer releases the GIL). Two threads keep a burst of
# requests from queueing behind one large batch request. (Tokenizing a few items on the
# loop saved the hand-off at concurrency 1 but held the loop at 64: docs/results.md.)
_TOKENIZER_THREADS = 2
_T = TypeVar("_T")


def _unknown_task(engine: Engine, name: str) -> str:
    served = ", ".join(sorted(engine.tasks)) or "none"
    return f"unknown task {name!r}; served tasks: {served}"


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
        return label_of(self.task, self.prediction.values)

    @property
    def label_name(self) -> str:
        return self.task.label_names[self.label]

    @property
    def probabilities(self) -> list[float]:
        return [float(p) for p in self.prediction.values]

    @property
    def score(self) -> float:
        return float(self.prediction.values[0])

    def vector(self, normalize: bool = True) -> np.ndarray:
        """Embedding: the pooled vector (float32), L2-normalised unless asked raw, as
        sentence-transformers' Normalize module does (x / max(|x|, 1e-12))."""
        if not normalize:
            return np.asarray(self.prediction.values, dtype=np.float32)
        return normalized(self.prediction.values)

    @property
    def embedding(self) -> list[float]:
        return self.vector().tolist()

    @property
    def tokens(self) -> int:
        """Tokens the input ran as (special tokens included, after truncation)."""
        return self.prediction.tokens


@dataclass(frozen=True)
class MultiTaskAnswers:
    """A multi-task request's answers, all from one model version."""

    tasks: list[str]  # in the order asked, repeats dropped
    answers: list[dict[str, TaskResult]]  # per input, by task name
    layer_evaluations: int  # encoder layers each input ran for these tasks


class Infer:
    """Validate, tokenize, queue, await and read results, for any served task."""

    def __init__(
        self,
        models: ModelReloader,
        metrics: ServiceMetrics,
        max_items_per_request: int,
        request_timeout_s: float,
        max_tokenizing_items: int = 1024,
        max_tokenizing_chars: int = 32768 * MAX_CHARS_PER_TOKEN,
        inline_tokenizing_chars: int = 0,
    ) -> None:
        self._models = models
        self._metrics = metrics
        self._max_items = max_items_per_request
        self._timeout_s = request_timeout_s
        self._tokenizers = ThreadPoolExecutor(_TOKENIZER_THREADS, thread_name_prefix="tokenize")
        # The tokenizer stage is bounded like the queue after it: inputs (and characters,
        # as each text is read up to its cut) waiting for or in the tokenizer threads.
        self._max_tokenizing = (max_tokenizing_items, max_tokenizing_chars)
        self._tokenizing = [0, 0]
        # A request of at most this many characters is tokenized on the event loop: it
        # takes less time there than the hand-off to a thread and back, and it does
        # not queue behind long texts in the tokenizer threads.
        self._inline_chars = inline_tokenizing_chars

    def close(self) -> None:
        self._tokenizers.shutdown(wait=True)

    def served_manifest(self) -> Manifest | None:
        """The live model's manifest (fork depths, layer counts), None before a load."""
        live = self._models.live
        return live.engine.manifest if live is not None else None

    async def tokenize(self, texts: Sequence[str]) -> list[list[Token]]:
        """The live model's tokens of each text (cut as for inference), through the same
        tokenizer stage as the task routes: its bounds (else 429), off the event loop
        unless short, within the request timeout."""
        if len(texts) > self._max_items:
            raise ServiceError(
                422,
                f"batch of {len(texts)} items exceeds the limit of {self._max_items} per request",
            )
        live = self._models.live
        if live is None:
            raise ServiceError(503, "model not loaded yet", retry=True)
        loop = asyncio.get_running_loop()
        tokenizer = live.engine.tokenizer
        try:
            return await self._in_stage(
                tokenizer.max_chars,
                len(texts),
                texts,
                lambda: tokenizer.tokens(texts),
                loop.time() + self._timeout_s,
            )
        except QueueFull as err:
            raise self._shed(err) from err

    async def predict(self, task_name: str, inputs: Inputs) -> list[TaskResult]:
        """Answers for every input, in order, all from one model version."""

        def resolve(engine: Engine) -> list[TaskEntry]:
            task = engine.tasks.get(task_name)
            if task is None:
                raise ServiceError(404, _unknown_task(engine, task_name))
            self._check_shape(task, inputs)
            return [task]

        engine, (task,), predictions = await self._run(inputs, resolve)
        return [self._result(engine, task, p[task.name]) for p in predictions]

    async def predict_many(
        self, task_names: Sequence[str] | None, inputs: Inputs
    ) -> MultiTaskAnswers:
        """Every requested task's answer for every input, each input's frozen layers run
        once (its row fans out to the tasks' branches in the graph). `task_names` None
        means every served task that takes the inputs' shape."""

        def resolve(engine: Engine) -> list[TaskEntry]:
            if task_names is None:
                tasks = [t for t in engine.manifest.tasks if t.pair == inputs.pair]
                if not tasks:
                    shape = "text pairs" if inputs.pair else "single texts"
                    raise ServiceError(422, f"no served task takes {shape}")
                return tasks
            if not task_names:
                raise ServiceError(422, "tasks is empty: name at least one task, or leave it out")
            unknown = [name for name in task_names if name not in engine.tasks]
            if unknown:
                raise ServiceError(422, _unknown_task(engine, unknown[0]))
            tasks = [engine.tasks[name] for name in dict.fromkeys(task_names)]
            for task in tasks:
                self._check_shape(task, inputs)
            return tasks

        engine, tasks, predictions = await self._run(inputs, resolve)
        answers = [
            {task.name: self._result(engine, task, row[task.name]) for task in tasks}
            for row in predictions
        ]
        names = [task.name for task in tasks]
        return MultiTaskAnswers(names, answers, engine.manifest.layer_evaluations(names))

    @staticmethod
    def _check_shape(task: TaskEntry, inputs: Inputs) -> None:
        if task.pair != inputs.pair:
            wanted = "a text pair (sentence1, sentence2 or pairs)" if task.pair else "one text"
            raise ServiceError(422, f"task {task.name} takes {wanted} per input")

    async def _run(
        self, inputs: Inputs, resolve: Callable[[Engine], list[TaskEntry]]
    ) -> tuple[Engine, list[TaskEntry], list[dict[str, Prediction]]]:
        """Tokenize, queue one row per input asking `resolve`'s tasks, await the rows:
        the live engine, the tasks, and each row's predictions by task name."""
        if len(inputs) > self._max_items:
            raise ServiceError(
                422,
                f"batch of {len(inputs)} items exceeds the limit of {self._max_items} per request",
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s  # tokenizing, queueing and the batch
        try:
            while True:
                live = self._models.live  # one (engine, batcher) pair for the whole request
                if live is None:
                    raise ServiceError(503, "model not loaded yet", retry=True)
                tasks = resolve(live.engine)
                tokenize_started = tracing.now_ns()
                rows = await self._tokenize(live.engine, inputs, deadline)
                tracing.record_tokenize(tokenize_started, tracing.now_ns(), len(rows))
                if self._models.live is live:
                    break
                # A reload swapped the model while this request was being tokenized: encode
                # again for the new one (its tokenizer, tasks and batcher), as if it came now.
            engine, batcher = live.engine, live.batcher
            task_set = tuple(task.task_id for task in tasks)
            submitted = tracing.now_ns()
            futures = batcher.submit(rows, [task_set] * len(rows))
        except QueueFull as err:
            raise self._shed(err) from err
        except RequestTooLarge as err:
            raise ServiceError(422, str(err)) from err
        except ShuttingDown as err:
            raise ServiceError(503, str(err), retry=True) from err
        gathered = asyncio.gather(*futures)
        # A timeout or a hang-up (the handler cancelled) cancels the rows, and the gather
        # then ends with CancelledError that no one awaits: mark it read, not logged.
        gathered.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            predictions = await asyncio.wait_for(gathered, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise self._late() from None
        tracing.record_batches(submitted, [task.name for task in tasks], predictions)
        for task in tasks:
            self._metrics.items.labels(task.name).inc(len(predictions))
        return engine, tasks, list(predictions)

    def _late(self) -> ServiceError:
        """Accepted but not answered in time: the service failed this request (not the
        client's rate, which the queue's bounds already judged), so 503, as for a replica
        that cannot serve; its rows are dropped from the queue."""
        return ServiceError(503, f"no answer within {self._timeout_s} s; retry later", retry=True)

    def _shed(self, err: QueueFull) -> ServiceError:
        """429, as peers answer a full queue (text-embeddings-inference, vLLM): the
        client sent too much, now; 503 means this replica cannot serve at all."""
        self._metrics.shed.inc()
        return ServiceError(429, f"overloaded: {err}; retry later", retry=True)

    async def _tokenize(self, engine: Engine, inputs: Inputs, deadline: float) -> list:
        """The inputs' rows, encoded in the tokenizer stage."""
        texts = [*inputs.texts_a, *(inputs.texts_b or ())]
        return await self._in_stage(
            engine.tokenizer.max_chars,
            len(inputs),
            texts,
            lambda: engine.encode(inputs.texts_a, inputs.texts_b),
            deadline,
        )

    async def _in_stage(
        self,
        max_chars: int,
        items: int,
        texts: Sequence[str],
        work: Callable[[], _T],
        deadline: float,
    ) -> _T:
        """Run `work` (tokenizing `texts`, each read up to `max_chars`) on the loop if
        the request is short, else in a tokenizer thread, within the tokenizer stage's
        bound (else QueueFull, shed like a full queue) and the request's deadline."""
        cost = (items, sum(min(len(text), max_chars) for text in texts))
        if cost[1] <= self._inline_chars:
            return work()
        held_items, held_chars = self._tokenizing
        max_items, max_held_chars = self._max_tokenizing
        if held_items and (
            held_items + cost[0] > max_items or held_chars + cost[1] > max_held_chars
        ):
            raise QueueFull(
                f"tokenizer stage full ({held_items} inputs, {held_chars} characters "
                "being tokenized)"
            )
        self._tokenizing = [held_items + cost[0], held_chars + cost[1]]
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(self._tokenizers, work)
        running.add_done_callback(lambda _: self._release(cost))  # when the thread is done
        try:
            return await asyncio.wait_for(asyncio.shield(running), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise self._late() from None

    def _release(self, cost: tuple[int, int]) -> None:
        self._tokenizing = [self._tokenizing[0] - cost[0], self._tokenizing[1] - cost[1]]

    @property
    def tokenizing(self) -> tuple[int, int]:
        """(inputs, characters) in the tokenizer stage now: for the metrics and tests."""
        return self._tokenizing[0], self._tokenizing[1]

    @staticmethod
    def _result(engine: Engine, task: TaskEntry, prediction: Prediction) -> TaskResult:
        return TaskResult(task, prediction, engine.version(task.name))
