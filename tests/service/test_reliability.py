"""Overload and a short soak against a real server process on loopback (the longer
versions, with figures, are benchmarks/overload_bench.py)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from service.client import Client
from tests.support.servers import start_service


@pytest.fixture(scope="module")
def store(tiny_store: Path) -> Path:
    return tiny_store


def rss_kib(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


async def burst(url: str, requests: int, concurrency: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> httpx.Response:
            async with gate:
                if i % 3 == 0:
                    return await client.post("/sentiment", json={"texts": [f"text {i}"] * 8})
                task = "/paraphrase" if i % 3 == 1 else "/similarity"
                return await client.post(task, json={"sentence1": f"a {i}", "sentence2": "b"})

        return await asyncio.gather(*(one(i) for i in range(requests)))


def test_overload_sheds_with_429_and_serves_the_rest(store: Path) -> None:
    process, url = start_service(store, max_queue_items="16", max_batch_size="4")
    try:
        responses = asyncio.run(burst(url, 300, concurrency=64))
        statuses = {r.status_code for r in responses}
        assert statuses <= {200, 429}, statuses
        shed = [r for r in responses if r.status_code == 429]
        assert shed and all(r.headers["retry-after"] == "1" for r in shed)
        assert all("overloaded" in r.json()["detail"] for r in shed)
        assert sum(r.status_code == 200 for r in responses) > 0
        metrics = Client(url).metrics()
        shed_total = float(
            re.search(r"^bert_mts_shed_requests_total (\S+)", metrics, re.M).group(1)
        )
        assert shed_total == len(shed)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_short_soak_does_not_grow_memory(store: Path) -> None:
    process, url = start_service(store)
    try:
        asyncio.run(burst(url, 300, concurrency=16))  # warm-up: arenas, caches, pools
        before = rss_kib(process.pid)
        for _ in range(4):
            responses = asyncio.run(burst(url, 400, concurrency=16))
            assert {r.status_code for r in responses} == {200}
        growth_mib = (rss_kib(process.pid) - before) / 1024
        assert growth_mib < 16, f"RSS grew by {growth_mib:.1f} MiB over 1,600 requests"
    finally:
        process.terminate()
        process.wait(timeout=30)
