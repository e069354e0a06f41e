"""Merging branches into one tree-shaped graph: parity with the single-task models,
routing of single- and multi-task rows, the ONNX export and its variants, the store
format, and task independence (also when a new branch forks below every other).

Branches are trained here in a few steps on template sentences: their quality does not
matter, only that every transformation preserves what they compute.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from model_store.atomic import ArtifactExistsError
from model_store.manifest import MANIFEST_FILE, StoreError, load_manifest
from model_store.runtime import CPU, MultiTaskSession, task_mask
from model_store.tokenizer import PairTokenizer
from tests.support.commands import assert_one_line_error, run
from tests.support.manifests import rewrite_manifest
from tests.support.samples import pair_rows, sentiment_rows
from training.data.examples import Example
from training.fit.branch import BRANCH_META, read_branch_info, save_branch
from training.fit.objectives import preset_spec
from training.fit.trainer import TrainConfig, train_branch
from training.graph import merge
from training.graph.merge import (
    LoadedBranch,
    MergeError,
    check_compatible,
    load_branches,
    publish_store,
    read_branches,
)
from training.graph.merged_model import MergedModel

# Stated tolerances: merged PyTorch vs single-task PyTorch, and ONNX fp32 vs PyTorch.
MERGE_TOLERANCE = 1e-5
ONNX_TOLERANCE = 1e-4
# Three different depths: on the 6-layer base the tasks fork at layers 5, 4 and 3.
DEPTHS = {"sentiment": 1, "paraphrase": 2, "similarity": 3}


def one_task_each(task_ids: np.ndarray, tasks: int = 3) -> np.ndarray:
    return task_mask([[int(t)] for t in task_ids], tasks)


def examples_for(task: str, count: int, seed: int) -> list[Example]:
    if task == "sentiment":
        return [
            Example(t, None, float(y), i) for i, (t, y) in enumerate(sentiment_rows(count, seed))
        ]
    rows = pair_rows(count, seed)
    scale = 1 / 5 if task == "paraphrase" else 1
    return [Example(a, b, s * scale, i) for i, (a, b, s) in enumerate(rows)]


def train_and_save(
    base, tokenizer, task: str, out: Path, seed: int = 0, layers: int | None = None
) -> Path:
    config = TrainConfig(layers=layers or DEPTHS[task], epochs=1, batch_size=16, seed=seed, lr=1e-3)
    train, val = examples_for(task, 32, seed), examples_for(task, 8, seed + 100)
    result = train_branch(
        base.encoder, tokenizer, preset_spec(task), train, val, config, progress=False
    )
    return save_branch(result.model, base, tokenizer, out, {"metric": "x", "value": 0.0}, {})


@pytest.fixture(scope="module")
def branch_dirs(base, tokenizer, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("branches")
    return {task: train_and_save(base, tokenizer, task, out) for task in DEPTHS}


@pytest.fixture(scope="module")
def branches(base, branch_dirs) -> list[LoadedBranch]:
    return load_branches(read_branches(list(branch_dirs.values())), base)


@pytest.fixture(scope="module")
def store(base, branches, tmp_path_factory):
    out = tmp_path_factory.mktemp("stores") / "three"
    return publish_store(base, branches, out, variants=("fp32", "int8", "fp16"))


def mixed_rows(tokenizer: PairTokenizer, order: list[int]):
    """Unpadded rows of the tasks in `order` (task ids 0, 1, 2), each its own sentence."""
    rows = []
    for position, task_id in enumerate(order):
        if task_id == 0:
            rows += tokenizer.encode([sentiment_rows(position + 1, seed=5)[-1][0]])
        else:
            a, b, _ = pair_rows(position + 1, seed=6)[-1]
            rows += tokenizer.encode([a], [b])
    return rows, np.array(order, dtype=np.int64)


def mixed_batch(tokenizer: PairTokenizer, order: list[int]):
    rows, task_ids = mixed_rows(tokenizer, order)
    return tokenizer.pad(rows), task_ids


def as_torch(batch):
    return [
        torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids)
    ]


def test_each_frozen_layer_appears_once_and_each_task_forks_at_its_depth(base, branches) -> None:
    merged = MergedModel(base.encoder, [b.model for b in branches])
    layers = base.encoder.num_layers
    assert merged.fork_depths == tuple(layers - k for k in DEPTHS.values())
    assert merged.trunk_depth == layers - max(DEPTHS.values())  # shared by every task
    # the frozen layers up to the deepest fork, once; each branch only its K tuned layers
    assert len(merged.frozen) == layers - min(DEPTHS.values())
    assert [len(merged.branches[t].layers) for t in merged.task_names] == [1, 2, 3]
    weights = sum(p.numel() for p in merged.parameters())
    layer = sum(p.numel() for p in base.encoder.layers[0].parameters())
    heads = sum(p.numel() for b in merged.branches.values() for p in b.head.parameters())
    embeddings = sum(p.numel() for p in base.encoder.embeddings.parameters())
    assert weights == embeddings + (len(merged.frozen) + sum(DEPTHS.values())) * layer + heads
    assert merged.layer_evaluations(["sentiment"]) == layers
    assert merged.layer_evaluations(list(DEPTHS)) == (layers - 1) + sum(DEPTHS.values())


def test_merged_model_equals_each_single_task_model(base, tokenizer, branches) -> None:
    merged = MergedModel(base.encoder, [b.model for b in branches])
    batch, task_ids = mixed_batch(tokenizer, [0, 1, 2, 2, 0, 1, 0])
    inputs = as_torch(batch)
    with torch.no_grad():
        outputs = merged(*inputs, torch.from_numpy(one_task_each(task_ids)))
        for task_id, branch in enumerate(branches):
            rows = torch.from_numpy(np.flatnonzero(task_ids == task_id))
            single = branch.model.eval()(*(tensor[rows] for tensor in inputs))
            assert outputs[task_id].shape == single.shape
            assert float((outputs[task_id] - single).abs().max()) <= MERGE_TOLERANCE


def test_multi_task_rows_equal_each_single_task_model(base, tokenizer, branches) -> None:
    """Pair rows asking both pair tasks, or one of them, among text rows: each task's
    output holds exactly the rows that asked it, in batch order, as its own model gives."""
    merged = MergedModel(base.encoder, [b.model for b in branches])
    rows, _ = mixed_rows(tokenizer, [1, 0, 1, 1, 0, 2])
    sets = [[1, 2], [0], [2], [1, 2], [0], [1]]
    batch = tokenizer.pad(rows)
    mask = task_mask(sets, 3)
    inputs = as_torch(batch)
    with torch.no_grad():
        outputs = merged(*inputs, torch.from_numpy(mask))
        for task_id, branch in enumerate(branches):
            mine = torch.from_numpy(np.flatnonzero(mask[:, task_id]))
            single = branch.model.eval()(*(tensor[mine] for tensor in inputs))
            assert outputs[task_id].shape == single.shape == (len(mine), single.shape[1])
            assert float((outputs[task_id] - single).abs().max()) <= MERGE_TOLERANCE


def test_store_manifest_lists_tasks_files_and_hashes(store, branches) -> None:
    raw = json.loads((store.directory / MANIFEST_FILE).read_text())
    assert raw["format_version"] == 3 and raw["opset"] >= 17
    assert [t["definition"]["name"] for t in raw["tasks"]] == [
        "sentiment",
        "paraphrase",
        "similarity",
    ]
    assert [t["layers"] for t in raw["tasks"]] == [1, 2, 3]
    assert [t["fork_depth"] for t in raw["tasks"]] == [5, 4, 3]
    assert (raw["num_layers"], raw["trunk_layers"], raw["frozen_layers"]) == (6, 3, 5)
    assert [t["branch_version"] for t in raw["tasks"]] == [b.info.version for b in branches]
    assert raw["tasks"][0]["definition"]["labels"][4] == "positive"
    assert set(raw["files"]) == {
        "model.onnx",
        "model.int8.onnx",
        "model.fp16.onnx",
        "tokenizer.json",
    }
    assert raw["input_names"] == ["input_ids", "attention_mask", "token_type_ids", "task_mask"]
    assert raw["base_model"]["sha256"] == branches[0].info.base_sha256
    assert not list(store.directory.parent.glob(".*"))  # no staging left behind


def test_onnx_fp32_matches_pytorch_and_mixed_rows_match_single_task_batches(
    base, tokenizer, branches, store
) -> None:
    merged = MergedModel(base.encoder, [b.model for b in branches])
    session = MultiTaskSession(store, "fp32", providers=[CPU])
    rows, task_ids = mixed_rows(tokenizer, [2, 0, 1, 0, 2, 1, 1])
    batch = tokenizer.pad(rows)
    mixed = session.run(batch, one_task_each(task_ids))
    with torch.no_grad():
        reference = merged(*as_torch(batch), torch.from_numpy(one_task_each(task_ids)))
    for task_id, name in enumerate(merged.task_names):
        assert np.abs(mixed[name] - reference[task_id].numpy()).max() <= ONNX_TOLERANCE
        # the same rows alone, padded only to their own length, give the same answers
        own = np.flatnonzero(task_ids == task_id)
        alone_mask = one_task_each(np.full(len(own), task_id))
        alone = session.run(tokenizer.pad([rows[i] for i in own]), alone_mask)
        assert np.abs(alone[name] - mixed[name]).max() <= ONNX_TOLERANCE
        assert all(alone[other].shape[0] == 0 for other in merged.task_names if other != name)


def test_onnx_multi_task_rows_match_pytorch_and_single_task_rows(
    base, tokenizer, branches, store
) -> None:
    merged = MergedModel(base.encoder, [b.model for b in branches])
    session = MultiTaskSession(store, "fp32", providers=[CPU])
    rows, _ = mixed_rows(tokenizer, [1, 2, 0, 1])
    batch = tokenizer.pad(rows)
    sets = [[1, 2], [1, 2], [0], [2]]
    mask = task_mask(sets, 3)
    many = session.run(batch, mask)
    with torch.no_grad():
        reference = merged(*as_torch(batch), torch.from_numpy(mask))
    for task_id, name in enumerate(merged.task_names):
        assert np.abs(many[name] - reference[task_id].numpy()).max() <= ONNX_TOLERANCE
        # the rows that asked it among others answer as if every row asked it alone
        alone = session.run(batch, task_mask([[task_id]] * len(rows), 3))[name]
        assert np.abs(many[name] - alone[mask[:, task_id]]).max() <= MERGE_TOLERANCE


def test_int8_and_fp16_graphs_run_and_stay_close(tokenizer, store) -> None:
    batch, task_ids = mixed_batch(tokenizer, [0, 1, 2, 0, 1, 2])
    mask = one_task_each(task_ids)
    fp32 = MultiTaskSession(store, "fp32", providers=[CPU]).run(batch, mask)
    for variant, tolerance in (("int8", 0.5), ("fp16", 5e-2)):
        other = MultiTaskSession(store, variant, providers=[CPU]).run(batch, mask)
        for name, values in fp32.items():
            assert other[name].shape == values.shape and other[name].dtype == np.float32
            assert np.abs(other[name] - values).max() <= tolerance, (variant, name)
    # Every MatMul weight is int8 but the upper half's feed-forward ones
    # (training.graph.int8); the embedding tables stay fp32, so the file shrinks by the
    # quantized weights' share only.
    int8 = onnx.load(str(store.directory / "model.int8.onnx"))
    kinds = {init.name: init.data_type for init in int8.graph.initializer}
    float_weights = [
        n.name
        for n in int8.graph.node
        if n.op_type == "MatMul" and kinds.get(n.input[1]) == onnx.TensorProto.FLOAT
    ]
    assert float_weights and all("/attention/" not in name for name in float_weights)
    assert sum(n.op_type == "MatMulInteger" for n in int8.graph.node) > len(float_weights)
    assert (store.directory / "model.int8.onnx").stat().st_size < (
        store.directory / "model.onnx"
    ).stat().st_size


@pytest.mark.parametrize("spliced", [False, True], ids=["rebuilt", "spliced"])
@pytest.mark.parametrize(
    ("task", "layers"),
    [
        ("sentiment", 1),  # the shallowest branch, retrained
        ("similarity", 3),  # the deepest branch, retrained
        ("similarity", 4),  # a new branch deeper than every other: the trunk shrinks
    ],
)
def test_replacing_one_branch_leaves_the_others_bit_identical(
    base, tokenizer, branch_dirs, store, tmp_path, task, layers, spliced
) -> None:
    retrained = train_and_save(base, tokenizer, task, tmp_path / "b", seed=1, layers=layers)
    paths = [retrained if t == task else path for t, path in branch_dirs.items()]
    previous = load_manifest(store.directory) if spliced else None
    updated = publish_store(
        base,
        load_branches(read_branches(paths), base),
        tmp_path / "updated",
        ("fp32",),
        previous=previous,
    )
    build = load_manifest(updated.directory).extra["graph_build"]
    if spliced and layers == DEPTHS[task]:
        assert build.startswith("graphs spliced into "), build
    else:  # fork 3 would be left without a task: the frozen path changes shape
        assert build.startswith("graphs built in full ("), build
    assert load_manifest(updated.directory).task(task).layers == layers
    rows, task_ids = mixed_rows(tokenizer, [0, 1, 2, 1, 0, 2, 2])
    batch = tokenizer.pad(rows)
    masks = [one_task_each(task_ids), task_mask([[0], [1, 2], [1, 2], [1], [0], [2], [1, 2]], 3)]
    for mask in masks:
        before = MultiTaskSession(store, "fp32", providers=[CPU]).run(batch, mask)
        after = MultiTaskSession(updated, "fp32", providers=[CPU]).run(batch, mask)
        for other in DEPTHS:
            if other != task:
                assert np.array_equal(before[other], after[other]), (other, mask.tolist())
        assert not np.array_equal(before[task], after[task])


def _copy_branch(source: Path, target: Path, **changes) -> Path:
    shutil.copytree(source, target)
    meta = json.loads((target / BRANCH_META).read_text())
    for key, value in changes.items():
        if key == "base_sha256":
            meta["base_model"]["sha256"] = value
        else:
            meta[key] = value
    (target / BRANCH_META).write_text(json.dumps(meta))
    return target


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"base_sha256": "f" * 64}, "different base models"),
        ({"tokenizer_sha256": "e" * 64}, "different tokenizers"),
        ({"max_seq_len": 64}, "different max sequence lengths"),
    ],
)
def test_mismatched_branches_are_refused(branch_dirs, tmp_path, change, message) -> None:
    odd = _copy_branch(branch_dirs["paraphrase"], tmp_path / "odd", **change)
    infos = [read_branch_info(branch_dirs["sentiment"]), read_branch_info(odd)]
    with pytest.raises(MergeError, match=message):
        check_compatible(infos)


def test_two_branches_for_one_task_are_refused(branch_dirs, tmp_path) -> None:
    twin = _copy_branch(branch_dirs["sentiment"], tmp_path / "twin")
    with pytest.raises(MergeError, match="two branches for task sentiment"):
        check_compatible([read_branch_info(branch_dirs["sentiment"]), read_branch_info(twin)])


def test_merge_cli_misuse_is_one_line(branch_dirs, store, tmp_path) -> None:
    odd = _copy_branch(branch_dirs["paraphrase"], tmp_path / "odd", base_sha256="f" * 64)
    cases = [
        (
            ["--branch", str(branch_dirs["sentiment"]), "--branch", str(odd)],
            "different base models",
        ),
        (["--branch", str(tmp_path / "missing")], "does not exist"),
    ]
    for args, fragment in cases:
        result = run("-m", "training.commands.merge", *args, "--out", str(tmp_path / "s"))
        assert_one_line_error(result, fragment)
    assert not (tmp_path / "s").exists()


def test_existing_store_is_not_overwritten_without_replace(base, branches, store) -> None:
    stamp = (store.directory / MANIFEST_FILE).read_bytes()
    with pytest.raises(ArtifactExistsError):
        publish_store(base, branches, store.directory)
    assert (store.directory / MANIFEST_FILE).read_bytes() == stamp


def test_failed_check_publishes_nothing(base, branches, tmp_path, monkeypatch) -> None:
    def fail(*_args, **_kwargs):
        raise MergeError("fp32 graph differs from PyTorch")

    monkeypatch.setattr(merge, "verify_graph", fail)
    with pytest.raises(MergeError):
        publish_store(base, branches, tmp_path / "broken", ("fp32",))
    assert list(tmp_path.iterdir()) == []


def test_corrupt_or_missing_store_files_are_clear_errors(store, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store.directory, copy)
    load_manifest(copy)  # intact copy loads
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"model\.onnx is corrupt"):
        load_manifest(copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(StoreError, match=r"model\.onnx is missing"):
        load_manifest(copy)
    (copy / MANIFEST_FILE).write_text("{broken")
    with pytest.raises(StoreError, match="not valid JSON"):
        load_manifest(copy)
    with pytest.raises(StoreError, match="does not exist"):
        load_manifest(tmp_path / "nowhere")


def test_manifest_naming_files_outside_the_store_is_refused(store, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store.directory, copy)
    (tmp_path / "secret.txt").write_text("not part of any store")
    rewrite_manifest(copy, lambda raw: raw["files"].__setitem__("../secret.txt", "0" * 64))
    with pytest.raises(StoreError, match="outside the store"):
        load_manifest(copy)


def test_a_hand_edited_manifest_is_refused(store, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store.directory, copy)
    rewrite_manifest(copy, lambda raw: raw.__setitem__("max_seq_len", 64), seal=False)
    with pytest.raises(StoreError, match="changed after it was published"):
        load_manifest(copy)
