"""A quantized graph is served only while it answers on this CPU as it did at publish.

int8 arithmetic differs between CPUs: without VNNI, ONNX Runtime's u8 x s8 kernel sums
pairs of products in 16 bits and saturates, and 8-bit weights then move the answers
(on a 12-layer model, by tens of accuracy points). A publish measures each quantized
variant's probe drift per task on its own CPU; every load holds the graph to a bound
derived from it. These tests serve, on whatever CPU runs them, the graph a saturating
CPU computes (`tests.support.saturation`, checked against the real kernel), and expect:
`--graph auto` falls back to fp32 saying why, an explicit `--graph int8` is refused in
one line saying quantization moved the answers, and a store whose wiring is wrong is
still blamed on its wiring.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from model_store import probes
from model_store.graph_choice import DEFAULT_TOLERANCE_POINTS, SERVED_KEY
from model_store.manifest import StoreError, load_manifest, sha256_of
from model_store.runtime import CPU, MultiTaskSession
from model_store.tokenizer import PairTokenizer
from service.engine import Engine, EngineConfig
from tests.support.commands import assert_one_line_error, run
from tests.support.manifests import rewrite_manifest
from tests.support.saturation import emulate_saturation

INT8_GRAPH = "model.int8.onnx"


def _fp32_and_int8(directory: Path) -> None:
    from tests.support.tiny_store import build_tiny_store

    build_tiny_store(directory, variants=("fp32", "int8"))


@pytest.fixture(scope="module")
def store(stores) -> Path:
    return stores.get("tiny-int8", _fp32_and_int8) / "store"


def _reseal_graph(store: Path) -> None:
    graph = store / INT8_GRAPH
    rewrite_manifest(store, lambda raw: raw["files"].__setitem__(INT8_GRAPH, sha256_of(graph)))


def _drift(store: Path) -> dict[str, float]:
    manifest = load_manifest(store)
    tokenizer = PairTokenizer.from_file(manifest.tokenizer_path, manifest.max_seq_len)
    session = MultiTaskSession(manifest, "int8", [CPU])
    return {t: d for t, (d, _) in probes.differences(manifest, tokenizer, session.run).items()}


@pytest.fixture
def saturating(store: Path, tmp_path: Path) -> Path:
    """The store as published on a VNNI CPU with 8-bit weights (its drift measured and
    recorded there), served where pair sums saturate; `--graph auto` would pick int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    copy = Path(shutil.copytree(store, tmp_path / "store"))
    eight_bit = tmp_path / "eight_bit.onnx"
    quantize_dynamic(
        str(copy / "model.onnx"),
        str(eight_bit),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused operators
    )
    shutil.copy(eight_bit, copy / INT8_GRAPH)
    _reseal_graph(copy)
    measured = _drift(copy)

    def record(raw: dict) -> None:
        raw["probes"][probes.MEASURED_KEY] = {"int8": measured}
        raw[SERVED_KEY] = {
            "cpu": {
                "variant": "int8",
                "reason": "int8 within tolerance (test)",
                "tolerance_points": DEFAULT_TOLERANCE_POINTS,
            }
        }

    rewrite_manifest(copy, record)
    assert emulate_saturation(eight_bit, copy / INT8_GRAPH) > 0
    _reseal_graph(copy)
    return copy


def test_the_emulation_computes_as_the_kernel_when_nothing_saturates(store, tmp_path) -> None:
    """Without clipping, the rewritten graph answers the probes as ONNX Runtime's own
    MatMulInteger does: the emulation adds the saturation and nothing else."""
    copy = Path(shutil.copytree(store, tmp_path / "store"))
    emulate_saturation(store / INT8_GRAPH, copy / INT8_GRAPH, limit=1e9)
    _reseal_graph(copy)
    exact, emulated = _drift(store), _drift(copy)
    assert emulated == pytest.approx(exact, abs=1e-5)


def test_publish_records_each_quantized_variants_drift_per_task(store: Path) -> None:
    manifest = load_manifest(store)
    measured = probes.measured_drift(manifest, "int8")
    assert set(measured) == {task.name for task in manifest.tasks}
    assert min(measured.values()) >= 0
    worst = float(manifest.extra["probes"]["drift"]["int8"])  # the worst, to 3 digits
    assert max(measured.values()) == pytest.approx(worst, rel=0.01)
    assert probes.measured_drift(manifest, "fp32") == {}


def test_saturated_answers_exceed_the_measured_bound(saturating: Path) -> None:
    manifest = load_manifest(saturating)
    measured = probes.measured_drift(manifest, "int8")
    moved = _drift(saturating)
    recorded = manifest.extra["probes"]["tasks"]
    over = [
        task
        for task, value in moved.items()
        if value
        > probes.tolerance_for("int8", np.asarray(recorded[task]["outputs"]), measured[task])
    ]
    assert over, f"saturation moved the answers by {moved}, within bounds from {measured}"


def test_auto_falls_back_to_fp32_and_says_why(saturating: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="service.engine"):
        engine = Engine.load_store(saturating, EngineConfig(graph="auto", provider="cpu"))
    assert engine.variant == "fp32"
    assert "int8 refused on this CPU: quantization moved task" in engine.graph_reason
    assert "serving fp32" in engine.graph_reason
    assert any("quantization moved" in record.getMessage() for record in caplog.records)


def test_an_explicit_int8_is_refused_in_one_line(saturating: Path) -> None:
    with pytest.raises(StoreError, match=r"quantization moved task \w+'s probe answers by"):
        Engine.load_store(saturating, EngineConfig(graph="int8", provider="cpu"))
    result = run(
        "-m", "service", "--model-dir", str(saturating), "--graph", "int8",
        "--provider", "cpu", "--port", "1",
    )  # fmt: skip
    assert_one_line_error(result, "the fp32 graph reproduces them")


def test_wrong_wiring_is_blamed_on_the_wiring_not_quantization(store, tmp_path) -> None:
    """Permuted task ids miss with every variant: the int8 miss must not read as
    quantization, since fp32 misses too."""
    copy = Path(shutil.copytree(store, tmp_path / "store"))

    def swap(raw: dict) -> None:
        tasks = raw["tasks"]
        tasks[0]["task_id"], tasks[1]["task_id"] = 1, 0
        tasks[0], tasks[1] = tasks[1], tasks[0]

    rewrite_manifest(copy, swap)
    with pytest.raises(StoreError, match="task ids, heads or pooling do not match") as caught:
        Engine.load_store(copy, EngineConfig(graph="int8", provider="cpu"))
    assert "quantization" not in str(caught.value)
