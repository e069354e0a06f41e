"""Error responses: every refusal is a JSON body with a `detail`, whatever bytes arrived.

FastAPI's own validation handler echoes the offending input back, and fails with a
500 when that input cannot be encoded: a lone surrogate ("\\ud800"), a NaN or Infinity
literal, or undecodable bytes sent as text/plain. So the class of problem is fixed
here, not its three cases: errors are rendered without the input, through an encoder
that escapes everything outside ASCII and refuses nothing; unparseable bodies are 400,
bodies that are not JSON at all 415, parseable but invalid ones 422: one line in
`detail` (`service.validation`: a wrong field names the fields the route accepts) and
the errors, without their input, under `errors`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.inference import ServiceError
from service.validation import validation_problem

log = logging.getLogger(__name__)
FASTAPI_PARSE_ERROR = "There was an error parsing the body"

# (status, message, headers) -> an error response in a protocol's own shape
Render = Callable[[int, str, dict[str, str] | None], Response]
# path -> the renderer of the protocol that owns the path, None for the service's own
RendererFor = Callable[[str], Render | None]


def _no_protocol(_: str) -> Render | None:
    return None


class SafeJSONResponse(JSONResponse):
    """JSON that any content can be rendered as: non-ASCII escaped (lone surrogates
    included), non-finite numbers as strings."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False).encode("ascii")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _location(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


def install_error_handlers(app: FastAPI, renderer_for: RendererFor = _no_protocol) -> None:
    """Answer refusals as `{"detail"}`, or, on a path a foreign protocol owns (a 404 or
    405 under its prefix, which no route of its own saw), in that protocol's shape."""

    def reply(
        request: Request, status: int, detail: Any, headers: dict[str, str] | None = None
    ) -> Response:
        render = renderer_for(request.url.path)
        if render is not None:
            return render(status, str(detail), headers)
        return SafeJSONResponse({"detail": detail}, status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> SafeJSONResponse:
        status, line = validation_problem(request, err)
        if status != 422:
            return SafeJSONResponse({"detail": line}, status)
        errors = [
            {"type": str(e.get("type")), "loc": _location(e.get("loc", ())), "msg": str(e["msg"])}
            for e in err.errors()
        ]
        return SafeJSONResponse({"detail": line, "errors": errors}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> Response:
        # FastAPI answers a body it cannot decode (not UTF-8, nested past the parser's
        # depth) with a generic sentence; say what a client can fix instead.
        detail = err.detail
        if err.status_code == 400 and detail == FASTAPI_PARSE_ERROR:
            detail = "the body is not valid JSON: it must be UTF-8 text of bounded nesting"
        return reply(request, err.status_code, detail, err.headers)

    @app.exception_handler(ServiceError)
    async def _refused(request: Request, err: ServiceError) -> Response:
        return reply(request, err.status, err.detail, err.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return reply(request, 500, "internal error")


class CatchAllMiddleware:
    """Answer an unhandled error with a JSON 500 and keep the connection.

    Starlette's outermost error middleware sends its 500 and then re-raises, and the
    server closes a connection whose application raised, so a keep-alive client saw its
    connection reset after every 500. Caught here, below that middleware, the response
    completes normally and the connection stays open for the next request.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # part of a response is out: the server must end the connection
                raise
            response = SafeJSONResponse({"detail": "internal error"}, 500)
            await response(scope, receive, send)
