"""MPNet bases: the encoder matches transformers' MPNetModel, and the whole pipeline
(trunk cache, merge, ONNX export and its int8 variant, serving) preserves what it
computes, as the BERT tests check for BERT. Tiny random checkpoints: seconds, no network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import transformers

from model_store.manifest import load_manifest
from model_store.runtime import CPU, MultiTaskSession, task_mask
from model_store.tokenizer import PairTokenizer
from service.engine import Engine
from service.settings import Settings
from tests.support.tiny_mpnet import tiny_mpnet_dir
from training.encoders.base_model import BaseModel, load_base_model
from training.encoders.bert import run_layers
from training.encoders.mpnet import MPNetEncoder
from training.fit.branch import save_branch
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel
from training.fit.trainer import TrainConfig, encode_examples, train_branch
from training.fit.trunk_cache import TrunkStates
from training.graph.merge import load_branches, publish_store, read_branches
from training.graph.merged_model import INPUT_NAMES, MergedModel

from .test_merge import as_torch, examples_for, mixed_batch

PARITY_TOLERANCE = 1e-5  # our encoder vs transformers.MPNetModel, fp32
MERGE_TOLERANCE = 1e-5  # merged PyTorch model vs each single-task model
ONNX_TOLERANCE = 1e-4  # ONNX Runtime fp32 vs PyTorch
INT8_TOLERANCE = 0.5  # dynamic int8 vs fp32 on raw outputs of untrained-ish heads
DEPTHS = {"sentiment": 1, "paraphrase": 2, "similarity": 3}


@pytest.fixture(scope="module")
def mpnet_dir(tmp_path_factory) -> Path:
    return tiny_mpnet_dir(tmp_path_factory.mktemp("mpnet") / "tiny-mpnet", layers=4)


@pytest.fixture(scope="module")
def mpnet(mpnet_dir: Path) -> BaseModel:
    return load_base_model(mpnet_dir)


@pytest.fixture(scope="module")
def mpnet_tokenizer(mpnet_dir: Path) -> PairTokenizer:
    return PairTokenizer.from_dir(mpnet_dir, max_seq_len=32)


def _batch(tokenizer: PairTokenizer):
    batch = tokenizer.encode_batch(
        ["a gentle , funny film", "rain", "how do i learn python quickly and well ?", "no"],
        ["a kind and amusing movie", "sun", "what is the fastest way to learn python ?", "yes"],
    )
    return as_torch(batch)


def _reference(path: Path) -> transformers.MPNetModel:
    model = transformers.MPNetModel.from_pretrained(
        str(path), add_pooling_layer=False, attn_implementation="eager"
    )
    return model.eval()


def test_encoder_matches_transformers_mpnet(mpnet, mpnet_dir, mpnet_tokenizer) -> None:
    input_ids, mask, types = _batch(mpnet_tokenizer)
    assert isinstance(mpnet.encoder, MPNetEncoder) and (input_ids == 1).any()  # padded
    with torch.no_grad():
        ours = mpnet.encoder(input_ids, mask, types)
        theirs = _reference(mpnet_dir)(input_ids=input_ids, attention_mask=mask).last_hidden_state
        real = mask.bool()
        assert float((ours - theirs).abs()[real].max()) <= PARITY_TOLERANCE
        # token types are ignored, and the relative position bias is really applied
        assert torch.equal(mpnet.encoder(input_ids, mask, 1 - types), ours)
        table = mpnet.encoder.position_bias.weight
        saved = table.clone()
        table.zero_()
        try:
            unbiased = mpnet.encoder(input_ids, mask, types)
        finally:
            table.copy_(saved)
        assert float((unbiased - ours).abs()[real].max()) > 1e-3


def test_trunk_then_branch_layers_equal_the_full_stack(mpnet, mpnet_tokenizer) -> None:
    input_ids, mask, types = _batch(mpnet_tokenizer)
    encoder = mpnet.encoder
    with torch.no_grad():
        full = encoder(input_ids, mask, types)
        for depth in range(encoder.num_layers + 1):
            hidden = encoder.run_trunk(input_ids, mask, types, depth)
            split = run_layers(encoder.layers[depth:], hidden, mask, encoder.position_bias)
            assert torch.equal(split, full), depth


def test_pairs_are_encoded_as_the_checkpoint_tokenizer_says(mpnet_tokenizer) -> None:
    (row,) = mpnet_tokenizer.encode(["hello world"], ["second one"])
    ids = row.input_ids.tolist()
    assert ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 3  # <s> a </s></s> b </s>
    assert ids[ids.index(2) + 1] == 2
    assert mpnet_tokenizer.pad_id == 1


def test_trunk_cache_matches_recomputation(mpnet, mpnet_tokenizer) -> None:
    model = TaskModel(mpnet.encoder, preset_spec("similarity"), 2, "mean")
    rows = encode_examples(mpnet_tokenizer, model.spec, examples_for("similarity", 24, 0))
    cached = TrunkStates(model, mpnet_tokenizer, rows, budget_bytes=1 << 30)
    fresh = TrunkStates(model, mpnet_tokenizer, rows, budget_bytes=0)
    assert cached.cached_count == 24
    indices = [0, 23, 5, 11]
    reference = fresh.batch(indices)
    difference = (cached.batch(indices).hidden - reference.hidden).abs()
    assert float(difference[reference.attention_mask.bool()].max()) <= PARITY_TOLERANCE


@pytest.fixture(scope="module")
def mpnet_branches(mpnet, mpnet_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpnet-branches")
    paths = []
    for task, depth in DEPTHS.items():
        config = TrainConfig(layers=depth, epochs=1, batch_size=16, lr=1e-3)
        train, val = examples_for(task, 32, 0), examples_for(task, 8, 100)
        result = train_branch(
            mpnet.encoder, mpnet_tokenizer, preset_spec(task), train, val, config, progress=False
        )
        paths.append(save_branch(result.model, mpnet, mpnet_tokenizer, out, {}, {}))
    return load_branches(read_branches(paths), mpnet)


@pytest.fixture(scope="module")
def mpnet_store(mpnet, mpnet_branches, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpnet-stores") / "mpnet"
    # publishing checks every graph against PyTorch: fp32 within 1e-4, fp16 within 5e-2
    return publish_store(mpnet, mpnet_branches, out, variants=("fp32", "int8", "fp16"))


def test_merged_mpnet_equals_each_single_task_model(mpnet, mpnet_tokenizer, mpnet_branches):
    merged = MergedModel(mpnet.encoder, [b.model for b in mpnet_branches])
    assert merged.trunk_depth == 1
    batch, task_ids = mixed_batch(mpnet_tokenizer, [0, 1, 2, 2, 0, 1, 0])
    inputs = as_torch(batch)
    with torch.no_grad():
        outputs = merged(*inputs, torch.from_numpy(task_mask([[t] for t in task_ids], 3)))
        for task_id, branch in enumerate(mpnet_branches):
            rows = torch.from_numpy(np.flatnonzero(task_ids == task_id))
            single = branch.model(*(tensor[rows] for tensor in inputs))
            assert float((outputs[task_id] - single).abs().max()) <= MERGE_TOLERANCE


def test_onnx_and_int8_graphs_match_pytorch(mpnet, mpnet_tokenizer, mpnet_branches, mpnet_store):
    manifest = load_manifest(mpnet_store.directory)
    assert manifest.base_model["model_type"] == "mpnet"
    assert manifest.base_model["token_types"] is False
    assert set(manifest.extra["parity"]) == {"fp32", "int8", "fp16"}
    # The export fuses MPNet's attention with its position bias (training.graph.fusion).
    fusion = manifest.extra["fusion"]
    assert fusion["fused"] and fusion["complete"], fusion
    assert fusion["operators"]["MultiHeadAttention"] == 3 + 1 + 2 + 3  # frozen, then K
    assert manifest.input_names[:3] == ("input_ids", "attention_mask", "token_type_ids")
    merged = MergedModel(mpnet.encoder, [b.model for b in mpnet_branches])
    batch, task_ids = mixed_batch(mpnet_tokenizer, [2, 0, 1, 0, 2, 1, 1])
    mask = task_mask([[t] for t in task_ids], 3)
    with torch.no_grad():
        reference = merged(*as_torch(batch), torch.from_numpy(mask))
    for variant in ("fp32", "int8", "fp16"):  # token_type_ids stays an input, unread
        graph = onnx.load(str(manifest.graph_path(variant)), load_external_data=False)
        assert [value.name for value in graph.graph.input] == list(INPUT_NAMES), variant
    fp32 = MultiTaskSession(manifest, "fp32", providers=[CPU]).run(batch, mask)
    int8 = MultiTaskSession(manifest, "int8", providers=[CPU]).run(batch, mask)
    for task_id, name in enumerate(merged.task_names):
        assert np.abs(fp32[name] - reference[task_id].numpy()).max() <= ONNX_TOLERANCE
        assert np.abs(int8[name] - fp32[name]).max() <= INT8_TOLERANCE


def test_served_answers_equal_the_graph(mpnet_tokenizer, mpnet_store) -> None:
    """The service reads the store's own tokenizer.json: it must pad with <pad> (1) too."""
    settings = Settings(model_dir=mpnet_store.directory, provider="cpu")
    engine = Engine.load(settings.model_dir, settings.engine_config())
    assert engine.tokenizer.pad_id == 1
    texts_a = ["a man plays a guitar .", "rain"]
    texts_b = ["a man is playing music and singing loudly .", "sun"]
    task = engine.task_id("similarity")
    served = engine.run(engine.encode(texts_a, texts_b), [(task,), (task,)])
    session = MultiTaskSession(load_manifest(mpnet_store.directory), "fp32", providers=[CPU])
    mask = task_mask([[task], [task]], len(engine.tasks))
    raw = session.run(mpnet_tokenizer.encode_batch(texts_a, texts_b), mask)
    expected = np.clip(raw["similarity"][:, 0], 0.0, 5.0)
    got = np.array([float(p["similarity"].values[0]) for p in served])
    assert np.abs(got - expected).max() <= 1e-6
