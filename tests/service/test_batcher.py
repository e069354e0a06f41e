"""The dynamic batcher in isolation, with a fake engine that records its batches."""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_store.tokenizer import EncodedRow
from service.batcher import DynamicBatcher, QueueFull, RequestTooLarge, ShuttingDown, _Row
from service.metrics import ServiceMetrics


def row(length: int) -> EncodedRow:
    ids = np.arange(length, dtype=np.int64)
    return EncodedRow(ids, np.zeros_like(ids), truncated=False)


class FakeEngine:
    """Answers each row with (task id, length); can be held to let a queue build up."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, rows, task_ids):
        self.gate.wait(timeout=10)
        batch = [(task_id, len(r)) for r, task_id in zip(rows, task_ids, strict=True)]
        self.batches.append(batch)
        return batch


def make(engine: FakeEngine, **limits) -> DynamicBatcher:
    settings = {
        "max_batch_size": 4,
        "max_batch_tokens": 1000,
        "max_wait_ms": 0,
        "max_queue_items": 64,
    }
    return DynamicBatcher(engine.run, ServiceMetrics(), **{**settings, **limits})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_rows_of_all_tasks_share_batches_and_get_their_own_answers() -> None:
    engine = FakeEngine()
    batcher = make(engine, overhead_tokens=10_000)  # runs so costly that only the cap splits
    batcher.start()
    engine.gate.clear()  # hold the engine so the next submissions queue up together
    first = batcher.submit([row(3)], [0])
    await asyncio.sleep(0.05)
    lengths = [9, 2, 7, 5, 4, 8]
    futures = batcher.submit([row(n) for n in lengths], [n % 3 for n in lengths])
    engine.gate.set()
    answers = await asyncio.gather(*first, *futures)
    assert answers[1:] == [(n % 3, n) for n in lengths]  # each request gets its own rows
    later = engine.batches[1:]
    # two runs either way (max_batch_size 4); [2,4,5]+[7,8,9] pads 42 tokens, [2,4,5,7]+[8,9]
    # 46; the batch holding the request's first row (9) runs first
    assert [[n for _, n in b] for b in later] == [[7, 8, 9], [2, 4, 5]]
    assert {t for b in later for t, _ in b} == {0, 1, 2}  # tasks mixed in one run
    await batcher.stop()


@pytest.mark.anyio
async def test_token_budget_closes_a_batch() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_batch_size=32, max_batch_tokens=20, overhead_tokens=10_000)
    engine.gate.clear()
    batcher.start()
    futures = batcher.submit([row(n) for n in (5, 5, 5, 5, 10, 10)], [0] * 6)
    engine.gate.set()
    await asyncio.gather(*futures)
    # 4 x 5 = 20 tokens fit; 2 x 10 = 20 fit; never more than 20 padded tokens a batch
    assert sorted(len(b) for b in engine.batches) == [2, 4]
    assert all(len(b) * max(n for _, n in b) <= 20 for b in engine.batches)
    await batcher.stop()


@pytest.mark.anyio
async def test_full_queue_refuses_whole_requests_and_cancelled_rows_cost_nothing() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_queue_items=3)
    batcher.start()
    engine.gate.clear()
    running = batcher.submit([row(1)], [0])
    await asyncio.sleep(0.05)  # that row is now inside the (held) engine
    waiting = batcher.submit([row(2), row(3)], [0, 0])
    with pytest.raises(QueueFull):
        batcher.submit([row(4), row(5)], [0, 0])  # 2 + 2 > 3: all or nothing
    assert batcher.queue_depth == 2
    waiting[0].cancel()  # its client went away
    engine.gate.set()
    await asyncio.gather(*running, waiting[1])
    assert [n for b in engine.batches for _, n in b] == [1, 3]
    await batcher.stop()


@pytest.mark.anyio
async def test_stop_finishes_queued_rows_then_refuses_new_ones() -> None:
    engine = FakeEngine()
    batcher = make(engine)
    batcher.start()
    engine.gate.clear()
    futures = batcher.submit([row(n) for n in range(1, 7)], [0] * 6)
    stopping = asyncio.ensure_future(batcher.stop())
    await asyncio.sleep(0.05)
    with pytest.raises(ShuttingDown):
        batcher.submit([row(1)], [0])
    engine.gate.set()
    await stopping
    assert [f.result()[1] for f in futures] == list(range(1, 7))
    assert not batcher.running


@pytest.mark.anyio
async def test_wait_window_gathers_rows_that_arrive_while_idle() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_wait_ms=200)
    batcher.start()
    first = batcher.submit([row(2)], [0])
    await asyncio.sleep(0.02)
    second = batcher.submit([row(3)], [1])
    await asyncio.gather(*first, *second)
    assert [len(b) for b in engine.batches] == [2]
    await batcher.stop()


@pytest.mark.anyio
async def test_engine_failure_fails_only_that_batch() -> None:
    calls = []

    def flaky(rows, task_ids):
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("engine broke")
        return [len(r) for r in rows]

    batcher = DynamicBatcher(flaky, ServiceMetrics(), 4, 1000, 0, 64)
    batcher.start()
    (failed,) = batcher.submit([row(2)], [0])
    with pytest.raises(RuntimeError, match="engine broke"):
        await failed
    (fine,) = batcher.submit([row(5)], [0])
    assert await fine == 5
    await batcher.stop()


def _split_cost(lengths: list[int], cuts: list[list[int]], overhead: int) -> int:
    return sum(len(batch) * max(batch) + overhead for batch in cuts)


def _brute_force(lengths: list[int], overhead: int, max_rows: int) -> int:
    """Cheapest split of sorted lengths into consecutive batches, by trying them all."""
    best = {0: 0}
    for end in range(1, len(lengths) + 1):
        best[end] = min(
            best[start] + (end - start) * lengths[end - 1] + overhead
            for start in range(max(0, end - max_rows), end)
        )
    return best[len(lengths)]


def test_window_split_trades_padding_against_run_overhead() -> None:
    rows = [row(n) for n in (3, 40, 3, 3, 40, 3)]
    cheap_runs = make(FakeEngine(), max_batch_size=8, overhead_tokens=10)
    costly_runs = make(FakeEngine(), max_batch_size=8, overhead_tokens=1000)

    def lengths_of(batcher):
        window = [_Row(0, r, asyncio.Future(loop=asyncio.new_event_loop())) for r in rows]
        return [[len(item.row) for item in batch] for batch in batcher._batches(window)]

    assert lengths_of(cheap_runs) == [[3, 3, 3, 3], [40, 40]]  # padding 3 -> 40 costs more
    assert lengths_of(costly_runs) == [[3, 3, 3, 3, 40, 40]]  # one run is cheapest


def test_window_split_is_optimal() -> None:
    rng = random.Random(0)
    for _ in range(200):
        lengths = sorted(rng.randint(2, 60) for _ in range(rng.randint(1, 9)))
        overhead, max_rows = rng.choice([0, 8, 32, 100]), rng.randint(1, 5)
        batcher = make(FakeEngine(), max_batch_size=max_rows, overhead_tokens=overhead)
        loop = asyncio.new_event_loop()
        window = [_Row(0, row(n), loop.create_future()) for n in lengths]
        cuts = [[len(item.row) for item in batch] for batch in batcher._batches(window)]
        loop.close()
        assert [n for batch in cuts for n in batch] == lengths
        assert all(len(batch) <= max_rows for batch in cuts)
        assert _split_cost(lengths, cuts, overhead) == _brute_force(lengths, overhead, max_rows)


@pytest.mark.anyio
async def test_a_short_request_behind_a_large_one_waits_about_one_batch() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_batch_size=4, max_queue_items=512, overhead_tokens=0)
    batcher.start()
    engine.gate.clear()
    blocker = batcher.submit([row(5)], [0])
    await asyncio.sleep(0.05)  # held in the engine
    large = batcher.submit([row(20)] * 64, [0] * 64)  # 16 batches of 4
    short = batcher.submit([row(3)], [1])
    engine.gate.set()
    await asyncio.gather(*blocker, *large, *short)
    position = next(i for i, b in enumerate(engine.batches) if (1, 3) in b)
    assert position <= 2, f"the short request ran in batch {position} of {len(engine.batches)}"
    await batcher.stop()


@pytest.mark.anyio
async def test_long_rows_are_not_starved_by_a_stream_of_short_ones() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_batch_size=2, max_queue_items=512, overhead_tokens=0)
    batcher.start()
    engine.gate.clear()
    blocker = batcher.submit([row(5)], [0])
    await asyncio.sleep(0.05)
    (long_row,) = batcher.submit([row(100)], [2])
    engine.gate.set()
    short_futures = []
    for _ in range(200):  # short requests keep arriving while the long row waits
        short_futures += batcher.submit([row(4)], [1])
        await asyncio.sleep(0)
        if long_row.done():
            break
    await asyncio.gather(*blocker, long_row, *short_futures)
    position = next(i for i, b in enumerate(engine.batches) if (2, 100) in b)
    assert position < 60, f"the long row ran only in batch {position}"
    await batcher.stop()


@pytest.mark.anyio
async def test_queue_is_bounded_by_tokens_and_refuses_what_can_never_fit() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_queue_items=100, max_queue_tokens=50)
    batcher.start()
    engine.gate.clear()
    running = batcher.submit([row(1)], [0])
    await asyncio.sleep(0.05)
    waiting = batcher.submit([row(20), row(20)], [0, 0])  # 40 of 50 tokens
    with pytest.raises(QueueFull):
        batcher.submit([row(20)], [0])  # rows are few, but the work would exceed 50 tokens
    with pytest.raises(RequestTooLarge):
        batcher.submit([row(30), row(30)], [0, 0])  # 60 tokens never fit, even empty
    assert batcher.queued_tokens == 40 and batcher.full is False
    waiting[0].cancel()
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert batcher.queued_tokens == 20  # a gone request's rows stop counting at once
    engine.gate.set()
    await asyncio.gather(*running, waiting[1])
    await batcher.stop()


@pytest.mark.anyio
async def test_a_batch_of_rows_from_late_in_a_large_request_does_not_push_newcomers_back() -> None:
    engine = FakeEngine()
    batcher = make(engine, max_batch_size=4, max_queue_items=512, overhead_tokens=0)
    batcher.start()
    engine.gate.clear()
    blocker = batcher.submit([row(5)], [0])
    await asyncio.sleep(0.05)
    # Short rows spread over the whole request: the first batch (for its first row) also
    # takes short rows from its end, whose tags are far ahead.
    large = batcher.submit([row(5 if i % 8 == 0 else 60) for i in range(64)], [0] * 64)
    engine.gate.set()
    while len(engine.batches) < 2:
        await asyncio.sleep(0.001)
    engine.gate.clear()
    await asyncio.sleep(0.05)
    started = len(engine.batches)
    short = batcher.submit([row(3)], [1])
    engine.gate.set()
    await asyncio.gather(*blocker, *large, *short)
    position = next(i for i, b in enumerate(engine.batches) if (1, 3) in b)
    assert position - started <= 2, f"ran {position - started} batches after it arrived"
    await batcher.stop()


@pytest.mark.anyio
async def test_work_that_would_outlast_the_time_bound_is_refused_at_once() -> None:
    def paced(rows, task_ids):  # 1,000 tokens per second
        time.sleep(sum(len(r) for r in rows) / 1000)
        return [len(r) for r in rows]

    batcher = DynamicBatcher(paced, ServiceMetrics(), 4, 1000, 0, 512, 0, 10_000, 0.3)
    batcher.start()
    assert batcher.tokens_per_second is None
    assert await asyncio.gather(*batcher.submit([row(50)], [0])) == [50]
    assert 700 < batcher.tokens_per_second < 1100  # measured, not configured
    running = batcher.submit([row(100)], [0])  # 0.1 s of work
    await asyncio.sleep(0)
    waiting = batcher.submit([row(100)], [0])  # at most 0.2 s waiting: fits in 0.3 s
    with pytest.raises(QueueFull, match=r"would not be done within 0\.3 s"):
        batcher.submit([row(300)], [0])  # over 0.35 s would wait: refused now, not later
    assert batcher.full is False
    await asyncio.gather(*running, *waiting)
    await batcher.stop()


# The bound on a row's wait (service/batcher.py's docstring): V passes a row's tag t
# after at most ceil(X * F / L) batches, X the tokens of its request's earlier rows, F
# the most requests waiting at once (at most the queue's rows), L the shortest row;
# then only rows already queued (fewer than the queue's capacity) are ahead of it.
Request = list[int]  # the lengths of one request's rows

SHORTEST = 1
requests = st.lists(st.integers(SHORTEST, 60), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    arrivals=st.lists(st.lists(requests, max_size=3), min_size=1, max_size=150),
    max_batch_size=st.integers(1, 4),
    capacity=st.integers(4, 24),
)
def test_every_row_runs_within_a_bounded_number_of_batches(
    arrivals: list[list[Request]], max_batch_size: int, capacity: int
) -> None:
    """Random lengths and arrivals (before each batch, whatever the queue takes), a fake
    engine that answers each planned batch at once; then the queue drains."""

    async def simulate() -> list[tuple[int, int, int]]:
        batcher = make(
            FakeEngine(),
            max_batch_size=max_batch_size,
            max_queue_items=capacity,
            max_queue_tokens=capacity * 60,
            overhead_tokens=16,
        )
        waits: dict[int, tuple[int, int]] = {}  # id(future) -> (batch queued, offset)
        ran: list[tuple[int, int, int]] = []  # (queued, ran, offset) per row
        futures: dict[int, asyncio.Future] = {}
        batch_number = 0
        pending = list(arrivals)
        while pending or batcher.queue_depth:
            for lengths in pending.pop(0) if pending else []:
                try:
                    submitted = batcher.submit([row(n) for n in lengths], [0] * len(lengths))
                except QueueFull:
                    continue
                offset = 0
                for future, n in zip(submitted, lengths, strict=True):
                    waits[id(future)] = (batch_number, offset)
                    futures[id(future)] = future
                    offset += n
            batch = batcher._next_batch()
            for item in batch:
                queued, offset = waits[id(item.future)]
                ran.append((queued, batch_number, offset))
                item.future.set_result(None)
            batch_number += 1
        assert all(future.done() for future in futures.values())  # nothing left behind
        batcher._executor.shutdown()
        return ran

    loop = asyncio.new_event_loop()
    try:
        ran = loop.run_until_complete(simulate())
    finally:
        loop.close()
    for queued, at, offset in ran:
        bound = math.ceil(offset * capacity / SHORTEST) + capacity
        assert at - queued < bound, f"a row at offset {offset} waited {at - queued} batches"
        if offset == 0:  # a request's first row: only rows queued before it are ahead
            assert at - queued < capacity


def test_a_long_row_among_a_stream_of_short_ones_runs_within_the_queue_ahead_of_it() -> None:
    """The case that starved: every batch leaves rows out, a stream of shorter ones
    keeps arriving, and the long row must not look younger than each of them."""

    async def simulate() -> int:
        batcher = make(FakeEngine(), max_batch_size=4, max_queue_items=64, overhead_tokens=0)
        rng = random.Random(1)
        for _ in range(12):
            batcher.submit([row(rng.randint(5, 20))], [0])
        (long_row,) = batcher.submit([row(60)], [0])
        for batch_number in range(1000):
            for _ in range(4):  # as many short rows arrive as one batch takes
                batcher.submit([row(rng.randint(5, 20))], [0])
            for item in batcher._next_batch():
                item.future.set_result(None)
            if long_row.done():
                batcher._executor.shutdown()
                return batch_number
        raise AssertionError("the long row never ran")

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(simulate()) <= 13  # the 12 rows ahead, then it
    finally:
        loop.close()
