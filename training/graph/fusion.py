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

MPNet graphs are fused too, in two steps: the optimizer's attention pattern is BERT's
(MPNet adds a relative position bias to the scores, which it does not take), so the
export writes each layer's `MultiHeadAttention` itself, the position bias computed once
per batch as its `attention_bias` input (`training.graph.fused_attention`); then the
optimizer's pattern fusions, attention and embeddings off, make the residual
LayerNorms `SkipLayerNormalization` and the feed-forward bias and activation
`BiasGelu`, as for BERT. MPNet's embeddings (positions counted over the real tokens,
no segments) are not the `EmbedLayerNormalization` pattern: each path starting at
depth 0 keeps its Add + `LayerNormalization`, and the complete fusion counts them.
Splicing (`training.graph.splice`) knows the optimizer's BERT graphs only (`fusable`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from training.graph.fused_attention import fused_attention
from training.graph.merged_model import MergedModel

log = logging.getLogger(__name__)

# Per transformer layer, in any path: one attention, two residual LayerNorms, one
# feed-forward activation with its bias.
LAYER_OPERATORS = {"MultiHeadAttention": 1, "SkipLayerNormalization": 2, "BiasGelu": 1}
EMBEDDING_OPERATOR = "EmbedLayerNormalization"
# MPNet's embeddings stay unfused (see the module docstring): one LayerNorm per path.
MPNET_EMBEDDING_OPERATOR = "LayerNormalization"
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
    """Whether the optimizer fuses this encoder family's graph whole, attention included
    (BERT): the graphs, and their pieces, that splicing knows."""
    return model.model_type == "bert"


def fuses(model: MergedModel) -> bool:
    """Whether a published graph of this encoder family is fused (BERT and MPNet)."""
    return model.model_type in ("bert", "mpnet")


def _paths_from_embeddings(model: MergedModel) -> int:
    """Paths that start at depth 0: the frozen path, if any task forks above 0, and
    each task that forks at 0."""
    return int(model.frozen_depth > 0) + model.fork_depths.count(0)


def expected_operators(model: MergedModel) -> dict[str, int]:
    """Fused nodes a complete fusion has: per layer of every path (the frozen layers
    once, each task's K), and per path that starts at depth 0, BERT's fused embedding
    node, or MPNet's embedding LayerNorm (left as it is)."""
    layers = len(model.frozen) + sum(len(branch.layers) for branch in model.branches.values())
    embedding = EMBEDDING_OPERATOR if fusable(model) else MPNET_EMBEDDING_OPERATOR
    return {
        **{op: count * layers for op, count in LAYER_OPERATORS.items()},
        embedding: _paths_from_embeddings(model),
    }


def attention_shape(model: MergedModel) -> tuple[int, int]:
    """(heads, hidden size) of the model's layers, as the optimizer needs them."""
    tuned = (layer for branch in model.branches.values() for layer in branch.layers)
    layer = next(iter([*model.frozen, *tuned]))
    attention = getattr(layer.attention, "self", None) or layer.attention.attn
    return attention.num_heads, attention.num_heads * attention.head_size


def operator_counts(path: Path) -> dict[str, int]:
    """Nodes per operator type in an ONNX graph."""
    return dict(Counter(node.op_type for node in onnx.load(str(path)).graph.node))


def optimize_bert(
    source: Path, target: Path, heads: int, hidden: int, attention: bool = True
) -> None:
    """Run the transformer optimizer's BERT fusions on `source` into `target` (the whole
    merged graph, or one task's piece of it: `training.graph.piece`). Without
    `attention`, only the pattern fusions that know no model type run (LayerNorm, Gelu,
    SkipLayerNormalization, BiasGelu): for a graph whose attention nodes are there."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.use_multi_head_attention = True  # see the module docstring
    if not attention:
        options.enable_attention = False
        options.enable_embed_layer_norm = False
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


def _export_fused(model: MergedModel, unfused: Path, target: Path) -> None:
    """`model`'s fused fp32 graph at `target`, through `unfused` (scratch)."""
    from training.graph.onnx_export import export_fp32, keep_all_inputs

    if fusable(model):
        export_fp32(model, unfused)
        optimize_bert(unfused, target, *attention_shape(model))
        return
    with fused_attention(model):
        export_fp32(model, unfused)
    optimize_bert(unfused, target, *attention_shape(model), attention=False)
    keep_all_inputs(target)  # the optimizer prunes token_type_ids, which MPNet ignores


def fusion_report(model: MergedModel, path: Path) -> FusionReport:
    """The fused graph at `path` against a complete fusion of `model`; a shortfall or
    an unfused leftover is logged."""
    expected = expected_operators(model)
    counts = operator_counts(path)
    report = FusionReport(True, {op: counts.get(op, 0) for op in expected}, expected)
    leftovers = {
        op: counts[op] - expected.get(op, 0)
        for op in UNFUSED_OPERATORS
        if counts.get(op, 0) > expected.get(op, 0)
    }
    if not report.complete or leftovers:
        log.warning(
            "fusion incomplete: %s (expected %s; left unfused: %s)",
            report.operators,
            expected,
            leftovers or "none",
        )
    return report


def export_graph(model: MergedModel, path: Path, fuse: bool = True) -> FusionReport:
    """The fp32 graph of `model` at `path`, fused unless `fuse` is false (or the
    encoder family is one this module does not fuse)."""
    from training.graph.onnx_export import export_fp32

    if not fuse or not fuses(model):
        export_fp32(model, path)
        note = "published unfused on request" if not fuse else f"no fusion for {model.model_type}"
        return FusionReport(False, {}, {}, note)
    unfused = path.with_name(f".unfused.{path.name}")
    try:
        _export_fused(model, unfused, path)
    finally:
        unfused.unlink(missing_ok=True)
    return fusion_report(model, path)
