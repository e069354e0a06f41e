"""The FastAPI application: wiring only.

The request path is one way: HTTP (routes, `service.routes`) -> `Infer` (check,
tokenize off the event loop, queue) -> the dynamic batcher -> the engine -> reply.
Middleware bounds what a request may cost before it is parsed; error handlers
(`service.errors`) turn every refusal into a JSON `detail`.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import asynccontextmanager

from fastapi import FastAPI

from model_store.tokenizer import MAX_CHARS_PER_TOKEN
from service import protocols, tracing
from service.docs_pages import install_docs
from service.engine import Engine
from service.errors import CatchAllMiddleware, install_error_handlers
from service.inference import Infer
from service.metrics import ServiceMetrics
from service.middleware import (
    BodyLimitMiddleware,
    CancelOnDisconnectMiddleware,
    LoadShedMiddleware,
    RequestMetricsMiddleware,
    route_of,
)
from service.reloader import ModelReloader
from service.routes import operations, tasks
from service.routes.admin import admin_router
from service.settings import Settings


def _on_sighup(loop: asyncio.AbstractEventLoop, models: ModelReloader) -> bool:
    """Reload on SIGHUP, where signals can be handled (Unix, main thread)."""
    try:
        loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(models.reload_quietly())
        )
    except (AttributeError, NotImplementedError, RuntimeError, ValueError):
        return False
    return True


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """Build the app; the engine is loaded at start-up unless one is passed in."""
    metrics = ServiceMetrics()
    models = ModelReloader(settings, metrics)
    infer = Infer(
        models,
        metrics,
        settings.max_items_per_request,
        settings.request_timeout_s,
        max_tokenizing_items=settings.max_queue_items,
        max_tokenizing_chars=settings.max_queue_tokens * MAX_CHARS_PER_TOKEN,
        inline_tokenizing_chars=settings.inline_tokenizing_chars,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await models.start(engine)
        loop = asyncio.get_running_loop()
        hangup = _on_sighup(loop, models)
        try:
            yield
        finally:
            if hangup:
                loop.remove_signal_handler(signal.SIGHUP)
            await models.stop()
            infer.close()

    app = FastAPI(
        title="BERT-MTS",
        summary="Many NLP tasks from one multi-task BERT graph: the presets sentiment, "
        "paraphrase and similarity, and any task published into the model repository.",
        version="0.2.0",
        lifespan=lifespan,
        # Starlette's slash redirect builds an absolute Location from the Host header
        # (a client could make it point anywhere); /sentiment/ is simply not a route.
        redirect_slashes=False,
        docs_url=None,  # served from local assets: service.docs_pages
        redoc_url=None,
    )
    install_docs(app)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.models = models
    app.state.infer = infer
    # Innermost: the body is already bounded and read when it watches for a hang-up.
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(LoadShedMiddleware, models=models, metrics=metrics)
    app.add_middleware(RequestMetricsMiddleware, models=models, metrics=metrics)
    app.add_middleware(CatchAllMiddleware)  # a 500 keeps the connection
    # Outermost: a request's span covers the limits and accounting too (off unless
    # OTEL_* configures it, or a test installs a provider).
    tracing.configure_from_environment()
    app.add_middleware(tracing.TracingMiddleware, route_of=route_of)
    install_error_handlers(app, protocols.renderer_for)
    app.include_router(tasks.router)
    app.include_router(operations.router)
    for router in protocols.routers():  # OpenAI, text-embeddings-inference, KServe v2
        app.include_router(router)
    if settings.admin_token is not None:
        app.include_router(admin_router(settings.admin_token, models))
    return app
