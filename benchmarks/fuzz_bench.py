"""Fuzz a running service from its own OpenAPI schema (schemathesis + hypothesis).

    python -m benchmarks.fuzz_bench --model-dir runs/store-k2 --examples 300

Every generated request, valid by the schema or deliberately not, goes to a live
server; schemathesis' checks flag any 5xx, undocumented status code, or response that
breaks the schema. The test suite runs `fuzz` briefly on a tiny store; this command
runs it longer on a real one and prints the counts.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import positive_data_acceptance

# Operations whose schema-valid bodies may still name what the live model does not serve:
# `/v1/predict` takes task names (the served set changes with every reload, so no static
# schema can list them) and refuses unknown ones, or ones of the other input shape, with
# a 422. Every other check (no 5xx, documented statuses, response schemas) still applies.
# So do the other protocols' inference routes: OpenAI's `model` must be a served embedding
# task, TEI's /embed and /predict need a task of the inputs' shape (and refuse inputs over
# the max length without `truncate`), a v2 request names a served task and its inputs.
_DATA_DEPENDENT = {
    "/v1/predict",
    "/v1/embeddings",
    "/embed",
    "/predict",
    "/v2/models/{task}/infer",
}


@dataclass
class FuzzReport:
    statuses: Counter = field(default_factory=Counter)
    requests_per_operation: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def _run_operation(base_url: str, operation, mode, examples: int, report: FuzzReport) -> None:
    key = (operation.path, operation.method.upper())

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    def run(case) -> None:
        response = case.call(base_url=base_url)
        report.statuses[response.status_code] += 1
        report.requests_per_operation[key] += 1
        excluded = [positive_data_acceptance] if operation.path in _DATA_DEPENDENT else None
        try:
            case.validate_response(response, excluded_checks=excluded)
        except BaseException as err:  # schemathesis raises a group listing every failed check
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            report.failures.append(f"{key[1]} {key[0]}: {err}")

    with contextlib.suppress(Unsatisfiable):  # e.g. no invalid input for a bare GET
        run()


def fuzz(base_url: str, examples_per_operation: int) -> FuzzReport:
    """Positive and negative examples for every operation; failures are collected."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    report = FuzzReport()
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for result in schema.get_all_operations():
        for mode in modes:
            _run_operation(base_url, result.ok(), mode, examples_per_operation, report)
    return report


def main() -> None:
    import argparse
    import threading
    import time
    from pathlib import Path

    import uvicorn

    from benchmarks.common.report import print_report
    from benchmarks.common.serving import free_port
    from service.app import create_app
    from service.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=300, help="per operation and mode")
    args = parser.parse_args()
    port = free_port()
    app = create_app(Settings(model_dir=args.model_dir, provider="cpu"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        report = fuzz(f"http://127.0.0.1:{port}", args.examples)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    rows = [
        (f"{method} {path}", count)
        for (path, method), count in sorted(report.requests_per_operation.items())
    ]
    rows.append(("all", sum(report.requests_per_operation.values())))
    print_report(
        "Schema fuzzing (schemathesis, positive and negative cases)",
        ["operation", "requests"],
        rows,
    )
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(report.statuses.items()))
    server_errors = sum(n for code, n in report.statuses.items() if code >= 500)
    print(
        f"\nstatus codes: {statuses}\n5xx responses: {server_errors}\n"
        f"schema violations: {len(report.failures)}"
    )
    for failure in report.failures[:5]:
        print(failure)


if __name__ == "__main__":
    main()
