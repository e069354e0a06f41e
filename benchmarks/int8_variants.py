"""What brings int8 closer to fp32: quantization options, per task, by the paired tests.

    python -m benchmarks.int8_variants --store models/default --data-dir ../shared/data

Quantizes the store's fp32 graph with ONNX Runtime's `quantize_dynamic` (QInt8,
per-channel weight scales) several ways: as shipped (`training.graph.int8`: 7-bit
weights, every feed-forward output and the upper half's feed-forward inputs left fp32),
every MatMul
with 8-bit weights (shipped before, saturates on CPUs without VNNI) and with 7-bit
ones; with `--only`, also MatMul and the embedding Gather, or each branch's last layer
left in fp32; runs every
task's validation rows through fp32 and each int8 graph and prints the metric, the loss
and the paired test against fp32
(`training.evaluate.paired_test`). The accuracy figures are deterministic. With
`--speed-rounds N`, each graph's offline throughput is measured too: the first task's
validation rows in length-sorted batches of 32 (as the serving benchmark's ceiling),
one pass per graph per round, the graphs interleaved round by round so that they share
the machine's state; items/s is given as median, min and max over the rounds.

    python -m benchmarks.int8_variants --store models/default --data-dir ../shared/data \\
        --sweep [--reduce-range]

`--sweep` finds where int8's loss comes from: it quantizes one group of MatMuls at a
time (by kind: Q/K/V, attention output, feed-forward in, feed-forward out; by depth:
the frozen layers in thirds; each task's branch), everything else left in fp32, and runs
the same paired tests per task; fp32 is scored once. With `--reduce-range`, every
quantization uses 7-bit weights (what cannot saturate on a CPU without VNNI).
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
from training.graph.int8 import LayerDepths, quantize_int8, quantize_matmuls


def last_layer_nodes(manifest, graph: Path) -> list[str]:
    """Nodes of each branch's top layer (its name prefix: /task/layers.{K-1}/)."""
    names = [node.name for node in onnx.load(str(graph), load_external_data=False).graph.node]
    prefixes = [f"/{task.name}/layers.{task.layers - 1}/" for task in manifest.tasks]
    return [name for name in names if name.startswith(tuple(prefixes))]


MATMUL_KINDS = {
    "Q/K/V": ("/attn/q/", "/attn/k/", "/attn/v/", "/attention/self/query/",
              "/attention/self/key/", "/attention/self/value/"),
    "attention output": ("/attn/o/", "/attention/output/dense/"),
    "feed-forward in": ("/intermediate/dense/",),
    "feed-forward out": ("/output/dense/",),
}  # fmt: skip


def _matmul_kind(name: str) -> str | None:
    for kind, markers in MATMUL_KINDS.items():
        # "/attention/output/dense/" also contains "/output/dense/": test it first.
        if any(marker in name for marker in markers):
            return kind
    return None


def weight_matmuls(graph: Path) -> list[str]:
    return [
        node.name
        for node in onnx.load(str(graph), load_external_data=False).graph.node
        if node.op_type == "MatMul" and _matmul_kind(node.name)
    ]


def layer_groups(graph: Path, kind: str) -> list[tuple[str, list[str]]]:
    """(layer, its MatMuls of `kind`) for every layer instance of the graph."""
    groups: dict[str, list[str]] = {}
    for name in weight_matmuls(graph):
        if _matmul_kind(name) == kind:
            layer = name.split("/attention/")[0].split("/intermediate/")[0].split("/output/")[0]
            groups.setdefault(f"{kind}: {layer.strip('/')}", []).append(name)
    return list(groups.items())


