"""HTTP routes, one module per audience: task clients, operators, administrators."""

from __future__ import annotations

from fastapi.routing import APIRoute

from service.routes import admin, operations, tasks


def fixed_paths() -> frozenset[str]:
    """The path of every route without path parameters, read from the routers (the
    admin route's whether or not it is enabled), so that request metrics can name them
    and count any other path as "other"."""
    routes = [*tasks.router.routes, *operations.router.routes]
    paths = {r.path for r in routes if isinstance(r, APIRoute) and "{" not in r.path}
    return frozenset({*paths, admin.RELOAD_PATH})
