"""The int8 graph's method (`training.graph.int8`): which MatMuls stay fp32, and that no
CPU computes it otherwise (its weights are small enough that a CPU without VNNI, whose
u8 x s8 kernel clips pair sums to 16 bits, answers exactly as one with VNNI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from model_store.manifest import load_manifest
from model_store.runtime import CPU, MultiTaskSession, task_mask
from model_store.tokenizer import PairTokenizer
from tests.support.saturation import emulate_saturation
from training.graph.int8 import LayerDepths, fp32_matmuls


def _fp32_and_int8(directory: Path) -> None:
    from tests.support.tiny_store import build_tiny_store

    build_tiny_store(directory, variants=("fp32", "int8"))


@pytest.fixture(scope="module")
def store(stores) -> Path:
    return stores.get("tiny-int8", _fp32_and_int8) / "store"


def test_depths_follow_the_base_frozen_layers_and_each_branch_from_its_fork() -> None:
    depths = LayerDepths(12, {"sentiment": 9, "branch": 8})
    assert depths.feed_forward_depth("/frozen.7/output/dense/MatMul") == 7
    assert depths.feed_forward_depth("/frozen.7/intermediate/dense/MatMul") == 7
    assert depths.feed_forward_depth("/sentiment/layers.2/output/dense/MatMul") == 11
    assert depths.feed_forward_depth("/branch/layers.0/intermediate/dense/MatMul") == 8
    # BERT's attention output, the attention's MatMuls, unknown scopes: not matched.
    assert depths.feed_forward_depth("/frozen.7/attention/output/dense/MatMul") is None
    assert depths.feed_forward_depth("/frozen.7/attn/q/MatMul") is None
    assert depths.feed_forward_depth("/other/layers.0/output/dense/MatMul") is None


def test_the_upper_halfs_feed_forward_stays_fp32(store: Path) -> None:
    manifest = load_manifest(store)
    int8 = onnx.load(str(manifest.graph_path("int8")))
    float_matmuls = sorted(n.name for n in int8.graph.node if n.op_type == "MatMul")
    fp32 = onnx.load(str(manifest.graph_path("fp32")))
    depths = LayerDepths(manifest.num_layers, {t.name: t.fork_depth for t in manifest.tasks})
    expected = sorted(fp32_matmuls(fp32, depths))
    # Every feed-forward output, and the inputs of depth 1 (every branch's layer: the
    # tiny base has 2 layers) stay fp32; depth 0's feed-forward input is int8.
    assert expected and all("/attention/" not in name for name in expected)
    assert "/frozen.0/output/dense/MatMul" in expected
    assert "/frozen.0/intermediate/dense/MatMul" not in expected
    assert float_matmuls == expected
    assert sum(n.op_type == "MatMulInteger" for n in int8.graph.node) > len(expected)


def _answers(manifest, tokenizer: PairTokenizer) -> dict[str, np.ndarray]:
    texts = ["a gentle , funny and moving film", "dull", "the worst two hours " * 20]
    rows = tokenizer.encode(texts * 3)
    asks = [[task] for task in range(3) for _ in texts]
    session = MultiTaskSession(manifest, "int8", [CPU])
    return session.run(tokenizer.pad(rows), task_mask(asks, len(manifest.tasks)))


def test_a_cpu_without_vnni_computes_the_same_answers(store: Path, tmp_path: Path) -> None:
    """Every quantized MatMul, computed with AVX2's saturating pair sums, answers as
    ONNX Runtime's kernel here: the graph's weights never let a pair clip."""
    import shutil

    manifest = load_manifest(store)
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    copy = Path(shutil.copytree(store, tmp_path / "store"))
    assert emulate_saturation(store / manifest.graphs["int8"], copy / manifest.graphs["int8"]) > 0
    here = _answers(manifest, tokenizer)
    saturating = _answers(load_manifest(copy, verify=False), tokenizer)
    for name, values in here.items():
        assert np.abs(saturating[name] - values).max() <= 1e-5, name