def sweep_groups(manifest, graph: Path) -> list[tuple[str, list[str]]]:
    """(label, MatMul node names) per group: every weight MatMul, then by kind, by third
    of the frozen layers, and by task branch; each later quantized alone."""
    names = weight_matmuls(graph)
    groups = [("all weight MatMuls (as shipped)", names)]
    groups += [
        (f"{kind}, every layer", [n for n in names if _matmul_kind(n) == kind])
        for kind in MATMUL_KINDS
    ]
    frozen = manifest.frozen_layers
    thirds = [range(i * frozen // 3, (i + 1) * frozen // 3) for i in range(3)]
    for layers in thirds:
        prefixes = tuple(f"/frozen.{i}/" for i in layers)
        groups.append(
            (
                f"frozen layers {layers[0]}-{layers[-1]}",
                [n for n in names if n.startswith(prefixes)],
            )
        )
    for task in manifest.tasks:
        if task.layers:
            groups.append(
                (
                    f"{task.name}'s branch ({task.layers} layers)",
                    [n for n in names if n.startswith(f"/{task.name}/")],
                )
            )
    return [(label, members) for label, members in groups if members]


def sweep(args, source: Path, manifest, fp32: Path) -> None:
    """Each group quantized alone against fp32, paired tests per task (see the module
    docstring); prints the table and the command."""
    from dataclasses import replace

    from training.evaluate.store import TaskResult, validation_examples

    labelled = [t for t in manifest.tasks if t.kind != "embedding"]
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    examples = {
        t.name: validation_examples(t, t.validation.get("split") or {}, args.data_dir)
        for t in labelled
    }
    labels = {
        n: np.array([e.label for e in rows], dtype=np.float32) for n, rows in examples.items()
    }

    def outputs(graph_manifest, variant: str) -> dict[str, np.ndarray]:
        session = MultiTaskSession(graph_manifest, variant, providers=[CPU])
        return {t.name: task_outputs(session, tokenizer, t, examples[t.name]) for t in labelled}

    reference = outputs(manifest, "fp32")
    rows = []
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / GRAPH_FILES["int8"]
        groups = (
            layer_groups(fp32, args.by_layer) if args.by_layer else sweep_groups(manifest, fp32)
        )
        for label, members in groups:
            quantize_matmuls(
                fp32, target, reduce_range=args.reduce_range, nodes_to_quantize=members
            )
            graphs = {**manifest.graphs, "int8": target.name}
            quantized = outputs(replace(manifest, directory=Path(tmp), graphs=graphs), "int8")
            results = [
                TaskResult(
                    t, labels[t.name], {"fp32": reference[t.name], "int8": quantized[t.name]}
                )
                for t in labelled
            ]
            tests = paired_comparisons(results)
            rows.append((label, len(members), *(figures(tests[t.name]["int8"]) for t in labelled)))
            print(f"  {label}: done", flush=True)
    weights = "7-bit weights (reduce_range)" if args.reduce_range else "8-bit weights"
    print(f"## Where int8 loses accuracy: one group quantized at a time ({weights})\n")
    print(f"{provenance()}\n")
    headers = ["quantized group", "MatMuls", *(f"{t.name} loss (points)" for t in labelled)]
    print(markdown_table(headers, rows))


def feed_forward_nodes(manifest, graph: Path, outputs_from: float, inputs_from: float) -> list[str]:
    """Feed-forward output MatMuls at depth >= outputs_from x layers, and input ones at
    depth >= inputs_from x layers (a share above 1: none)."""
    model = onnx.load(str(graph), load_external_data=False)
    depths, layers = manifest_depths(manifest), manifest.num_layers
    chosen = []
    for node in model.graph.node:
        depth = depths.feed_forward_depth(node.name) if node.op_type == "MatMul" else None
        if depth is None:
            continue
        share = outputs_from if "/output/dense/" in node.name else inputs_from
        if depth >= share * layers:
            chosen.append(node.name)
    return chosen


def manifest_depths(manifest) -> LayerDepths:
    """Where the store's layers sit in its base, from its manifest."""
    return LayerDepths(manifest.num_layers, {t.name: t.fork_depth for t in manifest.tasks})


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
        choices=(
            "shipped",
            "8-bit",
            "7-bit",
            "ffn-out-fp32",
            "upper-ffn-out-fp32",
            "upper-ffn-fp32",
            "gather",
            "last-layer-fp32",
        ),
        action="append",
        help="measure only these quantizations (repeat; default: shipped, 8-bit, 7-bit)",
    )
    parser.add_argument("--sweep", action="store_true", help="one group of MatMuls at a time")
    parser.add_argument("--reduce-range", action="store_true", help="7-bit weights")
    parser.add_argument(
        "--by-layer",
        choices=list(MATMUL_KINDS),
        help="with --sweep: this kind's MatMuls quantized one layer at a time",
    )
    args = parser.parse_args()
    source = resolve_store(args.store)
    manifest = load_manifest(source)
    fp32 = source / manifest.graphs["fp32"]
    if args.sweep:
        sweep(args, source, manifest, fp32)
        return
    # An embedding task has no labels to test on (publish holds it to PyTorch by cosine).
    labelled = [t for t in manifest.tasks if t.kind != "embedding"]
    eight_bit: dict = {}
    seven_bit = {"reduce_range": True}
    options = {
        # What publishing ships: `training.graph.int8.quantize_int8`.
        "shipped": (
            "shipped: 7-bit weights, feed-forward outputs and the upper half's inputs fp32",
            None,
        ),
        "8-bit": ("8-bit weights, every MatMul (shipped until 2026-12-08)", eight_bit),
        "7-bit": ("7-bit weights, every MatMul", {**eight_bit, "reduce_range": True}),
        "ffn-out-fp32": (
            "7-bit weights, every feed-forward output fp32",
            {**seven_bit, "nodes_to_exclude": feed_forward_nodes(manifest, fp32, 0, 2)},
        ),
        "upper-ffn-out-fp32": (
            "7-bit weights, the upper half's feed-forward outputs fp32",
            {**seven_bit, "nodes_to_exclude": feed_forward_nodes(manifest, fp32, 0.5, 2)},
        ),
        "upper-ffn-fp32": (
            "7-bit weights, the upper half's feed-forward (in and out) fp32",
            {**seven_bit, "nodes_to_exclude": feed_forward_nodes(manifest, fp32, 0.5, 0.5)},
        ),
        "gather": (
            "8-bit, MatMul and the embedding Gather (shipped until 2026-12-02)",
            {"op_types_to_quantize": None},  # ONNX Runtime's default list
        ),
        "last-layer-fp32": (
            "8-bit, each branch's last layer fp32",
            {**eight_bit, "nodes_to_exclude": last_layer_nodes(manifest, fp32)},
        ),
    }
    default = ("shipped", "8-bit", "7-bit")
    chosen = [options[key] for key in options if key in (args.only or default)]
    rows = []
    graphs = {"fp32": (manifest, "fp32")}
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in chosen:
            work = Path(tmp) / str(len(rows))
            shutil.copytree(source, work)
            target = work / GRAPH_FILES["int8"]
            if extra is None:
                quantize_int8(fp32, target, manifest_depths(manifest))
            else:
                quantize_matmuls(fp32, target, **extra)
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
