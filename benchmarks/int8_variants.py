"""What brings int8 closer to fp32: quantization options, per task, by the paired tests.

    python -m benchmarks.int8_variants --store models/default --data-dir ../shared/data

Quantizes the store's fp32 graph with ONNX Runtime's `quantize_dynamic` (QInt8,
per-channel weight scales) three ways: as shipped (`training.graph.onnx_export.quantize_int8`:
MatMul only, the embeddings stay fp32), MatMul and the embedding Gather (ONNX Runtime's
default, shipped before), and with each branch's last layer left in fp32; runs every
task's validation rows through fp32 and each int8 graph and prints the metric, the loss
and the paired test against fp32
(`training.evaluate.paired_test`). The accuracy figures are deterministic. With
`--speed-rounds N`, each graph's offline throughput is measured too: the first task's
validation rows in length-sorted batches of 32 (as the serving benchmark's ceiling),
one pass per graph per round, the graphs interleaved round by round so that they share
the machine's state; items/s is given as median, min and max over the rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from benchmarks.common.report import markdown_table, provenance
from model_store.manifest import GRAPH_FILES, MANIFEST_FILE, load_manifest, sha256_of
from model_store.repository import resolve_store
from model_store.runtime import CPU, MultiTaskSession
from model_store.tokenizer import PairTokenizer
from training.evaluate.paired_test import paired_comparisons
from training.evaluate.store import (
    metrics_by_task,
    store_outputs,
    task_outputs,
    validation_examples,
)


def last_layer_nodes(manifest, graph: Path) -> list[str]:
    """Nodes of each branch's top layer (its name prefix: /task/layers.{K-1}/)."""
    names = [node.name for node in onnx.load(str(graph), load_external_data=False).graph.node]
    prefixes = [f"/{task.name}/layers.{task.layers - 1}/" for task in manifest.tasks]
    return [name for name in names if name.startswith(tuple(prefixes))]


def figures(test: dict) -> str:
    if test["test"] == "mcnemar_exact":
        return (
            f"{test['loss_points']:.2f} ({test['right_in_fp32_only']} / "
            f"{test['right_in_variant_only']}, p = {test['p_value']:.3f})"
        )
    low, high = test["loss_interval_points"]
    return f"{test['loss_points']:.2f} ([{low:.2f}, {high:.2f}])"


def speeds(manifests: dict[str, object], data_dir: Path, rounds: int) -> dict[str, list[float]]:
    """Items/s of each graph over `rounds` interleaved passes of the first labelled
    task's validation rows, batches of 32."""
    first, _ = next(iter(manifests.values()))
    task = next(t for t in first.tasks if t.kind != "embedding")
    examples = validation_examples(task, task.validation.get("split") or {}, data_dir)
    tokenizer = PairTokenizer.from_file(first.tokenizer_path, first.max_seq_len)
    sessions = {
        label: MultiTaskSession(manifest, variant, providers=[CPU])
        for label, (manifest, variant) in manifests.items()
    }
    measured: dict[str, list[float]] = {label: [] for label in sessions}
    for round_ in range(rounds + 1):
        for label, session in sessions.items():
            started = time.perf_counter()
            task_outputs(session, tokenizer, task, examples, batch_size=32)
            if round_:  # the first round warms every graph up
                measured[label].append(len(examples) / (time.perf_counter() - started))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--speed-rounds", type=int, default=0, metavar="N")
    parser.add_argument(
        "--only",
        choices=("shipped", "gather", "last-layer-fp32"),
        action="append",
        help="measure only these quantizations (repeat; default: all three)",
    )
    args = parser.parse_args()
    source = resolve_store(args.store)
    manifest = load_manifest(source)
    fp32 = source / manifest.graphs["fp32"]
    # An embedding task has no labels to test on (publish holds it to PyTorch by cosine).
    labelled = [t for t in manifest.tasks if t.kind != "embedding"]
    options = {
        # What `training.graph.onnx_export.quantize_int8` ships: MatMul only.
        "shipped": ("shipped: MatMul only (embeddings fp32)", {"op_types_to_quantize": ["MatMul"]}),
        "gather": ("MatMul and the embedding Gather (shipped until 2026-12-02)", {}),
        "last-layer-fp32": (
            "each branch's last layer fp32",
            {"nodes_to_exclude": last_layer_nodes(manifest, fp32)},
        ),
    }
    chosen = [options[key] for key in options if not args.only or key in args.only]
    rows = []
    graphs = {"fp32": (manifest, "fp32")}
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in chosen:
            work = Path(tmp) / str(len(rows))
            shutil.copytree(source, work)
            target = work / GRAPH_FILES["int8"]
            quantize_dynamic(
                str(fp32),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                **extra,
            )
            if "int8" not in manifest.graphs:  # a store built without one (the 12-layer model)
                raw = json.loads((work / MANIFEST_FILE).read_text())
                raw["graphs"]["int8"] = target.name
                raw["files"][target.name] = sha256_of(target)
                (work / MANIFEST_FILE).write_text(json.dumps(raw))
            # The graph differs from the manifest's hash on purpose: read it unverified.
            results = store_outputs(
                load_manifest(work, verify=False), args.data_dir, ["fp32", "int8"]
            )
            metrics, tests = metrics_by_task(results), paired_comparisons(results)
            size = target.stat().st_size / 2**20
            rows.append(
                (
                    label,
                    f"{size:.0f} MiB",
                    *(figures(tests[t.name]["int8"]) for t in labelled),
                )
            )
            graphs[label] = (load_manifest(work, verify=False), "int8")
            print(f"  {label}: done", flush=True)
        measured = speeds(graphs, args.data_dir, args.speed_rounds) if args.speed_rounds else {}
    if measured:
        speed_rows = [
            (label, *(f"{f(items):.1f}" for f in (np.median, min, max)))
            for label, items in measured.items()
        ]
        speed_headers = ["graph", "items/s median", "min", "max"]
        print(f"{markdown_table(speed_headers, speed_rows)}\n")
    print(f"## int8 variants against fp32, paired tests per task\n\n{provenance()}\n")
    fp32_metrics = ", ".join(f"{t}: {m['fp32']:.4f} {m['metric']}" for t, m in metrics.items())
    print(f"fp32: {fp32_metrics}\n")
    headers = ["int8 variant", "file", *(f"{t.name} loss (points)" for t in labelled)]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
