"""What brings int8 closer to fp32: quantization options, per task, by the paired tests.

    python -m benchmarks.int8_variants --store models/default --data-dir ../shared/data

Quantizes the store's fp32 graph with ONNX Runtime's `quantize_dynamic` (QInt8,
per-channel weight scales) three ways: as shipped (`training.graph.onnx_export.quantize_int8`:
MatMul and the embedding Gather), MatMul only (embeddings stay fp32), and with each
branch's last layer left in fp32; runs every task's validation rows through fp32 and
each int8 graph and prints the metric, the loss and the paired test against fp32
(`training.evaluate.paired_test`). Accuracy only: the figures are deterministic; speed is
measured elsewhere, on a quiet machine.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from benchmarks.common.report import markdown_table, provenance
from model_store.manifest import load_manifest
from model_store.repository import resolve_store
from training.evaluate.paired_test import paired_comparisons
from training.evaluate.store import metrics_by_task, store_outputs


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    source = resolve_store(args.store)
    manifest = load_manifest(source)
    fp32 = source / manifest.graphs["fp32"]
    options = {
        "shipped (MatMul and Gather)": {},
        "MatMul only (embeddings fp32)": {"op_types_to_quantize": ["MatMul"]},
        "each branch's last layer fp32": {"nodes_to_exclude": last_layer_nodes(manifest, fp32)},
    }
    rows = []
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in options.items():
            work = Path(tmp) / str(len(rows))
            shutil.copytree(source, work)
            target = work / manifest.graphs["int8"]
            quantize_dynamic(
                str(fp32),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                **extra,
            )
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
                    *(figures(tests[t.name]["int8"]) for t in manifest.tasks),
                )
            )
            print(f"  {label}: done", flush=True)
    print(f"## int8 variants against fp32, paired tests per task\n\n{provenance()}\n")
    fp32_metrics = ", ".join(f"{t}: {m['fp32']:.4f} {m['metric']}" for t, m in metrics.items())
    print(f"fp32: {fp32_metrics}\n")
    headers = ["int8 variant", "file", *(f"{t.name} loss (points)" for t in manifest.tasks)]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
