"""The fused merged graph: every layer of every path fused, numbers unchanged.

Branches here are the base's own layers under fresh random heads, at two fork shapes:
the first shipped model's (one task forking at 0, two at 2) and three distinct forks above 0.
Their quality does not matter; the fused graph must compute what PyTorch computes, for
batches that use every path and for batches that leave paths without rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model_store.runtime import task_mask
from tests.support.samples import pair_rows, sentiment_rows
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel
from training.graph.fusion import (
    UNFUSED_OPERATORS,
    expected_operators,
    export_graph,
    fusable,
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


@pytest.fixture(scope="module", params=list(SHAPES))
def fused(request, base, tmp_path_factory) -> tuple[MergedModel, Path, object]:
    merged = merged_model(base, SHAPES[request.param])
    path = tmp_path_factory.mktemp("fused") / "model.onnx"
    report = export_graph(merged, path)
    return merged, path, report


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
    merged, path, report = fused
    assert report.fused and report.complete, report.to_json()
    counts = operator_counts(path)
    expected = expected_operators(merged)
    layers = len(merged.frozen) + sum(len(b.layers) for b in merged.branches.values())
    assert expected["MultiHeadAttention"] == layers
    assert expected["SkipLayerNormalization"] == 2 * layers
    assert expected["BiasGelu"] == layers
    assert expected["EmbedLayerNormalization"] == int(merged.frozen_depth > 0) + (
        merged.fork_depths.count(0)
    )
    assert {op: counts.get(op, 0) for op in expected} == expected
    assert not {op: counts[op] for op in UNFUSED_OPERATORS if op in counts}


@pytest.mark.parametrize("rows", list(TASK_SETS))
def test_fused_fp32_matches_pytorch(fused, tokenizer, rows: str) -> None:
    merged, path, _ = fused
    feeds, _ = batch(tokenizer, TASK_SETS[rows])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for expected, actual in zip(pytorch(merged, feeds), session.run(None, feeds), strict=True):
        assert actual.shape == expected.shape
        if expected.size:
            assert np.abs(actual - expected).max() <= FP32_TOLERANCE


def test_int8_and_fp16_of_the_fused_graph_answer_batches_with_empty_paths(
    fused, tokenizer, tmp_path: Path
) -> None:
    """The int8 variant must not die on a path without rows (ONNX Runtime's QAttention
    does: the reason the attention is fused as MultiHeadAttention)."""
    merged, path, _ = fused
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


def test_only_bert_is_fused(base) -> None:
    """(tests/training/test_mpnet.py checks that an MPNet store publishes, unfused.)"""
    merged = merged_model(base, SHAPES["one at 0, two at 2"])
    assert fusable(merged)
    merged.model_type = "mpnet"
    assert not fusable(merged)
