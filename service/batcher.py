"""Dynamic batching shared by all endpoints: rows of every task share one ORT run.

Requests put their rows (already tokenized) into one queue and await a future per row.
The queue is bounded by work, not only rows: `max_queue_tokens` caps the tokens
waiting (1,024 rows of 128 tokens are 8x the work of 1,024 rows of 16), and once the
engine's pace is measured (tokens per second over recent batches) a request is only
accepted if the work ahead of it drains within `max_queue_seconds`: a request that
would time out in the queue is refused at once (`QueueFull`, answered 429) instead of
costing a wait, and the work the engine does goes to requests that will be answered.

Order is fair between requests and no row waits without bound. It is start-time fair
queuing (Goyal et al. 1996) with each request a flow of its own: a row's start tag is
the virtual time V at its request's arrival plus the tokens of its request's earlier
rows, so a short request that arrives behind a 256-row request waits for about one
batch, not 256 rows (the large request interleaves with everyone else instead of
holding the engine). Ties, and rows of equal tag, go in arrival order: each row keeps
the arrival number it got when it was queued, also when planning leaves it out of a
batch and puts it back (renumbering leftovers let the shortest leftover look oldest
for ever, and long rows starved behind a stream of short ones). V never stands still
while work runs: after each batch it advances by the batch's tokens divided by the
requests that had rows waiting (the virtual time of an ideal per-request fair share),
and at least to the tag of the row the batch was formed for. So a row's tag t is
passed after finitely many batches; from then on every newcomer's tag is at least t
and its arrival number larger, so only rows already queued are still ahead of it, and
each batch runs the queue's smallest (tag, arrival) row: a row runs within (batches
until V reaches t) + (rows queued when it does) batches, whatever arrives meanwhile
(tests/service/test_batcher.py checks this bound on random workloads).

One background task owns the queue: when the engine is free it takes the rows with
the smallest (tag, arrival) keys (a window), sorts them by length, cuts them into the
batches that waste least compute on padding (within `max_batch_size` rows and
`max_batch_tokens` padded tokens), runs the batch that holds the smallest key in a
worker thread, off the event loop, and puts the rest back with their keys unchanged:
the next batch is planned with whatever arrived meanwhile. Rows whose request has gone
(timed out, client disconnected) are dropped before they cost compute. With
`max_wait_ms` > 0 an idle engine waits that long for a fuller batch; at 0 it never
waits, and batches form from what queues up meanwhile.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_store.tokenizer import EncodedRow
from service.metrics import ServiceMetrics

# How many batches' worth of rows one pass may sort together: large enough to cut
# padding for bursts and big batch requests, small enough to stay roughly FIFO.
_WINDOW_BATCHES = 8

# The tasks one row asks: one task id, or several for a multi-task row (whose shared
# frozen layers run once). The batcher does not look inside: it only passes them on.
TaskSet = tuple[int, ...]
RunBatch = Callable[[Sequence[EncodedRow], Sequence[TaskSet]], Sequence[Any]]


class QueueFull(Exception):
    """The queue cannot take these rows now: shed load instead of growing latency."""


class RequestTooLarge(Exception):
    """A request whose rows alone exceed the queue's capacity: never acceptable."""


class ShuttingDown(Exception):
    """The service is stopping and takes no new work."""


@dataclass
class _Flow:
    """One request's rows still waiting: V advances by work shared among the flows."""

    waiting: int = 0


@dataclass
class _Row:
    tasks: TaskSet
    row: EncodedRow
    future: asyncio.Future = field(repr=False)
    tag: float = 0.0  # fair-queuing tag: smaller runs sooner; -1 once out of the queue
    arrival: int = 0  # queued order, kept for the row's whole wait (ties go oldest first)
    flow: _Flow = field(default_factory=_Flow, repr=False)

    @property
    def tokens(self) -> int:
        """A row's work, however many tasks it asks: its tokens once (a multi-task row
        shares the frozen layers, and fairness and queue bounds count input, not tasks)."""
        return len(self.row)


