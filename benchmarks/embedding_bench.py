"""The embedding task on a real store: parity per graph variant with sentence-transformers,
and what an embedding costs next to a classification.

    python -m benchmarks.embedding_bench --model-dir models/default --texts 300

Parity: the store's embedding task through each graph (ONNX Runtime, CPU) against
`SentenceTransformer(<the store's base>).encode` of the same SST validation sentences
(the reference's max length set to the store's, so both see the same tokens): cosine
per sentence, min / 1st percentile / mean. Cost: one row at a time through the fp32
engine asking sentiment, the embedding, or both at once (one row, the frozen layers run
once), with the layers each runs; latency p50 / p99 / max per call.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common.report import markdown_table, provenance
from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from service.engine import Engine, EngineConfig
from training.data.presets import PRESETS
from training.data.readers import read_examples
from training.data.split import split_train_val
from training.encoders.base_model import locate_recorded_base, read_base_model_spec
from training.fit.objectives import preset_spec


def sentences(data_dir: Path, count: int) -> list[str]:
    dataset = PRESETS["sentiment"].data
    loaded = read_examples(
        data_dir / dataset.filename,
        dataset.columns,
        preset_spec("sentiment").parse_label,
        skip_bad_rows=True,
    )
    return [e.text_a for e in split_train_val(loaded.examples, 0.1, seed=0)[1][:count]]


def embed(engine: Engine, texts: list[str], task: str, batch: int = 32) -> np.ndarray:
    vectors = []
    for start in range(0, len(texts), batch):
        rows = engine.encode(texts[start : start + batch])
        for prediction in engine.run(rows, [[engine.task_id(task)]] * len(rows)):
            vectors.append(prediction[task].values)
    return np.stack(vectors).astype(np.float64)


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/default"))
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--task", default="embedding")
    parser.add_argument("--only", choices=("parity", "cost"), help="one of the two tables")
    args = parser.parse_args()

    store = resolve_store(args.model_dir)
    manifest = load_manifest(store)
    texts = sentences(args.data_dir, args.texts)
    if args.only != "cost":
        print_parity(store, manifest, texts, args.task)
    if args.only != "parity":
        print_cost(store, manifest, texts, args.task)


def print_parity(store: Path, manifest, texts: list[str], task: str) -> None:
    from sentence_transformers import SentenceTransformer

    base = read_base_model_spec(locate_recorded_base(manifest.base_model, str(store)))
    reference = SentenceTransformer(str(base.path), device="cpu")
    reference.max_seq_length = manifest.max_seq_len
    expected = unit(reference.encode(texts, convert_to_numpy=True).astype(np.float64))
    parity = []
    for variant in manifest.graphs:
        engine = Engine.load_store(store, EngineConfig(graph=variant, provider="cpu"))
        cosines = (unit(embed(engine, texts, task)) * expected).sum(axis=1)
        stats = (cosines.min(), np.percentile(cosines, 1), cosines.mean())
        parity.append([variant, len(texts), *(f"{value:.6f}" for value in stats)])
    print(f"## Embedding parity with sentence-transformers\n\n{provenance()}\n")
    print(markdown_table(["graph", "sentences", "min cosine", "p1 cosine", "mean cosine"], parity))


def print_cost(store: Path, manifest, texts: list[str], task: str) -> None:
    engine = Engine.load_store(store, EngineConfig(graph="fp32", provider="cpu"))
    rows = engine.encode(texts)
    sets = {
        "sentiment": ["sentiment"],
        task: [task],
        f"{task} + sentiment (one row)": [task, "sentiment"],
    }
    cost = []
    for label, names in sets.items():
        ids = [engine.task_id(name) for name in names]
        for row in rows[:20]:  # warm-up
            engine.run([row], [ids])
        timings = []
        for row in rows:
            started = time.perf_counter()
            engine.run([row], [ids])
            timings.append((time.perf_counter() - started) * 1000)
        p50, p99 = np.percentile(timings, [50, 99])
        layers = manifest.layer_evaluations(names)
        cost.append([label, layers, len(timings), p50, p99, max(timings)])
    title = "Cost of an embedding next to a classification (fp32, one row per run)"
    print(f"\n## {title}\n\n{provenance()}\n")
    print(markdown_table(["asks", "layers run", "runs", "p50 ms", "p99 ms", "max ms"], cost))


if __name__ == "__main__":
    main()
