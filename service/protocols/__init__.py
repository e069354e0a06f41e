"""Foreign protocols the service also speaks, each in its own module with its schemas:
OpenAI's embeddings (`openai`), text-embeddings-inference (`tei`) and the Open
Inference Protocol v2 (`kserve_v2`). Their routes answer from the live model like the
service's own: a protocol whose kind of task the model lacks refuses in its own shape."""

from __future__ import annotations

from fastapi import APIRouter

from service.protocols.common import renderer_for

__all__ = ["renderer_for", "routers"]


def routers() -> list[APIRouter]:
    """Every protocol's router, to include in the app (importing registers their paths
    with the middleware)."""
    from service.protocols import kserve_v2, openai, tei

    return [openai.router, tei.router, kserve_v2.router]
