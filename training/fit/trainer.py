"""Train one task branch: top K layers and a head over the frozen, cached trunk.

Determinism: the seed fixes the head's initialisation, dropout and the batch order, so
the same data, arguments and seed give bit-identical branches on the same machine.
The best epoch on validation is the one kept (`Selection`): by the task's metric, ties
broken by the validation loss, and by the loss alone on a small validation split.

Long runs (a 12-layer base on a CPU takes an hour per epoch) can be interrupted: with a
checkpoint path, the state after every completed epoch (weights, optimizer, schedule,
random generators, history) is written atomically, and a resumed run continues from
it to the same bit-identical branch an uninterrupted run would have produced.
Gradient accumulation splits each batch into smaller passes whose gradients add up to
the whole batch's, for batches that do not fit in memory.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from model_store.tokenizer import EncodedRow, PairTokenizer
from training.data.examples import Example
from training.encoders.bert import BertEncoder
from training.fit.distill import Distillation, distillation_loss, teacher_outputs
from training.fit.distributed import DistContext, current
from training.fit.objectives import TaskSpec
from training.fit.task_model import TaskModel
from training.fit.trunk_cache import CACHE_DTYPES, TrunkStates

log = logging.getLogger(__name__)
# Batches are drawn from windows of this many batches sorted by length: most of the
# speed of length-sorted batching, with the randomness of a shuffle.
_BUCKET_WINDOW_BATCHES = 50
PAIR_ORDERS = ("ab", "ba", "both")
# A validation split smaller than this moves accuracy by a point or more per example: its
# metric ties or jumps by chance between epochs (15 examples scored 1.0 from the first
# epoch of a 150-row task, and the untrained first epoch was kept), so its loss, which
# every example moves a little, chooses the epoch.
SMALL_VALIDATION = 100
# With no epoch count given, a run makes at least this many optimizer steps: the presets'
# thousands of rows reach it within MIN_EPOCHS, a file of a few hundred rows takes more
# epochs (150 rows in batches of 32 are 5 steps an epoch: the third epoch answered 10 of
# 12 held-out sentences right, 7 with a top probability of 0.6 or more; the twentieth,
# all 12, each with 0.6 or more: tests/training/test_user_tasks.py).
MIN_UPDATES = 100
MIN_EPOCHS = 3
MAX_EPOCHS = 50


def epochs_for(train_rows: int, batch_size: int) -> int:
    """The default epoch count: MIN_EPOCHS, or enough for MIN_UPDATES steps on a small
    file (at most MAX_EPOCHS)."""
    steps_per_epoch = max(1, -(-train_rows // batch_size))
    return max(MIN_EPOCHS, min(MAX_EPOCHS, -(-MIN_UPDATES // steps_per_epoch)))


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one branch; recorded verbatim in branch.json."""

    layers: int
    # None: by the data's size (`epochs_for`); `resolved` fixes it before a run.
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    head_lr: float = 1e-3
    warmup: float = 0.1
    weight_decay: float = 0.01
    pooling: str = "cls"
    seed: int = 0
    max_grad_norm: float = 1.0
    trunk_cache: bool = True
    cache_budget_mb: float = 2048.0
    cache_dtype: str = "float32"
    # Beyond the memory budget, this many MB of trunk states go to a temporary file.
    cache_disk_budget_mb: float = 0.0
    # Sentence pairs: train on (a, b) as given, on (b, a), or on both orders (twice the
    # examples; the model then cannot lean on which sentence comes first).
    pair_order: str = "ab"
    # Full fine-tuning (embeddings too; needs layers = L): the reference, not a branch.
    train_embeddings: bool = False
    # Each batch runs as this many smaller passes whose gradients are summed (same
    # update as the whole batch, up to rounding), for batches that do not fit in memory.
    grad_accumulation: int = 1

    def __post_init__(self) -> None:
        checks = {
            "epochs must be >= 1": self.epochs is None or self.epochs >= 1,
            "batch size must be >= 1": self.batch_size >= 1,
            "gradient accumulation must be 1..batch size": (
                1 <= self.grad_accumulation <= max(1, self.batch_size)
            ),
            "learning rates must be > 0": self.lr > 0 and self.head_lr > 0,
            "warmup must be a fraction in [0, 1)": 0 <= self.warmup < 1,
            "cache budgets must be >= 0": self.cache_budget_mb >= 0
            and self.cache_disk_budget_mb >= 0,
            f"cache dtype must be one of {', '.join(CACHE_DTYPES)}": (
                self.cache_dtype in CACHE_DTYPES
            ),
            f"pair order must be one of {', '.join(PAIR_ORDERS)}": self.pair_order in PAIR_ORDERS,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    def resolved(self, train_rows: int) -> TrainConfig:
        """This config with its epoch count fixed for `train_rows` training rows."""
        if self.epochs is not None:
            return self
        return replace(self, epochs=epochs_for(train_rows, self.batch_size))


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_metric: float
    seconds: float


class Selection:
    """How the kept epoch is chosen from the validation scores."""

    METRIC = "metric"  # the task's metric; of tied epochs, the lower validation loss
    LOSS = "loss"  # the validation loss alone (a small split)

    @staticmethod
    def for_split(val_examples: int) -> str:
        return Selection.LOSS if val_examples < SMALL_VALIDATION else Selection.METRIC

    @staticmethod
    def improves(stats: EpochStats, best: EpochStats | None, rule: str) -> bool:
        """Whether `stats` beats the best epoch so far (None: no epoch yet); a full tie
        keeps the earlier epoch."""
        if best is None:
            return True
        if rule == Selection.LOSS:
            return stats.val_loss < best.val_loss
        return (stats.val_metric, -stats.val_loss) > (best.val_metric, -best.val_loss)


@dataclass
class TrainResult:
    model: TaskModel
    best_epoch: int
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0
    selection: str = Selection.METRIC
    # The kept epoch's raw outputs on validation, where the kind tunes on them after
    # training (multilabel: its thresholds); None otherwise.
    val_outputs: np.ndarray | None = None

    @property
    def best(self) -> EpochStats:
        return self.history[self.best_epoch - 1]

    def validation_summary(self, spec: TaskSpec, val_examples: int) -> dict:
        return {
            "metric": spec.metric_name,
            "value": self.best.val_metric,
            "loss": self.best.val_loss,
            "examples": val_examples,
            "best_epoch": self.best_epoch,
            "selected_by": self.selection,
            "history": [asdict(stats) for stats in self.history],
        }


def encode_examples(
    tokenizer: PairTokenizer, spec: TaskSpec, examples: Sequence[Example]
) -> list[EncodedRow]:
    texts_a = [example.text_a for example in examples]
    if not spec.pair:
        return tokenizer.encode(texts_a)
    texts_b = [example.text_b or "" for example in examples]
    return tokenizer.encode(texts_a, texts_b)


def training_examples(
    spec: TaskSpec, examples: Sequence[Example], pair_order: str
) -> list[Example]:
    """The rows a run trains on: the examples, pairs in the configured sentence order."""
    return order_pairs(examples, pair_order) if spec.pair else list(examples)


def order_pairs(examples: Sequence[Example], pair_order: str) -> list[Example]:
    """Training examples in the configured sentence order (validation keeps the file's)."""
    swapped = [replace(e, text_a=e.text_b or "", text_b=e.text_a) for e in examples]
    if pair_order == "ab":
        return list(examples)
    if pair_order == "ba":
        return swapped
    return [*examples, *swapped]


def labels_of(examples: Sequence[Example]) -> torch.Tensor:
    return torch.tensor([example.label for example in examples], dtype=torch.float32)


def _bucketed_batches(
    rows: Sequence[EncodedRow], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    order = torch.randperm(len(rows), generator=generator).tolist()
    window = batch_size * _BUCKET_WINDOW_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(rows[i]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


class _BranchFromTrunk(torch.nn.Module):
    """The trainable part as one module whose forward is a training step's forward:
    what DistributedDataParallel wraps to sum the branch's gradients across ranks."""

    def __init__(self, model: TaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.forward_from_trunk(hidden, attention_mask)


@torch.no_grad()
def predict(model: TaskModel, states: TrunkStates, count: int, batch_size: int) -> np.ndarray:
    """Raw head outputs for examples 0..count-1, [count, num_outputs], in order."""
    model.eval()
    outputs = np.zeros((count, model.spec.num_outputs), dtype=np.float32)
    for start in range(0, count, batch_size):
        indices = list(range(start, min(start + batch_size, count)))
        batch = states.batch(indices)
        outputs[indices] = model.forward_from_trunk(batch.hidden, batch.attention_mask).numpy()
    return outputs


def score(spec: TaskSpec, outputs: np.ndarray, labels: torch.Tensor) -> tuple[float, float]:
    """(loss, metric) of raw outputs against labels."""
    loss = float(spec.loss(torch.from_numpy(outputs), labels))
    return loss, spec.metric(outputs, labels.numpy())


def _optimizer(model: TaskModel, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorm; the fresh head learns faster."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        lr = config.head_lr if name.startswith("head.") else config.lr
        decay = 0.0 if parameter.ndim == 1 else config.weight_decay
        groups.setdefault((lr, decay), []).append(parameter)
    return torch.optim.AdamW(
        [
            {"params": params, "lr": lr, "weight_decay": decay}
            for (lr, decay), params in groups.items()
        ]
    )


def _linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float):
    warmup_steps = int(total_steps * warmup)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def micro_batches(indices: Sequence[int], parts: int) -> list[list[int]]:
    """A batch cut into `parts` consecutive slices of near-equal size (none empty)."""
    parts = min(parts, len(indices))
    size, extra = divmod(len(indices), parts)
    slices, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        slices.append(list(indices[start:end]))
        start = end
    return slices


class CheckpointMismatchError(ValueError):
    """A checkpoint that belongs to another run (arguments, data or base differ)."""


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous epoch's checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=False)
    if state.get("fingerprint") != fingerprint:
        raise CheckpointMismatchError(
            f"{path} was written by a run with other arguments, data or base; "
            "delete it or drop --resume"
        )
    return state


@dataclass(frozen=True)
class Checkpoint:
    """Where a run keeps its per-epoch state, and whether to continue from it.

    `fingerprint` names the run (its arguments, data and base): a checkpoint of another
    run is refused instead of being continued.
    """

    path: Path
    fingerprint: str
    resume: bool = False


def build_trunk_states(
    model: TaskModel,
    tokenizer: PairTokenizer,
    rows: Sequence[EncodedRow],
    config: TrainConfig,
    budget_bytes: int | None = None,
    disk_budget_bytes: int | None = None,
    disk_dir: Path | None = None,
    progress: bool = False,
) -> TrunkStates:
    if budget_bytes is None:
        budget_bytes = int(config.cache_budget_mb * 2**20) if config.trunk_cache else 0
    if disk_budget_bytes is None:
        disk_budget_bytes = int(config.cache_disk_budget_mb * 2**20) if config.trunk_cache else 0
    if model.trains_embeddings:
        budget_bytes = disk_budget_bytes = 0  # nothing is frozen, so nothing to cache
    return TrunkStates(
        model,
        tokenizer,
        rows,
        budget_bytes,
        CACHE_DTYPES[config.cache_dtype],
        disk_budget_bytes=disk_budget_bytes,
        disk_dir=disk_dir,
        progress=progress,
    )


def train_branch(
    base: BertEncoder,
    tokenizer: PairTokenizer,
    spec: TaskSpec,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    config: TrainConfig,
    progress: bool = True,
    dist: DistContext | None = None,
    distillation: Distillation | None = None,
    checkpoint: Checkpoint | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Fine-tune a fresh branch of `config.layers` layers; return it at its best epoch.

    With `distillation`, the training loss mixes the labels with the teacher's outputs
    (training/fit/distill.py); validation still scores against the labels alone.
    Under torchrun (`dist`, by default the process's context) each rank caches and runs
    only its shard of every global batch; see training/fit/distributed.py.
    Trunk states beyond the memory budget go to a temporary file in `cache_dir` (default:
    the system's temporary directory) within `config.cache_disk_budget_mb`.
    With `checkpoint`, every completed epoch's state is saved there, and with
    `checkpoint.resume` a saved state is continued from (the file is removed once the
    run completes; the caller writes the branch).
    """
    dist = dist or current()
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = TaskModel(base, spec, config.layers, config.pooling, config.train_embeddings)
    train_examples = training_examples(spec, train_examples, config.pair_order)
    config = config.resolved(len(train_examples))

    train_rows = encode_examples(tokenizer, spec, train_examples)
    val_rows = encode_examples(tokenizer, spec, val_examples)
    train_shard, val_shard = dist.shard(len(train_rows)), dist.shard(len(val_rows))
    show = progress and dist.is_main
    train_states = build_trunk_states(
        model,
        tokenizer,
        [train_rows[i] for i in train_shard.indices],
        config,
        disk_dir=cache_dir,
        progress=show,
    )
    remaining = max(0, int(config.cache_budget_mb * 2**20) - train_states.used_bytes)
    disk_left = max(0, int(config.cache_disk_budget_mb * 2**20) - train_states.disk_bytes)
    val_states = build_trunk_states(
        model,
        tokenizer,
        [val_rows[i] for i in val_shard.indices],
        config,
        remaining if config.trunk_cache else 0,
        disk_left if config.trunk_cache else 0,
        disk_dir=cache_dir,
        progress=show,
    )
    train_labels, val_labels = labels_of(train_examples), labels_of(val_examples)
    taught = (
        teacher_outputs(
            distillation.teacher, tokenizer, [train_rows[i] for i in train_shard.indices]
        )
        if distillation
        else None
    )

    steps_per_epoch = -(-len(train_rows) // config.batch_size)
    optimizer = _optimizer(model, config)
    scheduler = _linear_schedule(optimizer, steps_per_epoch * config.epochs, config.warmup)
    result = TrainResult(model=model, best_epoch=0, selection=Selection.for_split(len(val_rows)))
    best_state: dict[str, torch.Tensor] = {}
    step = dist.wrap(_BranchFromTrunk(model))
    first_epoch = 1
    saved = (
        _load_checkpoint(checkpoint.path, checkpoint.fingerprint)
        if (checkpoint and checkpoint.resume)
        else None
    )
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        result.best_epoch = saved["best_epoch"]
        result.history = [EpochStats(**stats) for stats in saved["history"]]
        best_state = saved["best_state"]
        first_epoch = saved["epoch"] + 1
        log.info("%s: resuming after epoch %d from %s", spec.name, saved["epoch"], checkpoint.path)

    for epoch in range(first_epoch, config.epochs + 1):
        epoch_started = time.perf_counter()
        step.train()
        loss_sum = 0.0
        batches = _bucketed_batches(train_rows, config.batch_size, generator)
        bar = tqdm(
            batches,
            desc=f"{spec.name} epoch {epoch}/{config.epochs}",
            disable=not show,
        )
        for indices in bar:
            positions, mine = train_shard.own(indices)
            share = train_shard.share(indices)  # 1.0 in one process
            if not mine:  # none of this batch is ours: take part with a zero-weight row
                positions, mine = [0], [train_shard.indices[0]]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            for part in micro_batches(range(len(positions)), config.grad_accumulation):
                part_positions = [positions[i] for i in part]
                part_mine = [mine[i] for i in part]
                batch = train_states.batch(part_positions)
                outputs = step(batch.hidden, batch.attention_mask)
                if distillation is None:
                    part_loss = spec.loss(outputs, train_labels[part_mine])
                else:
                    part_loss = distillation_loss(
                        spec,
                        outputs,
                        train_labels[part_mine],
                        taught[part_positions],
                        distillation.config,
                    )
                weight = len(part) / len(positions)  # mean losses: rows' share of the batch
                (part_loss * weight * share).backward()
                loss = loss + part_loss.detach() * weight
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(indices) * share / dist.world_size
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        loss_sum = dist.sum(loss_sum)
        local = predict(model, val_states, len(val_shard.indices), config.batch_size * 2)
        outputs = dist.gather_rows(local, val_shard)
        val_loss, val_metric = score(spec, outputs, val_labels)
        stats = EpochStats(
            epoch=epoch,
            train_loss=loss_sum / len(train_rows),
            val_loss=val_loss,
            val_metric=val_metric,
            seconds=time.perf_counter() - epoch_started,
        )
        result.history.append(stats)
        log.info(
            "%s epoch %d: train loss %.4f, val loss %.4f, val %s %.4f (%.1fs)",
            spec.name,
            epoch,
            stats.train_loss,
            val_loss,
            spec.metric_name,
            val_metric,
            stats.seconds,
        )
        best = result.best if result.best_epoch else None
        if Selection.improves(stats, best, result.selection):
            result.best_epoch = epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if checkpoint is not None and dist.is_main and epoch < config.epochs:
            _save_checkpoint(
                checkpoint.path,
                {
                    "fingerprint": checkpoint.fingerprint,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "best_epoch": result.best_epoch,
                    "history": [asdict(stats) for stats in result.history],
                    "best_state": best_state,
                },
            )

    dist.check_same(result.best_epoch, "the best epoch")
    model.load_state_dict(best_state)
    model.eval()
    if spec.kind == "multilabel":
        local = predict(model, val_states, len(val_shard.indices), config.batch_size * 2)
        result.val_outputs = dist.gather_rows(local, val_shard)
    result.seconds = time.perf_counter() - started
    return result
