"""The HTTP layer: routes, input limits, error shapes and request metrics.

No model code here: a request is validated, tokenized by the engine, queued in the
shared batcher, and answered from its rows' predictions. Every client mistake is a 4xx
with a JSON `detail`; overload and timeouts are 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from service import schemas
from service.batcher import QueueFull, ShuttingDown
from service.engine import Engine, Prediction
from service.metrics import ServiceMetrics
from service.middleware import (
    RETRY_AFTER_SECONDS,
    BodyLimitMiddleware,
    LoadShedMiddleware,
    RequestMetricsMiddleware,
)
from service.reloader import ModelReloader, ReloadRefused
from service.settings import Settings

log = logging.getLogger(__name__)
_ERRORS = {
    400: {"model": schemas.ErrorResponse, "description": "Body could not be parsed"},
    413: {"model": schemas.ErrorResponse, "description": "Request body too large"},
    422: {"model": schemas.ErrorResponse, "description": "Invalid input"},
    503: {"model": schemas.ErrorResponse, "description": "Overloaded, timed out or not ready"},
}


# Module level: with postponed annotations FastAPI resolves dependency types by name here.
BearerCredentials = Annotated[
    HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))
]


def _on_sighup(loop: asyncio.AbstractEventLoop, models: ModelReloader) -> bool:
    """Reload on SIGHUP, where signals can be handled (Unix, main thread)."""
    try:
        loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(models.reload_quietly())
        )
    except (AttributeError, NotImplementedError, RuntimeError, ValueError):
        return False
    return True


def add_admin_routes(app: FastAPI, token: SecretStr, models: ModelReloader) -> None:
    """Operator endpoints, guarded by a bearer token (compared in constant time)."""
    expected = token.get_secret_value().encode()

    def authorize(credentials: BearerCredentials) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
            )

    @app.post(
        "/admin/reload",
        dependencies=[Depends(authorize)],
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


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """Build the app; the engine is loaded at start-up unless one is passed in."""
    metrics = ServiceMetrics()

    models = ModelReloader(settings, metrics)

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

    app = FastAPI(
        title="BERT-MTS",
        summary="Sentiment, paraphrase and similarity from one multi-task BERT graph.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.models = models
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(LoadShedMiddleware, models=models, metrics=metrics)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, err: QueueFull) -> JSONResponse:
        metrics.shed.inc()
        return JSONResponse(
            {"detail": f"overloaded: {err}; retry later"},
            status_code=503,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )

    @app.exception_handler(ShuttingDown)
    async def _shutting_down(_: Request, err: ShuttingDown) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, 503, headers={"Retry-After": RETRY_AFTER_SECONDS})

    async def predict(
        request: Request, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None
    ) -> tuple[list[Prediction], Engine]:
        live = models.live  # one (engine, batcher) pair for the whole request
        if live is None:
            raise HTTPException(503, "model not loaded yet", {"Retry-After": RETRY_AFTER_SECONDS})
        engine, batcher = live.engine, live.batcher
        if task not in engine.tasks:
            raise HTTPException(404, f"this model does not serve the {task} task")
        if len(texts_a) > settings.max_items_per_request:
            raise HTTPException(
                422,
                f"batch of {len(texts_a)} items exceeds the limit of "
                f"{settings.max_items_per_request} per request",
            )
        rows = engine.encode(texts_a, texts_b)
        futures = batcher.submit(rows, [engine.task_id(task)] * len(rows))
        try:
            predictions = await asyncio.wait_for(
                asyncio.gather(*futures), settings.request_timeout_s
            )
        except asyncio.TimeoutError:
            raise HTTPException(
                503,
                f"no answer within {settings.request_timeout_s} s; retry later",
                {"Retry-After": RETRY_AFTER_SECONDS},
            ) from None
        metrics.items.labels(task).inc(len(predictions))
        return predictions, engine

    def sentiment_result(prediction: Prediction, engine: Engine) -> schemas.SentimentResponse:
        label = int(prediction.values.argmax())
        return schemas.SentimentResponse(
            label=label,
            label_name=engine.tasks["sentiment"].label_names[label],
            probabilities=[float(p) for p in prediction.values],
            truncated=prediction.truncated,
            model_version=engine.version("sentiment"),
        )

    def paraphrase_result(prediction: Prediction, engine: Engine) -> schemas.ParaphraseResponse:
        probability = float(prediction.values[0])
        return schemas.ParaphraseResponse(
            is_paraphrase=probability >= 0.5,
            probability=probability,
            truncated=prediction.truncated,
            model_version=engine.version("paraphrase"),
        )

    def similarity_result(prediction: Prediction, engine: Engine) -> schemas.SimilarityResponse:
        return schemas.SimilarityResponse(
            score=float(prediction.values[0]),
            truncated=prediction.truncated,
            model_version=engine.version("similarity"),
        )

    @app.post(
        "/sentiment",
        response_model=schemas.SentimentResponse | schemas.SentimentBatchResponse,
        responses=_ERRORS,
    )
    async def sentiment(
        request: Request, body: schemas.SentimentRequest | schemas.SentimentBatchRequest
    ):
        """5-class sentiment (0 negative .. 4 positive) of one text or a batch."""
        texts = [body.text] if isinstance(body, schemas.SentimentRequest) else body.texts
        predictions, engine = await predict(request, "sentiment", texts, None)
        results = [sentiment_result(p, engine) for p in predictions]
        if isinstance(body, schemas.SentimentRequest):
            return results[0]
        return schemas.SentimentBatchResponse(
            results=results, model_version=engine.version("sentiment")
        )

    async def pair_endpoint(request: Request, task: str, body, make_result, batch_type):
        single = isinstance(body, schemas.PairRequest)
        pairs = [(body.sentence1, body.sentence2)] if single else body.pairs
        predictions, engine = await predict(
            request, task, [p[0] for p in pairs], [p[1] for p in pairs]
        )
        results = [make_result(p, engine) for p in predictions]
        if single:
            return results[0]
        return batch_type(results=results, model_version=engine.version(task))

    @app.post(
        "/paraphrase",
        response_model=schemas.ParaphraseResponse | schemas.ParaphraseBatchResponse,
        responses=_ERRORS,
    )
    async def paraphrase(request: Request, body: schemas.PairRequest | schemas.PairBatchRequest):
        """Whether two questions are paraphrases, with the probability that they are."""
        return await pair_endpoint(
            request, "paraphrase", body, paraphrase_result, schemas.ParaphraseBatchResponse
        )

    @app.post(
        "/similarity",
        response_model=schemas.SimilarityResponse | schemas.SimilarityBatchResponse,
        responses=_ERRORS,
    )
    async def similarity(request: Request, body: schemas.PairRequest | schemas.PairBatchRequest):
        """Semantic similarity of two sentences, 0 (unrelated) to 5 (equivalent)."""
        return await pair_endpoint(
            request, "similarity", body, similarity_result, schemas.SimilarityBatchResponse
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive (says nothing about the model)."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": schemas.ErrorResponse}})
    async def ready(request: Request):
        """200 once the model is loaded and the batcher runs; 503 before and while stopping."""
        live = models.live
        if live is None or not live.batcher.running:
            return JSONResponse({"detail": "model not loaded"}, 503)
        return {"status": "ready"}

    @app.get(
        "/info",
        response_model=schemas.ServiceInfo,
        responses={503: {"model": schemas.ErrorResponse}},
    )
    async def info(request: Request):
        """Tasks and versions, base model, execution provider and batching settings."""
        if models.live is None:
            return JSONResponse({"detail": "model not loaded"}, 503)
        engine = models.live.engine
        manifest = engine.manifest
        return schemas.ServiceInfo(
            model=manifest.name,
            base_model=str(manifest.base_model.get("name")),
            tasks=[
                schemas.TaskInfo(
                    name=t.name,
                    version=t.branch_version,
                    layers=t.layers,
                    labels=list(t.label_names),
                )
                for t in manifest.tasks
            ],
            graph=engine.variant,
            execution_provider=engine.provider,
            batching={
                "max_batch_size": settings.max_batch_size,
                "max_batch_tokens": settings.max_batch_tokens,
                "max_wait_ms": settings.max_wait_ms,
                "max_queue_items": settings.max_queue_items,
                "batch_overhead_tokens": settings.batch_overhead_tokens,
                "max_items_per_request": settings.max_items_per_request,
            },
        )

    if settings.admin_token is not None:
        add_admin_routes(app, settings.admin_token, models)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
