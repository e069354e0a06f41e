"""The int8 graph: which MatMuls are quantized, and how, so that it keeps its accuracy on
every CPU that may serve it.

ONNX Runtime's dynamic quantization (int8 weights, activations quantized on the fly per
tensor, uint8). Two decisions, each measured (docs/results.md, "int8 for the 12-layer
default model"; `python -m benchmarks.int8_variants --sweep`):

* **7-bit weights (`reduce_range`).** On a CPU without VNNI (AVX2, AVX-512 without
  VNNI), the u8 x s8 kernel adds each pair of products into 16 bits with saturation;
  with 8-bit weights a pair can reach 2 x 255 x 127 and clip, which cost the 12-layer
  model 40-86 points on such a CPU, while the same graph lost about 1-13 on a VNNI CPU.
  With weights in [-64, 64] a pair stays within 2 x 255 x 64 < 32768: no CPU clips, so
  the graph computes the same on every CPU and the paired tests measured at publish
  hold where it is served (the load-time probe check, `model_store.probes`, still
  guards the rest). `tests/support/saturation.py` computes a graph as a saturating CPU
  does, and a test holds this one to answer identically.
* **Every feed-forward output MatMul stays fp32, and the feed-forward input ones of
  the upper half of the encoder too.** Quantizing one group at a time on the 12-layer
  model put almost all of int8's loss in the feed-forward output (alone: 12.1 points of
  paraphrase and 2.5 of similarity; the second feed-forward MatMul reads the GELU's
  output, whose few large activations leave the rest of a per-tensor uint8 scale with
  little resolution), most of it at depth 6-8 of 12, frozen or branch alike. Keeping
  only the upper half's outputs fp32 left the 12-layer model's similarity significantly
  worse (0.45 points); the upper half's whole feed-forward fp32 passed there but lost
  the 6-layer model 1.76 points of sentiment (p = 0.017: its lower layers' outputs
  matter); every output plus the upper half's inputs kept the 6-layer model within the
  noise on every task (docs/results.md). The attention's MatMuls are int8 at every
  depth. The rule is by depth in the base (a branch layer's depth is its fork plus its
  index), so it applies to any store and to a spliced piece.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx

# Feed-forward input MatMuls at depth >= this share of the base's layers stay fp32 (the
# feed-forward outputs stay fp32 at every depth).
FP32_FEED_FORWARD_IN_FROM = 0.5

# A layer's feed-forward MatMuls, as torch exports them: /frozen.{i}/intermediate/dense/
# and /frozen.{i}/output/dense/ for the shared layers, /{scope}/layers.{j}/... for a
# branch (scope: the task in a full graph, "branch" in a spliced piece). A BERT attention
# output is /attention/output/dense/ and never matches.
_FEED_FORWARD = re.compile(
    r"^/(?:frozen\.(?P<frozen>\d+)|(?P<scope>[^/]+)/layers\.(?P<layer>\d+))"
    r"/(?:intermediate|output)/dense/MatMul"
)


@dataclass(frozen=True)
class LayerDepths:
    """Where a graph's layers sit in the base: frozen layers by their index, a branch's
    layers from its fork (`forks`: branch scope in node names -> fork depth)."""

    num_layers: int
    forks: Mapping[str, int]

    def feed_forward_depth(self, node_name: str) -> int | None:
        """The depth of the layer whose feed-forward MatMul `node_name` is, or None."""
        match = _FEED_FORWARD.match(node_name)
        if match is None:
            return None
        if match["frozen"] is not None:
            return int(match["frozen"])
        fork = self.forks.get(match["scope"])
        return None if fork is None else fork + int(match["layer"])


def fp32_matmuls(graph: onnx.ModelProto, depths: LayerDepths) -> list[str]:
    """The MatMuls int8 leaves in fp32 (see the module docstring)."""
    threshold = FP32_FEED_FORWARD_IN_FROM * depths.num_layers
    kept = []
    for node in graph.graph.node:
        if node.op_type != "MatMul":
            continue
        depth = depths.feed_forward_depth(node.name)
        if depth is not None and ("/output/dense/" in node.name or depth >= threshold):
            kept.append(node.name)
    return kept


def quantize_int8(source: Path, target: Path, depths: LayerDepths) -> None:
    """`source`'s fp32 graph quantized as the module docstring says, written to `target`."""
    excluded = fp32_matmuls(onnx.load(str(source), load_external_data=False), depths)
    quantize_matmuls(source, target, reduce_range=True, nodes_to_exclude=excluded)


def quantize_matmuls(source: Path, target: Path, **options: object) -> None:
    """ONNX Runtime's dynamic quantization of `source`'s MatMuls (per-channel int8
    weights; `options` go to `quantize_dynamic`), checked and written to `target`. The
    benchmarks call it with other options to compare rules."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # A fused graph's contrib operators have no ONNX shape inference; their outputs are
    # float, which is what DefaultTensorType tells the quantizer.
    logging.disable(logging.WARNING)
    try:
        # MatMul only by default: the embedding tables stay fp32. Quantizing their
        # Gather too cost the 6-layer model 1.05 points of sentiment and bought no
        # speed (docs/results.md).
        quantize_dynamic(
            str(source),
            str(target),
            **{
                "weight_type": QuantType.QInt8,
                "per_channel": True,
                "op_types_to_quantize": ["MatMul"],
                "extra_options": {"DefaultTensorType": onnx.TensorProto.FLOAT},
                **options,
            },
        )
    finally:
        logging.disable(logging.NOTSET)
    onnx.checker.check_model(str(target))
