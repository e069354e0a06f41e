"""What every foreign protocol's routes share: their own error shape, and the routes'
place in metrics and load shedding.

Each protocol (OpenAI, text-embeddings-inference, the Open Inference Protocol) answers
refusals in the shape its clients parse, on its own routes only: the service's own
routes keep `{"detail"}`. A protocol's router uses `protocol_route(render)` as its
route class, which turns the two kinds of refusal a route can meet (a body FastAPI
could not validate, a `ServiceError` from `Infer`) into that shape, with the same
statuses and `Retry-After` the service sends elsewhere. Everything still goes through
`Infer`, so queue bounds, shedding and the request timeout apply unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from service.errors import Render, SafeJSONResponse
from service.inference import ServiceError
from service.validation import validation_problem


def protocol_route(render: Render, invalid_status: int | None = None) -> type[APIRoute]:
    """A route class answering refusals with `render`; `invalid_status` replaces 422
    for invalid requests (a body that does not validate, too many items) where the
    protocol uses another status (OpenAI, Open Inference Protocol: 400). Any other
    exception is the service's failure and goes to its own 500 handler."""

    def refused(status: int, message: str, headers: dict[str, str] | None) -> Response:
        if status == 422 and invalid_status is not None:
            status = invalid_status
        return render(status, message, headers)

    class ProtocolRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as err:
                    return refused(*validation_problem(request, err), None)
                except ServiceError as err:
                    return refused(err.status, err.detail, err.headers)
                except HTTPException as err:  # FastAPI's own, e.g. a body that is not UTF-8
                    return refused(err.status_code, str(err.detail), err.headers)

            return guarded

    return ProtocolRoute


def examples(**values: Any) -> dict[str, dict[str, Any]]:
    """OpenAPI Example Objects by name, each a complete request that the default model
    answers (a test posts every example the served /openapi.json holds), for /docs
    and /redoc to show instead of a body generated from the schema."""
    return {
        name: {"summary": name.replace("_", " "), "value": value} for name, value in values.items()
    }


def self_contained(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` inlined, for a schema placed by hand in
    the OpenAPI document (`openapi_extra`): there `#/$defs/...` would resolve against the
    whole document, which has no `$defs` (ReDoc fails on the reference)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return inline(schema)


def refuse(status: int, message: str) -> ServiceError:
    """A refusal raised inside a protocol route (rendered in the protocol's shape)."""
    return ServiceError(status, message)


def json_error(body: dict, status: int, headers: dict[str, str] | None) -> Response:
    return SafeJSONResponse(body, status, headers=headers)


@dataclass(frozen=True)
class ProtocolPath:
    """A protocol route as metrics and load shedding see it: its endpoint label (the
    path template) and whether it runs inference. (Its error shape, for refusals made
    before routing, comes from the prefix its protocol `claim`s.)"""

    template: str
    inference: bool

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(self.template)) + "$")

    def task(self, path: str) -> str | None:
        """The task named in the path (`{task}`), if the template has one."""
        if "{task}" not in self.template:
            return None
        prefix, _, _ = self.template.partition("{task}")
        return path[len(prefix) :].split("/", 1)[0] or None


_PATHS: list[tuple[re.Pattern[str], ProtocolPath]] = []
_PREFIXES: dict[str, Render] = {}


def register(*paths: ProtocolPath) -> None:
    """Make protocol routes known to the middleware (endpoint labels, shedding)."""
    for path in paths:
        if all(known.template != path.template for _, known in _PATHS):
            _PATHS.append((path.pattern, path))


def claim(render: Render, *prefixes: str) -> None:
    """Every path at or under these prefixes is the protocol's: refusals there, a 404
    or 405 no route of the protocol saw included, are rendered in its shape."""
    for prefix in prefixes:
        _PREFIXES[prefix] = render


def renderer_for(path: str) -> Render | None:
    """The error renderer of the protocol owning `path` (by prefix), None for the
    service's own paths."""
    for prefix, render in _PREFIXES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return render
    return None


def protocol_path(path: str) -> ProtocolPath | None:
    for pattern, known in _PATHS:
        if pattern.match(path):
            return known
    return None
