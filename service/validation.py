"""One readable line for a request that failed validation, whichever route it was.

A route's body is often a union of request shapes (`{"text"}`, `{"texts"}`,
`{"sentence1", "sentence2"}`, `{"pairs"}`), and pydantic reports a body that fits none
of them with every shape's errors: `{"sentence": ...}` to /similarity gave nine, most
about shapes the client never meant. So the body's fields are read first: a body whose
fields are those of one shape gets that shape's errors only (its values are wrong); a
body with a wrong or missing field gets one line naming the fields the route accepts.
The service's routes keep pydantic's full list beside the line; foreign protocols send
the line in their own error shape.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

_SHOWN_ERRORS = 3  # a value problem's line names at most this many
_SHOWN_NAME = 40  # characters of an unknown field's name shown


def request_shapes(route: APIRoute | None) -> list[type[BaseModel]]:
    """The request bodies a route accepts: the models of its body's type (a union of
    several, or one), none for a route without a body model."""
    field = route.body_field if isinstance(route, APIRoute) else None
    if field is None:
        return []
    annotation = field.field_info.annotation
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    candidates = members or (annotation,)
    return [m for m in candidates if isinstance(m, type) and issubclass(m, BaseModel)]


def _required(shape: type[BaseModel]) -> list[str]:
    return [name for name, field in shape.model_fields.items() if field.is_required()]


def _optional(shape: type[BaseModel]) -> list[str]:
    return [name for name, field in shape.model_fields.items() if not field.is_required()]


def _describe(shape: type[BaseModel]) -> str:
    """A shape as its fields: `{"sentence1", "sentence2"}`, optional ones after `?`."""
    names = [f'"{name}"' for name in _required(shape)]
    names += [f'"{name}"?' for name in _optional(shape)]
    return "{" + ", ".join(names) + "}"


def accepted(shapes: Sequence[type[BaseModel]]) -> str:
    """What a route accepts, in words: `{"text"} or {"texts"}` (`?`: optional)."""
    return " or ".join(_describe(shape) for shape in shapes)


def _fits(shape: type[BaseModel], sent: set[str]) -> bool:
    return sent <= set(shape.model_fields) and set(_required(shape)) <= sent


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(name[:_SHOWN_NAME]) for name in names[:_SHOWN_ERRORS])


def _field_problem(shapes: Sequence[type[BaseModel]], sent: set[str]) -> str:
    """The closest shape's unknown and missing fields (missing ones only where the
    body chose a shape), and every shape accepted."""
    closest = max(shapes, key=lambda shape: len(sent & set(shape.model_fields)))
    unknown = sorted(sent - set(closest.model_fields))
    chosen = len(shapes) == 1 or bool(sent & set(closest.model_fields))
    missing = [name for name in _required(closest) if name not in sent] if chosen else []
    parts = [] if sent else ["no field"]
    if unknown:
        parts.append(f"unknown field{'s' if len(unknown) > 1 else ''} {_names(unknown)}")
    if missing:
        parts.append(f"missing field{'s' if len(missing) > 1 else ''} {_names(missing)}")
    return f"{' and '.join(parts)}: this route accepts {accepted(shapes)}"


def error_lines(errors: Sequence[dict[str, Any]]) -> str:
    """The first few errors as `where: message`, without the input (which may be
    unencodable)."""
    parts = []
    for error in errors[:_SHOWN_ERRORS]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{where or 'body'}: {error.get('msg')}")
    more = len(errors) - _SHOWN_ERRORS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def problem(shapes: Sequence[type[BaseModel]], body: Any, errors: Sequence[dict[str, Any]]) -> str:
    """One line for a body (parsed JSON) that failed validation against `shapes`: a
    wrong or missing field names the fields accepted; a wrong value, the errors of the
    one shape the body's fields chose (not the other shapes'); without shapes, the
    errors as they are."""
    if not shapes:
        return error_lines(errors)
    if not isinstance(body, dict):
        return f"the body must be a JSON object: this route accepts {accepted(shapes)}"
    sent = {str(key) for key in body}
    chosen = next((shape for shape in shapes if _fits(shape, sent)), None)
    if chosen is None:
        return _field_problem(shapes, sent)
    try:
        chosen.model_validate(body)
    except ValidationError as err:
        return error_lines(err.errors(include_url=False, include_input=False))
    return error_lines(errors)  # the shape alone accepts it: another check refused it


def is_json(request: Request) -> bool:
    """The body is declared JSON (or undeclared, which the routes read as JSON)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "" or media == "application/json" or media.endswith("+json")


def validation_problem(request: Request, err: RequestValidationError) -> tuple[int, str]:
    """The status and one line for a request that failed validation: 415 a body that
    is not JSON, 400 one that does not parse, 422 an invalid one (`problem`)."""
    errors = err.errors()
    if not is_json(request):
        return 415, "the body must be JSON (content-type: application/json)"
    unparseable = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if unparseable is not None:
        reason = (unparseable.get("ctx") or {}).get("error", "malformed")
        return 400, f"the body is not valid JSON: {reason}"
    body_errors = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
    others = [e for e in errors if tuple(e.get("loc", ()))[:1] != ("body",)]
    lines = [error_lines(others)] if others else []
    if body_errors:
        shapes = request_shapes(request.scope.get("route"))
        lines.append(problem(shapes, err.body, body_errors))
    return 422, "; ".join(lines)
