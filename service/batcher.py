"""Dynamic batching shared by all endpoints: rows of every task share one ORT run.

Requests put their rows (already tokenized) into one bounded queue and await a future
per row. One background task owns the queue: when the engine is free it takes what is
waiting (a FIFO window), sorts it by length so rows of similar length are padded
together, cuts it into the batches that waste least compute on padding (within
`max_batch_size` rows and `max_batch_tokens` padded tokens), and runs them one by one in
a worker thread, off the event loop. Rows whose request has gone (timed out, client
disconnected) are dropped before they cost compute. With `max_wait_ms` > 0 an idle
engine waits that long for a fuller batch; at 0 it never waits, and batches form from
what queues up meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
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

RunBatch = Callable[[Sequence[EncodedRow], Sequence[int]], Sequence[Any]]


class QueueFull(Exception):
    """The queue cannot take these rows now: shed load instead of growing latency."""


class ShuttingDown(Exception):
    """The service is stopping and takes no new work."""


@dataclass
class _Row:
    task_id: int
    row: EncodedRow
    future: asyncio.Future = field(repr=False)


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
    ) -> None:
        self._run_batch = run_batch
        self._metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue_items = max_queue_items
        self.overhead_tokens = overhead_tokens
        self._queue: deque[_Row] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Take no new rows, finish every queued and running one, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def submit(self, rows: Sequence[EncodedRow], task_ids: Sequence[int]) -> list[asyncio.Future]:
        """Queue rows; all or none (a request is never half-accepted)."""
        if self._closing:
            raise ShuttingDown("the service is shutting down")
        if len(self._queue) + len(rows) > self.max_queue_items:
            raise QueueFull(f"queue full ({len(self._queue)} rows waiting)")
        loop = asyncio.get_running_loop()
        futures = []
        for row, task_id in zip(rows, task_ids, strict=True):
            future = loop.create_future()
            self._queue.append(_Row(task_id, row, future))
            futures.append(future)
        self._metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        return futures

    async def _wait_for_rows(self) -> bool:
        """Block until rows are queued (False when closing with nothing left)."""
        while not self._queue:
            if self._closing:
                return False
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.max_wait_s and len(self._queue) < self.max_batch_size and not self._closing:
            deadline = time.monotonic() + self.max_wait_s
            while (
                len(self._queue) < self.max_batch_size and (left := deadline - time.monotonic()) > 0
            ):
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
        return True

    def _take_window(self) -> list[_Row]:
        window: list[_Row] = []
        limit = self.max_batch_size * _WINDOW_BATCHES
        while self._queue and len(window) < limit:
            item = self._queue.popleft()
            if not item.future.done():  # cancelled: its request is gone
                window.append(item)
        self._metrics.queue_depth.set(len(self._queue))
        return window

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
            for batch in self._batches(self._take_window()):
                batch = [item for item in batch if not item.future.done()]
                if not batch:
                    continue
                rows = [item.row for item in batch]
                task_ids = [item.task_id for item in batch]
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(
                        self._executor, self._run_batch, rows, task_ids
                    )
                except Exception as err:  # an engine failure fails this batch, not the service
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(err)
                    continue
                self._metrics.observe_batch(
                    rows=len(rows),
                    padded_tokens=len(rows) * max(len(row) for row in rows),
                    seconds=time.perf_counter() - started,
                )
                for item, result in zip(batch, results, strict=True):
                    if not item.future.done():
                        item.future.set_result(result)