class DynamicBatcher:
    def __init__(
        self,
        run_batch: RunBatch,
        metrics: ServiceMetrics,
        max_batch_size: int,
        max_batch_tokens: int,
        max_wait_ms: float,
        max_queue_items: int,
        overhead_tokens: int = 32,
        max_queue_tokens: int | None = None,
        max_queue_seconds: float | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue_items = max_queue_items
        self.max_queue_tokens = max_queue_tokens or max_queue_items * 128
        self.max_queue_seconds = max_queue_seconds
        self.tokens_per_second: float | None = None  # measured pace, smoothed
        self.overhead_tokens = overhead_tokens
        # A heap of (tag, arrival number, row), each row's key fixed while it waits; rows
        # of gone requests stay in it until popped, but stop counting at once.
        self._queue: list[tuple[float, int, _Row]] = []
        self._arrivals = itertools.count()
        self._virtual_time = 0.0
        self._live_rows = 0
        self._live_tokens = 0
        self._live_flows = 0  # requests with rows waiting
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        """Rows waiting whose request still wants them."""
        return self._live_rows

    @property
    def queued_tokens(self) -> int:
        return self._live_tokens

    @property
    def full(self) -> bool:
        return (
            self._live_rows >= self.max_queue_items
            or self._live_tokens >= self.max_queue_tokens
            or self._drains_too_late(0)
        )

    def _drains_too_late(self, extra_tokens: int) -> bool:
        """Would the queue, with `extra_tokens` more, outlast `max_queue_seconds` at the
        measured pace? Never before the pace is known, and never for an empty queue (a
        lone request always gets its chance)."""
        if not self.max_queue_seconds or not self.tokens_per_second or not self._live_rows:
            return False
        seconds = (self._live_tokens + extra_tokens) / self.tokens_per_second
        return seconds > self.max_queue_seconds

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Take no new rows, finish every queued and running one, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def submit(
        self, rows: Sequence[EncodedRow], task_sets: Sequence[TaskSet]
    ) -> list[asyncio.Future]:
        """Queue rows, each with the tasks it asks; all or none (a request is never
        half-accepted)."""
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        tokens = sum(len(row) for row in rows)
        if tokens > self.max_queue_tokens or len(rows) > self.max_queue_items:
            raise RequestTooLarge(
                f"request of {len(rows)} rows and {tokens} tokens exceeds the queue's capacity "
                f"({self.max_queue_items} rows, {self.max_queue_tokens} tokens): split it"
            )
        if (
            self._live_rows + len(rows) > self.max_queue_items
            or self._live_tokens + tokens > self.max_queue_tokens
        ):
            raise QueueFull(
                f"queue full ({self._live_rows} rows, {self._live_tokens} tokens waiting)"
            )
        if self._drains_too_late(tokens):
            raise QueueFull(
                f"the {self._live_tokens} tokens waiting would not be done within "
                f"{self.max_queue_seconds:g} s"
            )
        loop = asyncio.get_running_loop()
        futures = []
        tag = self._virtual_time
        flow = _Flow(waiting=len(rows))
        for row, tasks in zip(rows, task_sets, strict=True):
            future = loop.create_future()
            item = _Row(tasks, row, future, tag, next(self._arrivals), flow)
            future.add_done_callback(lambda _, item=item: self._forget(item))
            heapq.heappush(self._queue, (item.tag, item.arrival, item))
            tag += len(row)
            futures.append(future)
        self._live_flows += 1 if rows else 0
        self._live_rows += len(rows)
        self._live_tokens += tokens
        self._report_depth()
        self._wakeup.set()
        return futures

    def _forget(self, item: _Row) -> None:
        """A row's request has gone while the row still waited: stop counting it."""
        if item.future.cancelled() and item.tag >= 0:
            item.tag = -1.0  # counted out once; the heap drops it when popped
            self._leave_flow(item)
            self._live_rows -= 1
            self._live_tokens -= item.tokens
            self._report_depth()

    def _leave_flow(self, item: _Row) -> None:
        item.flow.waiting -= 1
        if not item.flow.waiting:
            self._live_flows -= 1

    def _report_depth(self) -> None:
        self._metrics.queue_depth.set(self._live_rows)
        self._metrics.queue_tokens.set(self._live_tokens)

    async def _wait_for_rows(self) -> bool:
        """Block until rows are queued (False when closing with nothing left)."""
        while not self._live_rows:
            self._queue.clear()  # only rows of gone requests can be left
            if self._closing:
                return False
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.max_wait_s and self._live_rows < self.max_batch_size and not self._closing:
            deadline = time.monotonic() + self.max_wait_s
            while (
                self._live_rows < self.max_batch_size and (left := deadline - time.monotonic()) > 0
            ):
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
        return True

    def _take_window(self) -> list[_Row]:
        """The waiting rows with the smallest tags, smallest first (gone ones dropped)."""
        window: list[_Row] = []
        limit = self.max_batch_size * _WINDOW_BATCHES
        while self._queue and len(window) < limit:
            _, _, item = heapq.heappop(self._queue)
            if not item.future.done():  # done here means cancelled: its request is gone
                window.append(item)
        return window

    def _next_batch(self) -> list[_Row]:
        """Plan the window's batches, keep the one with the smallest tag, return the rest
        to the queue, and account for the rows that will now run."""
        window = self._take_window()
        if not window:
            return []
        first = window[0]
        batch = next(b for b in self._batches(window) if any(item is first for item in b))
        chosen = {id(item) for item in batch}
        for item in window:
            if id(item) not in chosen:  # back with the key it came with
                heapq.heappush(self._queue, (item.tag, item.arrival, item))
        # V advances by the batch's work shared among the requests waiting (so that it
        # reaches every tag in finitely many batches), and at least to the row the batch
        # was formed for; not to the batch's largest tag: rows of a large request that
        # joined this batch for their length must not push new requests behind the rest
        # of that large request.
        share = sum(item.tokens for item in batch) / max(1, self._live_flows)
        self._virtual_time = max(self._virtual_time + share, first.tag)
        for item in batch:
            item.tag = -1.0  # running: no longer counted as waiting, whatever happens
            self._leave_flow(item)
        self._live_rows -= len(batch)
        self._live_tokens -= sum(item.tokens for item in batch)
        self._report_depth()
        return batch

    def _batches(self, window: list[_Row]) -> list[list[_Row]]:
        """Split the length-sorted window into the batches that cost least.

        Cost of a batch = its padded tokens (rows x longest row) + `overhead_tokens`,
        the fixed cost of one ONNX Runtime run expressed in tokens. After sorting, the
        best split into consecutive runs is an exact dynamic programme; each step is
        vectorised, so a window of 256 rows takes about a millisecond. Batches respect
        `max_batch_size` rows and `max_batch_tokens` padded tokens (a single row that
        is longer on its own still runs).
        """
        window.sort(key=lambda item: len(item.row))
        lengths = np.array([len(item.row) for item in window], dtype=np.int64)
        count = len(window)
        best = np.zeros(count + 1)
        start_of = np.zeros(count + 1, dtype=np.int64)
        for end in range(1, count + 1):
            starts = np.arange(max(0, end - self.max_batch_size), end)
            rows = end - starts
            padded = rows * lengths[end - 1]
            cost = best[starts] + padded + self.overhead_tokens
            cost[(padded > self.max_batch_tokens) & (rows > 1)] = np.inf
            choice = int(np.argmin(cost))
            best[end], start_of[end] = cost[choice], starts[choice]
        batches: list[list[_Row]] = []
        end = count
        while end > 0:
            batches.append(window[start_of[end] : end])
            end = int(start_of[end])
        return batches[::-1]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while await self._wait_for_rows():
            # One batch per pass: the next one is planned with what arrived meanwhile.
            batch = self._next_batch()
            if batch:
                await self._run(loop, batch)

    def _observe_pace(self, tokens: int, seconds: float) -> None:
        """Tokens per second, smoothed over recent batches (a fifth of the weight to the
        newest): what the queue's time bound divides by."""
        if seconds <= 0:
            return
        pace = tokens / seconds
        previous = self.tokens_per_second
        self.tokens_per_second = pace if previous is None else 0.8 * previous + 0.2 * pace

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Row]) -> None:
        rows = [item.row for item in batch]
        task_sets = [item.tasks for item in batch]
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, rows, task_sets)
        except Exception as err:  # an engine failure fails this batch, not the service
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        seconds = time.perf_counter() - started
        self._metrics.observe_batch(
            rows=len(rows), padded_tokens=len(rows) * max(len(row) for row in rows), seconds=seconds
        )
        self._observe_pace(sum(len(row) for row in rows), seconds)
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
