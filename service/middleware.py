"""ASGI middleware of the service: limits and accounting that act before routing.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so that refusing a request costs as
little as possible: an oversized body or a full queue is answered without the body
ever being parsed.
"""

from __future__ import annotations

import json
import time

from service.metrics import ServiceMetrics
from service.reloader import ModelReloader

RETRY_AFTER_SECONDS = "1"
TASK_ENDPOINTS = ("/sentiment", "/paraphrase", "/similarity")
_KNOWN_PATHS = {*TASK_ENDPOINTS, "/health", "/ready", "/metrics", "/info", "/admin/reload"}


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> list[dict]:
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


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413 before anything parses them.

    The body is read here (it is small by construction) and replayed to the app, so an
    oversized one is cut off at the limit whether or not Content-Length announced it.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        too_large = f"request body exceeds the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            for message in _json_error(413, too_large):
                await send(message)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                for message in _json_error(413, too_large):
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


class LoadShedMiddleware:
    """Refuse task requests at once while the queue is full, before reading the body.

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
            and scope["path"] in TASK_ENDPOINTS
            and live is not None
            and live.batcher.queue_depth >= live.batcher.max_queue_items
        ):
            self.metrics.shed.inc()
            detail = (
                f"overloaded: queue full ({live.batcher.queue_depth} rows waiting); retry later"
            )
            for message in _json_error(503, detail, {"Retry-After": RETRY_AFTER_SECONDS}):
                await send(message)
            return
        await self.app(scope, receive, send)


class RequestMetricsMiddleware:
    """Count requests by endpoint and status, and time them, for every route."""

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
        started = time.perf_counter()
        status = 500

        async def record_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            elapsed = time.perf_counter() - started
            self.metrics.request_latency.labels(endpoint, str(status)).observe(elapsed)
