"""The fused merged graph: every layer of every path fused, numbers unchanged.

Branches here are the base's own layers under fresh random heads, at two fork shapes:
the first shipped model's (one task forking at 0, two at 2) and three distinct forks above 0,
on the 6-layer BERT base and on a tiny random 6-layer MPNet (whose attention the export
fuses itself, the relative position bias going in as the node's attention bias).
Their quality does not matter; the fused graph must compute what PyTorch computes, for
batches that use every path and for batches that leave paths without rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from model_store.runtime import task_mask
from model_store.tokenizer import PairTokenizer
from tests.support.samples import pair_rows, sentiment_rows
from tests.support.tiny_mpnet import tiny_mpnet_dir
from training.encoders.base_model import load_base_model
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel
from training.graph.fusion import (
    UNFUSED_OPERATORS,
    expected_operators,
    export_graph,
    fusable,
    fuses,
    operator_counts,
)
from training.graph.int8 import LayerDepths, quantize_int8
from training.graph.merged_model import MergedModel
from training.graph.onnx_export import convert_fp16

# Stated tolerances against PyTorch: fp32 (the issue's), fp16 (as at publish).
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 5e-2
SHAPES = {
    "one at 0, two at 2": {"sentiment": 6, "paraphrase": 4, "similarity": 4},
    "three forks": {"sentiment": 1, "paraphrase": 2, "similarity": 3},
}


def merged_model(base, depths: dict[str, int]) -> MergedModel:
    models = []
    for seed, (task, layers) in enumerate(depths.items()):
        torch.manual_seed(seed)
        models.append(TaskModel(base.encoder, preset_spec(task), layers, "cls"))
    return MergedModel(base.encoder, models)


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory):
    directory = tiny_mpnet_dir(tmp_path_factory.mktemp("mpnet") / "tiny-mpnet", layers=6)
    return load_base_model(directory), PairTokenizer.from_dir(directory, max_seq_len=32)


@pytest.fixture(scope="module", params=["bert", "mpnet"])
def family(request):
    """(base, tokenizer) of one encoder family, both 6 layers."""
    if request.param == "bert":
        return request.getfixturevalue("base"), request.getfixturevalue("tokenizer")
    return request.getfixturevalue("tiny_mpnet")


@pytest.fixture(scope="module", params=list(SHAPES))
def fused(request, family, tmp_path_factory) -> tuple[MergedModel, Path, object, PairTokenizer]:
    base, tokenizer = family
    merged = merged_model(base, SHAPES[request.param])
    path = tmp_path_factory.mktemp("fused") / "model.onnx"
    report = export_graph(merged, path)
    return merged, path, report, tokenizer


def batch(tokenizer, task_sets: list[list[int]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One row per task set: a sentence for a set of sentiment only, else a pair."""
    rows = []
    for index, tasks in enumerate(task_sets):
        if tasks == [0]:
            rows += tokenizer.encode([sentiment_rows(index + 1, seed=3)[-1][0]])
        else:
            a, b, _ = pair_rows(index + 1, seed=4)[-1]
            rows += tokenizer.encode([a], [b])
    padded = tokenizer.pad(rows)
    feeds = {
        "input_ids": padded.input_ids,
        "attention_mask": padded.attention_mask,
        "token_type_ids": padded.token_type_ids,
        "task_mask": task_mask(task_sets, 3),
    }
    return feeds, feeds["task_mask"]


