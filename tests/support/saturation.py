"""Rewrite an int8 graph so it computes as a CPU without VNNI computes it.

On AVX2 (and AVX-512 without VNNI) ONNX Runtime multiplies uint8 activations by int8
weights with VPMADDUBSW, which adds each adjacent pair of products into a 16-bit
integer with signed saturation before widening: a pair whose sum leaves [-32768, 32767]
is clipped. A CPU with VNNI sums in 32 bits and never clips. This module replaces each
`MatMulInteger` by that arithmetic written in standard operators (exact in float: the
pair sums and the 16-bit-clipped totals of a small model fit in float32's 24-bit
mantissa), so a test running on any CPU can serve what a saturating CPU would serve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

INT16_MAX = 32767.0


def _constant(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _saturating_matmul(
    graph: onnx.GraphProto, node: onnx.NodeProto, weights: np.ndarray, index: int, limit: float
) -> list[onnx.NodeProto]:
    """Nodes computing `node` (A uint8 [..., K] x W int8 [K, N], zero points) with each
    adjacent pair of raw products summed and clipped to int16, as VPMADDUBSW does; the
    activation zero point is taken off afterwards, as the kernel does (the weights are
    symmetric: their zero point must be 0)."""
    a, _, a_zero = node.input[0], node.input[1], node.input[2]
    w_zero = node.input[3] if len(node.input) > 3 else ""
    if w_zero:
        zero = numpy_helper.to_array(next(i for i in graph.initializer if i.name == w_zero))
        if np.any(zero != 0):
            raise ValueError(f"{node.name}: asymmetric weights are not emulated")
    k, n = weights.shape
    if k % 2:
        raise ValueError(f"{node.name}: an odd inner dimension is not emulated")
    p = f"saturate{index}"
    pairs = _constant(graph, f"{p}_w", weights.astype(np.float32).reshape(k // 2, 2, n))
    column_sums = _constant(graph, f"{p}_colsum", weights.astype(np.float32).sum(axis=0))
    tail = _constant(graph, f"{p}_tail", np.array([k // 2, 2, 1], dtype=np.int64))
    start = _constant(graph, f"{p}_start", np.array([0], dtype=np.int64))
    lead_end = _constant(graph, f"{p}_lead_end", np.array([-1], dtype=np.int64))
    low = _constant(graph, f"{p}_low", np.array(-limit - 1, dtype=np.float32))
    high = _constant(graph, f"{p}_high", np.array(limit, dtype=np.float32))
    axis = _constant(graph, f"{p}_axis", np.array([-2], dtype=np.int64))
    as_float = onnx.TensorProto.FLOAT
    return [
        helper.make_node("Cast", [a], [f"{p}_af"], to=as_float),
        helper.make_node("Shape", [a], [f"{p}_shape"]),
        helper.make_node("Slice", [f"{p}_shape", start, lead_end], [f"{p}_lead"]),
        helper.make_node("Concat", [f"{p}_lead", tail], [f"{p}_pair_shape"], axis=0),
        helper.make_node("Reshape", [f"{p}_af", f"{p}_pair_shape"], [f"{p}_a5"]),
        # [..., K/2, 2, 1] x [K/2, 2, N]: every raw product, then each pair's sum.
        helper.make_node("Mul", [f"{p}_a5", pairs], [f"{p}_products"]),
        helper.make_node("ReduceSum", [f"{p}_products", axis], [f"{p}_pair_sums"], keepdims=0),
        helper.make_node("Clip", [f"{p}_pair_sums", low, high], [f"{p}_clipped"]),
        helper.make_node("ReduceSum", [f"{p}_clipped", axis], [f"{p}_raw"], keepdims=0),
        helper.make_node("Cast", [a_zero], [f"{p}_azf"], to=as_float),
        helper.make_node("Mul", [f"{p}_azf", column_sums], [f"{p}_offset"]),
        helper.make_node("Sub", [f"{p}_raw", f"{p}_offset"], [f"{p}_yf"]),
        helper.make_node("Cast", [f"{p}_yf"], [node.output[0]], to=onnx.TensorProto.INT32),
    ]


def emulate_saturation(source: Path, target: Path, limit: float = INT16_MAX) -> int:
    """Write `source`'s int8 graph to `target` with every MatMulInteger computed as a
    saturating (non-VNNI) CPU computes it, pair sums clipped to [-limit - 1, limit] (a
    huge `limit` computes as VNNI does: the emulation's own check); the number of nodes
    replaced."""
    model = onnx.load(str(source))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    replaced = 0
    for node in graph.node:
        weights = initializers.get(node.input[1]) if node.op_type == "MatMulInteger" else None
        if weights is None:
            nodes.append(node)
            continue
        array = numpy_helper.to_array(weights)
        if array.dtype != np.int8 or array.ndim != 2:
            nodes.append(node)
            continue
        nodes.extend(_saturating_matmul(graph, node, array, replaced, limit))
        replaced += 1
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))
    return replaced
