"""Prometheus metrics of the service, in one registry per app instance.

Names follow Prometheus conventions (`_total` counters, base units: seconds, rows,
tokens). Batch-level figures are recorded at the batch boundary, as in TEI, because
that is where batching efficiency shows: batch size, padded tokens, inference time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

PREFIX = "bert_mts"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            f"{PREFIX}_requests_total",
            "HTTP requests by endpoint, task and status code (499: the client went away)",
            ["endpoint", "task", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "HTTP request latency by endpoint, task and status code",
            ["endpoint", "task", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.items = Counter(
            f"{PREFIX}_items_total", "Rows predicted, by task", ["task"], registry=self.registry
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size_rows",
            "Rows per ONNX Runtime run",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            f"{PREFIX}_batch_tokens",
            "Padded tokens (rows x longest row) per ONNX Runtime run",
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.inference_latency = Histogram(
            f"{PREFIX}_inference_duration_seconds",
            "Time of one ONNX Runtime run (batch)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth_rows", "Rows waiting for a batch", registry=self.registry
        )
        self.queue_tokens = Gauge(
            f"{PREFIX}_queue_depth_tokens",
            "Tokens of the rows waiting for a batch (the queue is bounded by them)",
            registry=self.registry,
        )
        self.shed = Counter(
            f"{PREFIX}_shed_requests_total",
            "Requests refused with 429 because the queue was full",
            registry=self.registry,
        )
        self.reloads = Counter(
            f"{PREFIX}_reloads_total",
            "Model reloads by result (loaded, unchanged, refused)",
            ["result"],
            registry=self.registry,
        )
        self.model_info = Info(f"{PREFIX}_model", "Served model", registry=self.registry)
        self.task_info = Gauge(
            f"{PREFIX}_task_info",
            "Served task branches (value 1)",
            ["task", "version", "layers"],
            registry=self.registry,
        )

    def observe_batch(self, rows: int, padded_tokens: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.batch_tokens.observe(padded_tokens)
        self.inference_latency.observe(seconds)