def pytorch(merged: MergedModel, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        outputs = merged(*(torch.from_numpy(feeds[name]) for name in feeds))
    return [out.numpy() for out in outputs]


# Every path used; each task alone (the others' paths, and for pairs the depth-0 path,
# get no rows); two tasks of a row sharing the frozen layers.
TASK_SETS = {
    "mixed": [[0], [1], [2], [1, 2], [0], [2]],
    "sentiment only": [[0], [0]],
    "paraphrase only": [[1], [1], [1]],
    "similarity only": [[2]],
    "pairs, both pair tasks": [[1, 2], [1, 2]],
}


def test_every_layer_of_every_path_is_fused(fused) -> None:
    merged, path, report, _ = fused
    assert report.fused and report.complete, report.to_json()
    counts = operator_counts(path)
    expected = expected_operators(merged)
    layers = len(merged.frozen) + sum(len(b.layers) for b in merged.branches.values())
    assert expected["MultiHeadAttention"] == layers
    assert expected["SkipLayerNormalization"] == 2 * layers
    assert expected["BiasGelu"] == layers
    # BERT's embeddings fuse; MPNet's keep their LayerNorm, one per path from depth 0
    embedding = "EmbedLayerNormalization" if merged.model_type == "bert" else "LayerNormalization"
    assert expected[embedding] == int(merged.frozen_depth > 0) + merged.fork_depths.count(0)
    assert {op: counts.get(op, 0) for op in expected} == expected
    assert not {
        op: counts[op] for op in UNFUSED_OPERATORS if counts.get(op, 0) > expected.get(op, 0)
    }


def test_mpnet_attention_takes_the_one_position_bias_and_keeps_its_projections(
    fused,
) -> None:
    """Every MultiHeadAttention node reads the same attention bias (input 5), computed
    once per batch; its Q, K, V projections are MatMuls named as in the unfused export
    (what int8 quantizes, and what a choice of MatMuls by name finds)."""
    merged, path, _, _ = fused
    if merged.model_type != "mpnet":
        pytest.skip("BERT's attention has no position bias")
    graph = onnx.load(str(path)).graph
    attention = [node for node in graph.node if node.op_type == "MultiHeadAttention"]
    assert len({node.input[5] for node in attention}) == 1
    producer = {out: node for node in graph.node for out in node.output}
    for node in attention:
        scope = node.name.rsplit("/", 1)[0]
        projections = [producer[name] for name in node.input[:3]]
        assert [(p.op_type, p.name) for p in projections] == [
            ("MatMul", f"{scope}/{part}/MatMul") for part in "qkv"
        ]
        assert producer[node.input[4]].op_type == "Cast"  # the path's (B, T) mask, int32
    assert sum(node.op_type == "Log" for node in graph.node) == 1  # the buckets, once


@pytest.mark.parametrize("rows", list(TASK_SETS))
def test_fused_fp32_matches_pytorch(fused, rows: str) -> None:
    merged, path, _, tokenizer = fused
    feeds, _ = batch(tokenizer, TASK_SETS[rows])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for expected, actual in zip(pytorch(merged, feeds), session.run(None, feeds), strict=True):
        assert actual.shape == expected.shape
        if expected.size:
            assert np.abs(actual - expected).max() <= FP32_TOLERANCE


def test_int8_and_fp16_of_the_fused_graph_answer_batches_with_empty_paths(
    fused, tmp_path: Path
) -> None:
    """The int8 variant must not die on a path without rows (ONNX Runtime's QAttention
    does: the reason the attention is fused as MultiHeadAttention)."""
    merged, path, _, tokenizer = fused
    forks = dict(zip(merged.task_names, merged.fork_depths, strict=True))
    quantize_int8(path, tmp_path / "int8.onnx", LayerDepths(merged.num_layers, forks))
    convert_fp16(path, tmp_path / "fp16.onnx")
    for variant in ("int8", "fp16"):
        session = ort.InferenceSession(
            str(tmp_path / f"{variant}.onnx"), providers=["CPUExecutionProvider"]
        )
        for task_sets in TASK_SETS.values():
            feeds, _ = batch(tokenizer, task_sets)
            outputs = session.run(None, feeds)
            for expected, actual in zip(pytorch(merged, feeds), outputs, strict=True):
                assert actual.shape == expected.shape and np.isfinite(actual).all()
                if variant == "fp16" and expected.size:
                    assert np.abs(actual - expected).max() <= FP16_TOLERANCE


def test_bert_and_mpnet_are_fused_and_only_bert_by_the_optimizer(base) -> None:
    """(tests/training/test_mpnet.py checks that an MPNet store publishes fused.) Splicing
    knows the optimizer's BERT graphs only."""
    merged = merged_model(base, SHAPES["one at 0, two at 2"])
    assert fusable(merged) and fuses(merged)
    merged.model_type = "mpnet"
    assert not fusable(merged) and fuses(merged)
    merged.model_type = "roberta"
    assert not fuses(merged)
