"""Data-parallel training under torchrun: two CPU processes (gloo) train the same branch
as one process does with the same global batch, and only rank 0 writes it.

Dropout is off in the tiny base used here, so the two runs differ only in the order of
floating-point sums (each rank's share of a batch, then the all-reduce). Adam divides
every gradient by its own running scale, which lifts those rounding differences in
near-zero gradients to a fraction of the learning rate: the stated tolerance is 2e-4
on every weight of the branch after two epochs at lr 1e-3 (6e-5 measured). That the
sharded gradient itself is exact is checked separately, without Adam."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.support.commands import ROOT
from tests.support.tiny_store import tiny_base_dir
from training.commands import train as finetune_top_layers
from training.fit.distributed import DistContext
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel
from training.fit.trainer import encode_examples, labels_of
from training.fit.trunk_cache import TrunkStates

from .test_training import similarity_examples

TOLERANCE = 2e-4
FINETUNE = str(ROOT / "training" / "finetune_top_layers.py")


def _branch(out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    (version,) = (out / "similarity").iterdir()
    return load_file(str(version / "branch.safetensors")), json.loads(
        (version / "branch.json").read_text()
    )


def test_two_processes_train_the_branch_one_process_trains(tmp_path: Path, data_dir: Path):
    base = tiny_base_dir(tmp_path / "base", layers=4, dropout=0.0)
    common = [
        *("--task", "similarity", "--layers", "2", "--base-model", str(base)),
        *("--data-dir", str(data_dir), "--epochs", "2", "--batch-size", "16"),
        *("--lr", "1e-3", "--max-seq-len", "32", "--threads", "1", "--quiet"),
    ]
    threads = torch.get_num_threads()  # --threads sets it for the whole test process
    try:
        assert finetune_top_layers.main([*common, "--out", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
    launched = subprocess.run(
        [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            *("--nproc_per_node", "2", FINETUNE, *common, "--out", str(tmp_path / "ddp")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("similarity: validation pearson") == 1  # rank 0 reports

    single, single_meta = _branch(tmp_path / "single")
    ddp, ddp_meta = _branch(tmp_path / "ddp")  # exactly one version: rank 1 wrote nothing
    assert single.keys() == ddp.keys()
    worst = max(float((single[k] - ddp[k]).abs().max()) for k in single)
    assert worst <= TOLERANCE, worst
    assert ddp_meta["validation"]["best_epoch"] == single_meta["validation"]["best_epoch"]
    history = zip(
        single_meta["validation"]["history"], ddp_meta["validation"]["history"], strict=True
    )
    for one, two in history:
        assert abs(one["val_metric"] - two["val_metric"]) <= 1e-4
        assert abs(one["train_loss"] - two["train_loss"]) <= 1e-4


def test_rank_shares_of_a_batch_add_up_to_its_gradient(base, tokenizer) -> None:
    """What the two-process test cannot see through Adam (which ignores a gradient's
    scale): the ranks' weighted losses, averaged as DistributedDataParallel does, give
    the gradient of the global batch's mean loss, also with uneven and empty shares."""
    spec = preset_spec("similarity")
    examples = similarity_examples(12)
    rows = encode_examples(tokenizer, spec, examples)
    labels = labels_of(examples)
    model = TaskModel(base.encoder, spec, 1, "mean").eval()  # no dropout: exact comparison
    everything = TrunkStates(model, tokenizer, rows, budget_bytes=1 << 30)

    def gradient(indices: list[int], weight: float) -> list[torch.Tensor]:
        model.zero_grad()
        batch = everything.batch(indices)
        outputs = model.forward_from_trunk(batch.hidden, batch.attention_mask)
        (spec.loss(outputs, labels[indices]) * weight).backward()
        return [p.grad.clone() for p in model.parameters()]

    for batch in ([0, 1, 2, 3, 4, 5, 6, 7], [1, 3, 5, 7, 2], [0, 4, 8, 9, 11], [1, 3, 5, 7]):
        whole = gradient(batch, 1.0)
        for world_size in (2, 3):
            summed = [torch.zeros_like(g) for g in whole]
            for rank in range(world_size):
                shard = DistContext(rank, world_size).shard(len(rows))
                _, mine = shard.own(batch)
                if mine:
                    for total, part in zip(summed, gradient(mine, shard.share(batch)), strict=True):
                        total += part
            averaged = [total / world_size for total in summed]
            # Each rank pads its rows to its own longest, the whole batch to the batch's:
            # float32 sums in another order, so equal up to rounding (seen: 8e-7 at most
            # here); a wrong share would be off by a factor (1/2, 3/5, ...).
            for one, other in zip(whole, averaged, strict=True):
                torch.testing.assert_close(other, one, rtol=1e-4, atol=2e-6)
