"""ASGI middleware of the service: limits and accounting that act before routing.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so that refusing a request costs as
little as possible: an oversized or too slow body, or a full queue, is answered
without the body ever being parsed.
"""

from __future__ import annotations

import asyncio
import json
import time

from service.inference import RETRY_AFTER_SECONDS
from service.metrics import ServiceMetrics
from service.protocols.common import protocol_path, renderer_for
from service.reloader import ModelReloader
from service.routes import fixed_paths
from service.routes.tasks import (
    MULTI_TASK_ENDPOINT,
    NAMED_TASK_ENDPOINTS,
    TASK_ENDPOINT,
    TASKS_PREFIX,
)

# Route paths come from the routers (service/routes/), not from a list kept here.
_KNOWN_PATHS = fixed_paths()
# nginx's code for "client closed the request": not the service's failure, so operators
# alerting on 5xx are not woken by clients that hang up.
CLIENT_CLOSED = 499


def task_of(path: str) -> str | None:
    """The task a path asks for (named or generic endpoint), or None."""
    if path in NAMED_TASK_ENDPOINTS:
        return NAMED_TASK_ENDPOINTS[path]
    if path.startswith(TASKS_PREFIX + "/"):
        return path[len(TASKS_PREFIX) + 1 :] or None
    return None


def route_of(path: str) -> str:
    """A path's route, as a low-cardinality name (trace span names): the path template."""
    foreign = protocol_path(path)
    if foreign is not None:
        return foreign.template
    if path in NAMED_TASK_ENDPOINTS or path in _KNOWN_PATHS:
        return path
    return TASK_ENDPOINT if task_of(path) is not None else "other"


def runs_inference(path: str) -> bool:
    """Requests on this path queue rows in the batcher (and are shed when it is full)."""
    foreign = protocol_path(path)
    if foreign is not None:
        return foreign.inference
    return path == MULTI_TASK_ENDPOINT or task_of(path) is not None


def _json_error(
    status: int, detail: str, headers: dict[str, str] | None = None, path: str = ""
) -> list[dict]:
    render = renderer_for(path)
    if render is not None:  # a foreign protocol's path: refuse in its error shape
        response = render(status, detail, headers)
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": response.raw_headers,
        }
        return [start, {"type": "http.response.body", "body": response.body}]
    body = json.dumps({"detail": detail}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
        ],
    }
    return [start, {"type": "http.response.body", "body": body}]


def _utf16_or_32(body: bytes) -> bool:
    """JSON in UTF-16 or UTF-32 (RFC 8259 allows only UTF-8 between systems): a byte
    order mark, or a zero byte among the first four (JSON text starts with an ASCII
    character, which those encodings pad with zeros). Python's json reads them all."""
    return body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]


def _json_media(scope) -> bool:
    """The body is declared JSON (or undeclared, which the routes read as JSON)."""
    content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413, and bodies that take longer than
    `timeout_s` to arrive with 408, before anything parses them.

    The body is read here (it is small by construction) and replayed to the app, so an
    oversized one is cut off at the limit whether or not Content-Length announced it,
    and a client trickling bytes cannot hold a connection for as long as it likes.
    """

    def __init__(self, app, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        too_large = f"request body exceeds the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            for message in _json_error(413, too_large, path=scope["path"]):
                await send(message)
            return
        body, more = b"", True
        deadline = time.monotonic() + self.timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                slow = f"request body not received within {self.timeout_s:g} s"
                for message in _json_error(408, slow, {"Connection": "close"}, scope["path"]):
                    await send(message)
                return
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                for message in _json_error(413, too_large, path=scope["path"]):
                    await send(message)
                return
        if _utf16_or_32(body) and _json_media(scope):
            utf8 = "the body is not valid JSON: it must be UTF-8 (not UTF-16 or UTF-32)"
            for message in _json_error(400, utf8, path=scope["path"]):
                await send(message)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class CancelOnDisconnectMiddleware:
    """Stop an inference request's work when its client hangs up before the answer.

    uvicorn does not cancel a handler whose client has gone: its rows would stay queued
    and run, and a client that gave up (a timeout, a load generator ending its run)
    still cost the engine its whole request, delaying everyone queued behind it. Here
    the body is read first (the app gets it replayed), then the connection is watched
    while the handler runs; on `http.disconnect` the handler is cancelled, which cancels
    its rows' futures, and the batcher drops rows whose future is cancelled before they
    cost compute (rows already in a running batch finish: there is no preempting a run).
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not runs_inference(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        messages = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        if messages[-1]["type"] == "http.disconnect":
            return  # gone before its body arrived: nothing to answer

        async def replay():
            if messages:
                return messages.pop(0)
            return await receive()

        answered = False

        async def watch_send(message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True  # uvicorn reports a disconnect after this too: not a hang-up
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, replay, watch_send))
        watcher = asyncio.ensure_future(_disconnect(receive))
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not handler.done() and not answered:
            handler.cancel()
            try:
                await handler
            except asyncio.CancelledError:
                return  # the client is gone: nothing to send
        await handler


async def _disconnect(receive) -> None:
    """Return once the connection reports `http.disconnect` (the body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class LoadShedMiddleware:
    """Refuse task requests at once (429) while the queue is full, before reading the body.

    Under overload most requests are refused; doing it here, without parsing,
    validating and tokenizing them first, leaves the CPU to the requests that were
    accepted. The batcher still enforces the bound exactly when rows are queued.
    """

    def __init__(self, app, models: ModelReloader, metrics: ServiceMetrics) -> None:
        self.app = app
        self.models = models
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        live = self.models.live
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and runs_inference(scope["path"])
            and live is not None
            and live.batcher.full
        ):
            self.metrics.shed.inc()
            detail = (
                f"overloaded: queue full ({live.batcher.queue_depth} rows, "
                f"{live.batcher.queued_tokens} tokens waiting); retry later"
            )
            retry = {"Retry-After": RETRY_AFTER_SECONDS}
            for message in _json_error(429, detail, retry, scope["path"]):
                await send(message)
            return
        await self.app(scope, receive, send)


class RequestMetricsMiddleware:
    """Count requests by endpoint, task and status, and time them, for every route.

    Labels are bounded: a path that is no route is "other", a task the model does not
    serve is "other", so a client cannot create series at will. A request whose client
    went away before any answer is 499, not 500.
    """

    def __init__(self, app, models: ModelReloader, metrics: ServiceMetrics) -> None:
        self.app = app
        self.models = models
        self.metrics = metrics

    def _labels(self, path: str) -> tuple[str, str]:
        foreign = protocol_path(path)
        if foreign is not None:  # a foreign protocol's route: its template, its task if any
            named = foreign.task(path)
            live = self.models.live
            served = named is not None and live is not None and named in live.engine.tasks
            return foreign.template, named if served else ("other" if named else "")
        task = task_of(path)
        if task is None:
            return (path if path in _KNOWN_PATHS else "other"), ""
        endpoint = path if path in NAMED_TASK_ENDPOINTS else TASK_ENDPOINT
        live = self.models.live
        served = live is not None and task in live.engine.tasks
        return endpoint, task if served else "other"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint, task = self._labels(scope["path"])
        started = time.perf_counter()
        status: int | None = None
        disconnected = False

        async def watch_disconnect():
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def record_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, watch_disconnect, record_status)
        finally:
            if status is None:
                status = CLIENT_CLOSED if disconnected else 500
            self.metrics.requests.labels(endpoint, task, str(status)).inc()
            elapsed = time.perf_counter() - started
            self.metrics.request_latency.labels(endpoint, task, str(status)).observe(elapsed)
