"""A closed-loop load generator of its own, every request timed by the client: raw
HTTP/1.1 keep-alive connections over asyncio, no dependencies. Nothing is corrected
for coordinated omission (wrk does that, which turns one slow answer into many phantom
ones), so the figures are what the clients saw. Shared by `benchmarks.tail_bench` and
`benchmarks.profile_serve`."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time

from model_store.tokenizer import PairTokenizer

Request = tuple[bytes, int]  # the raw HTTP request, its longest row in tokens


def http_request(path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def workloads(texts, tokenizer: PairTokenizer) -> dict[str, list[Request]]:
    """Request lists by workload name, each request with its length in tokens."""

    def longest(items: list[tuple[str, ...]]) -> int:
        pair = len(items[0]) == 2
        rows = tokenizer.encode([i[0] for i in items], [i[1] for i in items] if pair else None)
        return max(len(row) for row in rows)

    def single(task: str, item: tuple[str, ...]) -> Request:
        if task == "sentiment":
            body = {"text": item[0]}
        else:
            body = {"sentence1": item[0], "sentence2": item[1]}
        return http_request(f"/{task}", body), longest([item])

    rng = random.Random(0)
    sentiment = [single("sentiment", item) for item in texts["sentiment"]]
    mixed = []
    for task, items in texts.items():
        for i, item in enumerate(items):
            if i % 8 == 0:  # long: several rows joined (the tokenizer cuts at the maximum)
                joined = tuple(
                    " ".join(x[k] for x in rng.sample(items, 6)) for k in range(len(item))
                )
                item = joined
            mixed.append(single(task, item))
    rng.shuffle(mixed)
    sentences = [item[0] for item in texts["sentiment"]]
    batches = [
        (
            http_request("/sentiment", {"texts": sentences[i : i + 32]}),
            longest([(s,) for s in sentences[i : i + 32]]),
        )
        for i in range(0, len(sentences) - 31, 32)
    ]
    return {"single": sentiment, "mixed": mixed, "batch of 32": batches}


async def one_connection(
    port: int, requests: list[Request], start: int, until: float, out: list
) -> None:
    """One closed-loop client: (latency s, tokens, status) per request into `out`;
    status 0 for a connection the server closed (then it reconnects)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = start
    try:
        while time.perf_counter() < until:
            raw, length = requests[i % len(requests)]
            i += 1
            began = time.perf_counter()
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                size = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
                await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                out.append((time.perf_counter() - began, length, 0))
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            out.append((time.perf_counter() - began, length, int(head[9:12])))
    finally:
        writer.close()
