"""A client that hangs up stops costing the engine: its queued rows are dropped."""

from __future__ import annotations

import asyncio

import pytest

from service.batcher import DynamicBatcher
from service.metrics import ServiceMetrics
from service.middleware import CancelOnDisconnectMiddleware
from tests.service.test_batcher import FakeEngine, row


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def scope(path: str = "/sentiment") -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


class Connection:
    """The server side of one connection: the body, then a hang-up when told."""

    def __init__(self, body: bytes = b"{}") -> None:
        self.messages = [{"type": "http.request", "body": body, "more_body": False}]
        self.hang_up = asyncio.Event()
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if self.messages:
            return self.messages.pop(0)
        await self.hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)


def queueing_app(batcher: DynamicBatcher, rows: int, bodies: list[bytes]):
    """An app that reads its body, queues `rows` rows and answers when they are done."""

    async def app(scope, receive, send) -> None:
        bodies.append((await receive())["body"])
        await asyncio.gather(*batcher.submit([row(8)] * rows, [(0,)] * rows))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    return app


@pytest.mark.anyio
async def test_rows_of_a_client_that_hung_up_are_dropped_before_they_run() -> None:
    engine = FakeEngine()
    batcher = DynamicBatcher(engine.run, ServiceMetrics(), 4, 1000, 0, 64)
    batcher.start()
    engine.gate.clear()
    blocker = batcher.submit([row(5)], [(9,)])  # holds the engine
    await asyncio.sleep(0.05)
    bodies: list[bytes] = []
    middleware = CancelOnDisconnectMiddleware(queueing_app(batcher, 32, bodies))
    connection = Connection(b'{"texts": []}')
    request = asyncio.ensure_future(middleware(scope(), connection.receive, connection.send))
    while batcher.queue_depth < 32:
        await asyncio.sleep(0.001)
    connection.hang_up.set()
    await asyncio.wait_for(request, 5)  # returns, nothing raised
    assert bodies == [b'{"texts": []}']  # the app got the body the middleware read
    assert batcher.queue_depth == 0 and batcher.queued_tokens == 0
    engine.gate.set()
    await asyncio.gather(*blocker)
    await batcher.stop()
    assert engine.batches == [[((9,), 5)]]  # only the blocker ever ran
    assert connection.sent == []


@pytest.mark.anyio
async def test_an_answered_request_is_not_cancelled_by_the_close_that_follows() -> None:
    """uvicorn reports a disconnect once the answer is sent: the handler's own tail
    (after its last byte) must still run."""
    connection = Connection()
    finished = []

    async def app(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        connection.hang_up.set()
        await asyncio.sleep(0.02)  # the watcher sees the disconnect meanwhile
        finished.append(True)

    await CancelOnDisconnectMiddleware(app)(scope(), connection.receive, connection.send)
    assert finished == [True]
    assert [m["type"] for m in connection.sent] == ["http.response.start", "http.response.body"]


@pytest.mark.anyio
async def test_other_requests_pass_through_untouched() -> None:
    calls = []

    async def app(scope, receive, send) -> None:
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    connection = Connection()
    get = {**scope("/info"), "method": "GET"}
    await CancelOnDisconnectMiddleware(app)(get, connection.receive, connection.send)
    assert calls == ["/info"] and connection.sent[0]["status"] == 200
