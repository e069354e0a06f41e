"""Do two checkouts serve the same answers? A fixed probe set, compared byte for byte.

    python -m benchmarks.probe_identity --before /tmp/before \\
        --before-model-dir /tmp/before/models/default --model-dir models/default

Both servers answer the three named endpoints for the first N validation rows of each
preset task (from ../shared/data) plus a few edge cases (empty-ish, very long, non-ASCII
text), one request per item and one batch request per task; the JSON bodies must be
identical. This is how a change to the serving code proves that the shipped model's
contract and numbers did not move.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

from benchmarks.common.report import markdown_table, provenance
from benchmarks.common.serving import Server, validation_texts

EDGE_CASES = ["ok", "é ü 東京 🙂 naïve café", " ".join(["very long"] * 200)]


def probe_requests(data_dir: Path, per_task: int) -> list[tuple[str, str, dict]]:
    """(task, path, body) for every probe, in a fixed order."""
    texts = validation_texts(data_dir, per_task)
    requests = []
    for task, items in texts.items():
        if task == "sentiment":
            items = items + [(text,) for text in EDGE_CASES]
            bodies = [{"text": item[0]} for item in items]
            batch = {"texts": [item[0] for item in items]}
        else:
            items = items + [(text, text[::-1]) for text in EDGE_CASES]
            bodies = [{"sentence1": a, "sentence2": b} for a, b in items]
            batch = {"pairs": [[a, b] for a, b in items]}
        requests += [(task, f"/{task}", body) for body in bodies]
        requests.append((task, f"/{task}", batch))
    return requests


def answers(model_dir: Path, root: Path | None, requests) -> list[bytes]:
    server = Server(model_dir, {}, root)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return [client.post(path, json=body).content for _, path, body in requests]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--before-model-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--per-task", type=int, default=200)
    args = parser.parse_args()
    requests = probe_requests(args.data_dir, args.per_task)
    before = answers(args.before_model_dir, args.before, requests)
    after = answers(args.model_dir, None, requests)
    rows = []
    for task in ("sentiment", "paraphrase", "similarity"):
        pairs = [
            (b, a) for (t, _, _), b, a in zip(requests, before, after, strict=True) if t == task
        ]
        same = sum(b == a for b, a in pairs)
        rows.append([task, len(pairs), same, len(pairs) - same])
    print(f"## Probe answers, before and after\n\n{provenance()}\n")
    print(markdown_table(["endpoint", "requests", "identical bytes", "different"], rows))
    sys.exit(0 if all(row[3] == 0 for row in rows) else 1)


if __name__ == "__main__":
    main()
