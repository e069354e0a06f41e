"""Operator routes: liveness, readiness, what is served, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import schemas

router = APIRouter()
NOT_LOADED = {503: {"model": schemas.ErrorResponse}}


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (says nothing about the model)."""
    return {"status": "ok"}


@router.get("/ready", responses=NOT_LOADED)
async def ready(request: Request):
    """200 once the model is loaded and the batcher runs; 503 before and while stopping."""
    live = request.app.state.models.live
    if live is None or not live.batcher.running:
        return JSONResponse({"detail": "model not loaded"}, 503)
    return {"status": "ready"}


@router.get("/info", response_model=schemas.ServiceInfo, responses=NOT_LOADED)
async def info(request: Request):
    """Tasks and versions, base model, execution provider and batching settings."""
    live = request.app.state.models.live
    if live is None:
        return JSONResponse({"detail": "model not loaded"}, 503)
    settings = request.app.state.settings
    engine = live.engine
    manifest = engine.manifest
    return schemas.ServiceInfo(
        model=manifest.name,
        base_model=str(manifest.base_model.get("name")),
        tasks=[
            schemas.TaskInfo(
                name=t.name, version=t.branch_version, layers=t.layers, labels=list(t.label_names)
            )
            for t in manifest.tasks
        ],
        graph=engine.variant,
        graph_reason=engine.graph_reason,
        execution_provider=engine.provider,
        batching={
            "max_batch_size": settings.max_batch_size,
            "max_batch_tokens": live.batcher.max_batch_tokens,
            "max_wait_ms": settings.max_wait_ms,
            "max_queue_items": settings.max_queue_items,
            "max_queue_tokens": settings.max_queue_tokens,
            "batch_overhead_tokens": settings.batch_overhead_tokens,
            "max_items_per_request": settings.max_items_per_request,
        },
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
