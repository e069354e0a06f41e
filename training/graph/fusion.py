"""Fuse the merged BERT graph with ONNX Runtime's transformer optimizer, at publish.

ONNX Runtime fuses a few patterns itself when it loads a graph, but the transformer
kernels (one attention node per layer, `SkipLayerNormalization` for each residual Add +
LayerNorm, `BiasGelu` for the feed-forward bias and activation,
`EmbedLayerNormalization` for the three lookups, their sum and the LayerNorm) only come
from `onnxruntime.transformers.optimizer`, run offline. It runs once here, on the fp32
graph, before the int8 and fp16 variants are derived from it, so every variant is fused.

The attention is fused as `MultiHeadAttention` (scores, mask, softmax and context in one
kernel; the Q, K and V projections stay MatMuls), not as `Attention` (which packs the
projections in too). The routing gives a path no rows whenever no row of a batch asks
its tasks, and the int8 form of `Attention` (`QAttention`) dies on an empty batch
(SIGFPE, onnxruntime 1.32), taking the server with it; `MultiHeadAttention` takes empty
batches, and its projections are plain MatMuls that int8 quantizes as before.

The merged graph's routing is written to keep every pattern intact
(`training.graph.merged_model`); `expected_operators` is what a complete fusion looks like,
and publishing records the counts next to it, so a pattern that stops matching (a
change of the export, of torch, of onnxruntime) shows as a shortfall, and a test holds
the shipped shape to it.

Only BERT graphs are fused: the optimizer's model types know BERT's layers, not MPNet's
(whose attention scores add a relative position bias the Attention pattern does not
take); an MPNet store is published unfused, as before, and says so in its manifest.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from training.graph.merged_model import MergedModel

log = logging.getLogger(__name__)

# Per transformer layer, in any path: one attention, two residual LayerNorms, one
# feed-forward activation with its bias.
LAYER_OPERATORS = {"MultiHeadAttention": 1, "SkipLayerNormalization": 2, "BiasGelu": 1}
EMBEDDING_OPERATOR = "EmbedLayerNormalization"
# What must be gone from a fully fused graph.
UNFUSED_OPERATORS = ("LayerNormalization", "Softmax", "Erf")


@dataclass(frozen=True)
class FusionReport:
    """What fusing a graph produced: operator counts against the complete fusion."""

    fused: bool
    operators: dict[str, int]
    expected: dict[str, int]
    note: str = ""

    @property
    def complete(self) -> bool:
        return self.fused and all(
            self.operators.get(op, 0) == count for op, count in self.expected.items()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "fused": self.fused,
            "complete": self.complete,
            "operators": self.operators,
            "expected": self.expected,
            **({"note": self.note} if self.note else {}),
        }


def fusable(model: MergedModel) -> bool:
    """Whether the optimizer knows this encoder family's layers (BERT only)."""
    return model.model_type == "bert"


def expected_operators(model: MergedModel) -> dict[str, int]:
    """Fused nodes a complete fusion has: per layer of every path (the frozen layers
    once, each task's K), and one embedding node per path that starts at depth 0 (the
    frozen path, if any task forks above 0, and each task that forks at 0)."""
    layers = len(model.frozen) + sum(len(branch.layers) for branch in model.branches.values())
    paths_from_embeddings = int(model.frozen_depth > 0) + model.fork_depths.count(0)
    return {
        **{op: count * layers for op, count in LAYER_OPERATORS.items()},
        EMBEDDING_OPERATOR: paths_from_embeddings,
    }


def attention_shape(model: MergedModel) -> tuple[int, int]:
    """(heads, hidden size) of the model's BERT layers, as the optimizer needs them."""
    tuned = (layer for branch in model.branches.values() for layer in branch.layers)
    layer = next(iter([*model.frozen, *tuned]))
    attention = layer.attention.self
    return attention.num_heads, attention.num_heads * attention.head_size


def operator_counts(path: Path) -> dict[str, int]:
    """Nodes per operator type in an ONNX graph."""
    return dict(Counter(node.op_type for node in onnx.load(str(path)).graph.node))


def optimize_bert(source: Path, target: Path, heads: int, hidden: int) -> None:
    """Run the transformer optimizer's BERT fusions on `source` into `target` (the whole
    merged graph, or one task's piece of it: `training.graph.piece`)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.use_multi_head_attention = True  # see the module docstring
    # opt_level 0: only the Python fusions; ONNX Runtime applies its own graph
    # optimizations when it loads the graph, for the hardware it runs on.
    logging.disable(logging.WARNING)  # the optimizer logs every pattern it did not find
    try:
        fused = optimizer.optimize_model(
            str(source),
            model_type="bert",
            num_heads=heads,
            hidden_size=hidden,
            opt_level=0,
            optimization_options=options,
        )
        fused.save_model_to_file(str(target))
    finally:
        logging.disable(logging.NOTSET)
    onnx.checker.check_model(str(target))


def fuse_graph(model: MergedModel, source: Path, target: Path) -> FusionReport:
    """Write the fused graph of `source` (exported from `model`) to `target`; an
    encoder the optimizer does not know is copied unfused."""
    if not fusable(model):
        target.write_bytes(source.read_bytes())
        return FusionReport(
            False, {}, {}, "ONNX Runtime's transformer optimizer fuses BERT layers only"
        )
    optimize_bert(source, target, *attention_shape(model))
    expected = expected_operators(model)
    counts = operator_counts(target)
    report = FusionReport(True, {op: counts.get(op, 0) for op in expected}, expected)
    leftovers = {op: counts[op] for op in UNFUSED_OPERATORS if counts.get(op)}
    if not report.complete or leftovers:
        log.warning(
            "fusion incomplete: %s (expected %s; left unfused: %s)",
            report.operators,
            expected,
            leftovers or "none",
        )
    return report


def export_graph(model: MergedModel, path: Path, fuse: bool = True) -> FusionReport:
    """The fp32 graph of `model` at `path`, fused unless `fuse` is false."""
    from training.graph.onnx_export import export_fp32

    if not fuse:
        export_fp32(model, path)
        return FusionReport(False, {}, {}, "published unfused on request")
    unfused = path.with_name(f".unfused.{path.name}")
    try:
        export_fp32(model, unfused)
        return fuse_graph(model, unfused, path)
    finally:
        unfused.unlink(missing_ok=True)
