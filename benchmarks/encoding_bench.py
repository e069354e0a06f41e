"""What encoding one response body costs, by the ways a route could hand it back.

    python -m benchmarks.encoding_bench

For a /sentiment answer of one result and of 32: FastAPI's handling of a returned model
(validated again against the route's response_model, then dumped to JSON by pydantic:
the `dump_json` path it takes with its default response class, and the older dict +
json.dumps path), the model's own `model_dump_json()` (what the routes return now), and
orjson on the dumped dict. Microseconds per body, best of three.
"""

from __future__ import annotations

import asyncio
import timeit
from collections.abc import Callable

import orjson
from fastapi.responses import JSONResponse
from fastapi.routing import serialize_response

from benchmarks.common.report import print_report
from service import schemas
from service.routes import tasks

VERSION = "20261124T135123Z-abcdef12"


def main() -> None:
    route = next(r for r in tasks.router.routes if getattr(r, "path", "") == "/sentiment")
    one = schemas.SentimentResponse(
        label=3,
        label_name="positive",
        probabilities=[0.01, 0.04, 0.15, 0.5, 0.3],
        truncated=False,
        model_version=VERSION,
    )
    bodies = {
        "1 result": one,
        "32 results": schemas.SentimentBatchResponse(results=[one] * 32, model_version=VERSION),
    }
    loop = asyncio.new_event_loop()

    def fastapi(body, dump_json: bool) -> Callable[[], object]:
        def encode() -> object:
            content = loop.run_until_complete(
                serialize_response(
                    field=route.response_field, response_content=body, dump_json=dump_json
                )
            )
            return content if dump_json else JSONResponse(content).body

        return encode

    rows = []
    for label, body in bodies.items():
        ways = {
            "FastAPI, returned model (dump_json path)": fastapi(body, True),
            "FastAPI, returned model (dict + json.dumps)": fastapi(body, False),
            "model_dump_json (the routes now)": body.model_dump_json,
            "orjson.dumps(model_dump())": lambda body=body: orjson.dumps(body.model_dump()),
        }
        for way, encode in ways.items():
            seconds = min(timeit.repeat(encode, number=2000, repeat=3)) / 2000
            rows.append((label, way, f"{seconds * 1e6:.1f}"))
    print_report("Encoding one response body", ["body", "encoder", "us per body"], rows)


if __name__ == "__main__":
    main()
