"""OpenTelemetry: a server span per request, a child of the caller's traceparent, with
tokenize, queue wait and inference children whose attributes and counts agree with
/metrics; off unless configured."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service import tracing
from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def spans(repository):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    server = ThreadedServer(create_app(Settings(model_dir=repository, provider="cpu")))
    try:
        yield server.url, exporter
    finally:
        server.stop()
        tracing.use_provider(None)


def _inference_count(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("bert_mts_inference_duration_seconds_count"):
            return float(line.split()[-1])
    raise AssertionError("no inference histogram")


def test_request_span_with_children(spans) -> None:
    url, exporter = spans
    before = _inference_count(url)
    exporter.clear()
    response = httpx.post(
        f"{url}/v1/tasks/sentiment",
        json={"texts": ["a gripping film", "dull ."]},
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 200
    finished = {span.name: span for span in exporter.get_finished_spans()}
    server = finished["POST /v1/tasks/{task}"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert server.attributes["http.response.status_code"] == 200
    for name in ("tokenize", "queue wait", "inference"):
        child = finished[name]
        assert child.parent.span_id == server.context.span_id, name
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    inference = finished["inference"]
    assert inference.attributes["task"] == "sentiment" and inference.attributes["rows"] == 2
    assert inference.attributes["batch_size"] == 2 and inference.attributes["batches"] == 1
    assert finished["queue wait"].end_time <= inference.start_time
    # One engine run answered it: /metrics counted one, the trace shows one batch.
    assert _inference_count(url) - before == inference.attributes["batches"]


def test_off_unless_configured(monkeypatch) -> None:
    assert not tracing.wanted_by_environment({})
    assert not tracing.wanted_by_environment({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.wanted_by_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing.wanted_by_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    )
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert tracing.configure_from_environment() is False and not tracing.enabled()


def test_otlp_export_from_the_standard_variables(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "bert-mts-test")
    try:
        assert tracing.configure_from_environment() is True
        provider = tracing._provider
        assert provider.resource.attributes["service.name"] == "bert-mts-test"
    finally:
        tracing.use_provider(None)
