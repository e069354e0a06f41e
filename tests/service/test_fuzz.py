"""Schema fuzzing: schemathesis generates requests from the service's own OpenAPI schema
(valid and invalid ones) against a real server; no response may be a 5xx, and every
response must match the schema (schemathesis' own checks). Bounded, so it runs in CI;
`python -m benchmarks.fuzz_bench` runs the same fuzzer longer and prints the counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.fuzz_bench import fuzz
from service.app import create_app
from service.engine import Engine
from service.settings import Settings
from tests.support.servers import ThreadedServer

EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def base_url(tiny_store: Path) -> Iterator[str]:
    config = Settings(model_dir=tiny_store, provider="cpu", max_body_bytes=65536)
    server = ThreadedServer(
        create_app(config, Engine.load(config.model_dir, config.engine_config()))
    )
    yield server.url
    server.stop()


def test_no_5xx_and_no_schema_violation(base_url: str) -> None:
    report = fuzz(base_url, EXAMPLES_PER_OPERATION)
    assert report.failures == [], report.failures[:3]
    assert not any(status >= 500 for status in report.statuses)
    covered = {path for path, _ in report.requests_per_operation}
    assert covered >= {"/sentiment", "/paraphrase", "/similarity", "/health", "/ready", "/info"}
    # both kinds of input were generated: accepted ones and refused ones
    assert report.statuses[200] > 0 and report.statuses[422] > 0
    assert sum(report.requests_per_operation.values()) >= 6 * 10
    assert isinstance(report.statuses, Counter) and Path(__file__).exists()
