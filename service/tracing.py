"""OpenTelemetry traces: a span per request, with child spans for tokenize, queue wait
and inference. Off unless configured.

Configured by the standard variables only: tracing is on when `OTEL_TRACES_EXPORTER`
is `otlp` or an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and the SDK and OTLP exporter are installed;
everything else (service name, headers, sampler, batch sizes) the SDK reads from its own
`OTEL_*` variables. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off.
A request's `traceparent` (W3C trace context, or whatever `OTEL_PROPAGATORS` names) makes
its span a child of the caller's.

The queue wait and inference spans are recorded after the fact from the engine run's
own timestamps (`service.engine.BatchRun`): the batcher is shared by many requests, so
a request learns when its batch ran from the answer it gets back. Attributes: the
task(s), the request's rows, the batch's rows and padded tokens.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

log = logging.getLogger(__name__)
_NAME = "bert-mts"
_provider: TracerProvider | None = None


def enabled() -> bool:
    return _provider is not None


def use_provider(provider: TracerProvider | None) -> None:
    """Trace with this provider (None: off). Tests pass one with an in-memory exporter."""
    global _provider
    _provider = provider


def wanted_by_environment(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return exporter == "otlp" or bool(endpoint)


def configure_from_environment() -> bool:
    """Install an SDK provider exporting OTLP (http/protobuf) when the environment asks
    for traces; True if tracing is on. Missing packages are one warning, not a failure."""
    if _provider is not None or not wanted_by_environment():
        return _provider is not None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as err:
        log.warning("OTEL_* asks for traces, but the OpenTelemetry SDK is missing: %s", err)
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", _NAME)})
    provider = SdkTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use_provider(provider)
    log.info("tracing on: OTLP export as the OTEL_* variables say")
    return True


def shutdown() -> None:
    """Flush and stop the provider's exporters (at service shutdown)."""
    if _provider is not None and hasattr(_provider, "shutdown"):
        _provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(_NAME, tracer_provider=_provider or trace.NoOpTracerProvider())


class TracingMiddleware:
    """A server span per HTTP request, a child of the caller's `traceparent`, current
    while the app handles it (so `Infer`'s spans nest under it)."""

    def __init__(self, app, route_of) -> None:
        self.app = app
        self.route_of = route_of  # path -> its low-cardinality route (metrics' endpoint)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or _provider is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(headers)
        route = self.route_of(scope["path"])
        attributes = {
            "http.request.method": scope["method"],
            "http.route": route,
            "url.path": scope["path"],
        }
        status = 500

        async def record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        span = tracer().start_span(
            f"{scope['method']} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, record)
        finally:
            context.detach(token)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()


def now_ns() -> int:
    return time.time_ns()


def record_tokenize(started_ns: int, ended_ns: int, items: int) -> None:
    if _provider is None:
        return
    span = tracer().start_span("tokenize", start_time=started_ns, attributes={"rows": items})
    span.end(end_time=ended_ns)


def record_batches(submitted_ns: int, tasks: Sequence[str], predictions: Sequence[dict]) -> None:
    """Queue wait (submitted until the first of the request's batches started) and
    inference (first batch start to last batch end), from the runs that answered."""
    if _provider is None:
        return
    runs = {}
    for row in predictions:
        for prediction in row.values():
            if prediction.batch is not None:
                runs[id(prediction.batch)] = prediction.batch
    if not runs:
        return
    batches = sorted(runs.values(), key=lambda run: run.started_ns)
    started = batches[0].started_ns
    common = {"task": ",".join(tasks), "rows": len(predictions)}
    wait = tracer().start_span("queue wait", start_time=submitted_ns, attributes=common)
    wait.end(end_time=max(started, submitted_ns))
    attributes = {
        **common,
        "batches": len(batches),
        "batch_size": max(run.rows for run in batches),
        "batch_tokens": max(run.tokens for run in batches),
    }
    span = tracer().start_span("inference", start_time=started, attributes=attributes)
    span.end(end_time=max(run.ended_ns for run in batches))
