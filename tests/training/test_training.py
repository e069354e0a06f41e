"""Training a branch: it learns, it leaves the trunk untouched, it is reproducible,
and what it saves reloads into exactly the model that was trained."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model_store.atomic import ArtifactExistsError, atomic_directory
from tests.support.samples import pair_rows, sentiment_rows
from training.data.examples import Example
from training.encoders.base_model import load_base_model
from training.fit import branch as branch_module
from training.fit.branch import BRANCH_META, BRANCH_WEIGHTS, BranchError, load_branch, save_branch
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel
from training.fit.trainer import (
    MAX_EPOCHS,
    MIN_EPOCHS,
    MIN_UPDATES,
    SMALL_VALIDATION,
    EpochStats,
    Selection,
    TrainConfig,
    encode_examples,
    epochs_for,
    labels_of,
    order_pairs,
    predict,
    score,
    train_branch,
)
from training.fit.trunk_cache import TrunkStates

FAST = {"epochs": 3, "batch_size": 16, "lr": 5e-4, "head_lr": 5e-3, "warmup": 0.0}


def sentiment_examples(count: int, seed: int = 0) -> list[Example]:
    return [Example(t, None, float(y), i) for i, (t, y) in enumerate(sentiment_rows(count, seed))]


def similarity_examples(count: int, seed: int = 0) -> list[Example]:
    return [Example(a, b, s, i) for i, (a, b, s) in enumerate(pair_rows(count, seed))]


def _loss_on(model: TaskModel, tokenizer, examples: list[Example]) -> float:
    rows = encode_examples(tokenizer, model.spec, examples)
    outputs = predict(model, TrunkStates(model, tokenizer, rows, 0), len(rows), 32)
    return score(model.spec, outputs, labels_of(examples))[0]


@pytest.fixture(scope="module")
def trained(base, tokenizer):
    """One tiny run shared by the tests below: 64 examples, 3 epochs of 4 steps."""
    spec = preset_spec("sentiment")
    train, val = sentiment_examples(64), sentiment_examples(16, seed=1)
    config = TrainConfig(layers=1, seed=3, **FAST)
    torch.manual_seed(config.seed)  # the same initialisation train_branch starts from
    untrained = TaskModel(base.encoder, spec, config.layers, config.pooling)
    before = _loss_on(untrained, tokenizer, train)
    result = train_branch(base.encoder, tokenizer, spec, train, val, config, progress=False)
    return result, before, train, config


def test_tiny_run_lowers_the_training_loss(trained, tokenizer) -> None:
    result, before, train, _ = trained
    assert _loss_on(result.model, tokenizer, train) < before * 0.8
    assert len(result.history) == 3
    assert result.best.val_metric == max(stats.val_metric for stats in result.history)


def test_trunk_and_embeddings_stay_bit_identical(trained, base) -> None:
    result, *_ = trained
    pristine = load_base_model().encoder.state_dict()
    for key, tensor in base.encoder.state_dict().items():
        assert torch.equal(tensor, pristine[key]), key
    # ...while the branch's copy of the top layer did change.
    top = base.encoder.num_layers - 1
    tuned = result.model.branch_state()[f"encoder.layer.{top}.output.dense.weight"]
    assert not torch.equal(tuned, pristine[f"encoder.layer.{top}.output.dense.weight"])


def test_saved_branch_reloads_into_the_same_model(trained, base, tokenizer, tmp_path: Path) -> None:
    result, _, train, _ = trained
    path = save_branch(result.model, base, tokenizer, tmp_path, {"metric": "accuracy"}, {"x": 1})
    assert path.parent == tmp_path / "sentiment"
    keys = set(load_file(str(path / BRANCH_WEIGHTS)))
    assert {k.split(".")[2] for k in keys if k.startswith("encoder.layer.")} == {"5"}
    assert any(k.startswith("head.") for k in keys)
    meta = json.loads((path / BRANCH_META).read_text())
    assert meta["task"] == "sentiment" and meta["layers"] == 1 and meta["first_layer"] == 5
    assert meta["base_model"]["sha256"] == base.weights_sha256
    assert meta["tokenizer_sha256"] == tokenizer.sha256 and meta["max_seq_len"] == 32
    assert meta["version"] == path.name and meta["definition"]["labels"][0] == "negative"

    reloaded, info = load_branch(path, base)
    assert info.version == path.name
    batch = tokenizer.encode_batch([example.text_a for example in train[:8]])
    inputs = [
        torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids)
    ]
    with torch.no_grad():
        assert torch.equal(reloaded(*inputs), result.model(*inputs))


def test_same_seed_gives_the_same_branch(base, tokenizer) -> None:
    spec = preset_spec("similarity")
    train, val = similarity_examples(32), similarity_examples(8, seed=1)

    def run(seed: int) -> dict[str, torch.Tensor]:
        config = TrainConfig(layers=2, seed=seed, **{**FAST, "epochs": 1})
        return train_branch(
            base.encoder, tokenizer, spec, train, val, config, progress=False
        ).model.branch_state()

    first, again, other = run(7), run(7), run(8)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_trunk_cache_matches_recomputation_within_budget(base, tokenizer) -> None:
    model = TaskModel(base.encoder, preset_spec("similarity"), 2, "mean")
    examples = similarity_examples(40)
    rows = encode_examples(tokenizer, model.spec, examples)
    everything = TrunkStates(model, tokenizer, rows, budget_bytes=1 << 30)
    nothing = TrunkStates(model, tokenizer, rows, budget_bytes=0)
    half_budget = sum(len(row) for row in rows[:20]) * 384 * 4
    half = TrunkStates(model, tokenizer, rows, budget_bytes=half_budget)
    fp16 = TrunkStates(model, tokenizer, rows, budget_bytes=1 << 30, dtype=torch.float16)
    assert (everything.cached_count, nothing.cached_count, half.cached_count) == (40, 0, 20)
    assert half.used_bytes <= half_budget

    indices = [0, 39, 5, 25, 12]  # mixes cached and recomputed rows in the half cache
    reference = nothing.batch(indices)
    real = reference.attention_mask.bool()
    for states, tolerance in ((everything, 1e-5), (half, 1e-5), (fp16, 1e-2)):
        batch = states.batch(indices)
        assert torch.equal(batch.attention_mask, reference.attention_mask)
        difference = (batch.hidden - reference.hidden).abs()[real].max()
        assert difference <= tolerance


def test_branch_from_another_base_or_corrupted_is_refused(
    trained, base, tokenizer, tmp_path
) -> None:
    result, *_ = trained
    path = save_branch(result.model, base, tokenizer, tmp_path, {}, {})
    meta = json.loads((path / BRANCH_META).read_text())
    meta["base_model"]["sha256"] = "0" * 64
    (path / BRANCH_META).write_text(json.dumps(meta))
    with pytest.raises(BranchError, match="pass the matching --base-model"):
        load_branch(path, base)

    path = save_branch(result.model, base, tokenizer, tmp_path / "again", {}, {})
    data = bytearray((path / BRANCH_WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (path / BRANCH_WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(BranchError, match="corrupt branch"):
        load_branch(path, base)


def test_saving_the_same_branch_twice_in_a_second_is_idempotent(
    trained, base, tokenizer, tmp_path, monkeypatch
) -> None:
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

    monkeypatch.setattr(branch_module, "datetime", FrozenClock)
    result, *_ = trained
    first = save_branch(result.model, base, tokenizer, tmp_path, {}, {})
    again = save_branch(result.model, base, tokenizer, tmp_path, {}, {})
    assert again == first
    assert list((tmp_path / "sentiment").iterdir()) == [first]


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    final = tmp_path / "artifact"
    with pytest.raises(RuntimeError), atomic_directory(final) as staging:
        (staging / "half.bin").write_bytes(b"partial")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(final) as staging:
        (staging / "whole.bin").write_bytes(b"done")
    assert (final / "whole.bin").read_bytes() == b"done"
    with pytest.raises(ArtifactExistsError), atomic_directory(final):
        pass


def test_full_fine_tuning_tunes_a_copy_of_the_embeddings(base, tokenizer) -> None:
    """The full fine-tuning reference changes its own embeddings, never the base's,
    and is refused as a branch (it has no shared trunk to merge onto)."""
    spec = preset_spec("sentiment")
    train, val = sentiment_examples(32), sentiment_examples(8, seed=1)
    depth = base.encoder.num_layers
    config = TrainConfig(layers=depth, train_embeddings=True, seed=1, **{**FAST, "epochs": 1})
    model = train_branch(base.encoder, tokenizer, spec, train, val, config, progress=False).model
    pristine = load_base_model().encoder.state_dict()
    for key, tensor in base.encoder.state_dict().items():
        assert torch.equal(tensor, pristine[key]), key
    tuned = model.embeddings.word_embeddings.weight
    assert not torch.equal(tuned, pristine["embeddings.word_embeddings.weight"])
    with pytest.raises(ValueError, match="not a branch"):
        model.branch_state()
    with pytest.raises(ValueError, match="all 6 layers"):
        TaskModel(base.encoder, spec, 2, "cls", train_embeddings=True)


def test_pair_order_swaps_or_doubles_the_training_pairs() -> None:
    examples = similarity_examples(3)
    assert order_pairs(examples, "ab") == examples
    swapped = order_pairs(examples, "ba")
    assert [(e.text_a, e.text_b) for e in swapped] == [(e.text_b, e.text_a) for e in examples]
    assert [e.label for e in swapped] == [e.label for e in examples]
    assert order_pairs(examples, "both") == [*examples, *swapped]
    with pytest.raises(ValueError, match="pair order"):
        TrainConfig(layers=1, pair_order="random")


def _without_dropout(encoder):
    """A copy of the base whose dropout is off, so that two schedules of the same
    arithmetic can be compared (dropout draws its masks per pass)."""
    import copy

    quiet = copy.deepcopy(encoder)
    for module in quiet.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return quiet


def test_gradient_accumulation_gives_the_whole_batch_update(base, tokenizer) -> None:
    spec = preset_spec("sentiment")
    train, val = sentiment_examples(40), sentiment_examples(8, seed=1)
    encoder = _without_dropout(base.encoder)
    whole, split = (
        train_branch(
            encoder,
            tokenizer,
            spec,
            train,
            val,
            TrainConfig(layers=1, seed=5, grad_accumulation=parts, **{**FAST, "epochs": 1}),
            progress=False,
        )
        for parts in (1, 4)
    )
    # The logged loss is the batch mean either way (a wrong weighting of the passes
    # would change it by their count)...
    assert split.history[0].train_loss == pytest.approx(whole.history[0].train_loss, rel=1e-5)
    # ...and the weights get the same update up to float rounding (micro-batches pad to
    # their own longest row, and sums run in another order).
    want, got = whole.model.branch_state(), split.model.branch_state()
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-4)


def test_micro_batches_cover_the_batch_in_order() -> None:
    from training.fit.trainer import micro_batches

    assert micro_batches(range(10), 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert micro_batches(range(2), 4) == [[0], [1]]  # never an empty pass
    with pytest.raises(ValueError, match="gradient accumulation"):
        TrainConfig(layers=1, batch_size=4, grad_accumulation=5)


def test_an_interrupted_run_resumes_to_the_identical_branch(
    base, tokenizer, tmp_path, monkeypatch
) -> None:
    from training.fit import trainer
    from training.fit.trainer import Checkpoint

    spec = preset_spec("sentiment")
    train, val = sentiment_examples(48), sentiment_examples(8, seed=1)
    config = TrainConfig(layers=1, seed=7, **FAST)  # 3 epochs
    uninterrupted = train_branch(base.encoder, tokenizer, spec, train, val, config, progress=False)

    checkpoint = Checkpoint(path=tmp_path / "run.pt", fingerprint="run-1")
    save = trainer._save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # Ctrl-C after the second epoch's checkpoint

    monkeypatch.setattr(trainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_branch(
            base.encoder, tokenizer, spec, train, val, config, False, checkpoint=checkpoint
        )
    monkeypatch.undo()
    assert checkpoint.path.is_file()
    resumed = train_branch(
        base.encoder,
        tokenizer,
        spec,
        train,
        val,
        config,
        False,
        checkpoint=Checkpoint(checkpoint.path, checkpoint.fingerprint, resume=True),
    )
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert [s.val_metric for s in resumed.history] == [s.val_metric for s in uninterrupted.history]
    want, got = uninterrupted.model.branch_state(), resumed.model.branch_state()
    for key in want:
        assert torch.equal(got[key], want[key]), key

    other = Checkpoint(checkpoint.path, "another run", resume=True)
    with pytest.raises(trainer.CheckpointMismatchError, match="other arguments"):
        train_branch(base.encoder, tokenizer, spec, train, val, config, False, checkpoint=other)


def test_trunk_states_on_disk_equal_those_in_memory(base, tokenizer, tmp_path) -> None:
    spec = preset_spec("sentiment")
    rows = encode_examples(tokenizer, spec, sentiment_examples(30))
    model = TaskModel(base.encoder, spec, 1, "cls")
    memory = TrunkStates(model, tokenizer, rows, budget_bytes=1 << 30)
    first_row = len(rows[0]) * base.encoder.config.hidden_size * 4
    split = TrunkStates(
        model,
        tokenizer,
        rows,
        budget_bytes=first_row,
        disk_budget_bytes=1 << 30,
        disk_dir=tmp_path,
    )
    assert split.disk_count == len(rows) - 1 and split.cached_count == len(rows)
    assert list(tmp_path.iterdir()) == []  # the file is unlinked: nothing left behind
    for indices in ([0, 1, 2], [5, 17, 29], list(range(30))):
        a, b = memory.batch(indices), split.batch(indices)
        assert torch.equal(a.hidden, b.hidden) and torch.equal(a.attention_mask, b.attention_mask)


def _epoch(epoch: int, val_metric: float, val_loss: float) -> EpochStats:
    return EpochStats(epoch, train_loss=1.0, val_loss=val_loss, val_metric=val_metric, seconds=1)


def test_of_epochs_tied_on_the_metric_the_lower_validation_loss_is_kept() -> None:
    underfit, fitted = _epoch(1, 1.0, 0.62), _epoch(10, 1.0, 0.002)
    rule = Selection.for_split(SMALL_VALIDATION)
    assert rule == Selection.METRIC
    assert Selection.improves(fitted, underfit, rule)
    assert not Selection.improves(underfit, fitted, rule)
    assert Selection.improves(_epoch(2, 0.9, 0.9), _epoch(1, 0.8, 0.1), rule)  # metric first
    assert not Selection.improves(_epoch(2, 1.0, 0.62), underfit, rule)  # a full tie: earlier
    assert Selection.improves(underfit, None, rule)


def test_a_small_validation_split_chooses_by_its_loss() -> None:
    rule = Selection.for_split(SMALL_VALIDATION - 1)
    assert rule == Selection.LOSS
    # One example of 15 is 7 points of accuracy: the loss, not that point, decides.
    assert Selection.improves(_epoch(10, 14 / 15, 0.01), _epoch(2, 1.0, 0.3), rule)


def test_the_default_epochs_give_a_small_file_enough_steps() -> None:
    steps = -(-135 // 32)
    assert epochs_for(135, 32) == -(-MIN_UPDATES // steps)  # 150 rows less validation
    assert epochs_for(8000, 32) == MIN_EPOCHS  # a preset's thousands of rows
    assert epochs_for(1, 32) == MAX_EPOCHS
    config = TrainConfig(layers=1)
    assert config.resolved(135).epochs == epochs_for(135, 32)
    assert TrainConfig(layers=1, epochs=2).resolved(135).epochs == 2  # asked for: kept
    assert config.resolved(135).resolved(8000).epochs == epochs_for(135, 32)
