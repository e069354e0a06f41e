"""Administrator routes, guarded by a bearer token (compared in constant time).

They exist only when a token is configured; settings refuse an empty or short one.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from service import schemas
from service.reloader import ModelReloader, ReloadRefused

# Module level: with postponed annotations FastAPI resolves dependency types by name here.
BearerCredentials = Annotated[
    HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))
]


RELOAD_PATH = "/admin/reload"


def admin_router(token: SecretStr, models: ModelReloader) -> APIRouter:
    expected = token.get_secret_value().encode()

    def authorize(credentials: BearerCredentials) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not given or not hmac.compare_digest(given, expected):
            raise HTTPException(
                401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
            )

    router = APIRouter(dependencies=[Depends(authorize)])

    @router.post(
        RELOAD_PATH,
        responses={401: {"model": schemas.ErrorResponse}, 409: {"model": schemas.ErrorResponse}},
    )
    async def reload_model() -> dict:
        """Load the model directory's current version and swap it in, without downtime."""
        try:
            outcome = await models.reload()
        except ReloadRefused as err:
            raise HTTPException(
                409, f"reload refused, the previous model still serves: {err}"
            ) from err
        return {"result": outcome.result, "store": outcome.store, "tasks": outcome.tasks}

    return router
