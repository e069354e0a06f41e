"""Train one task's branch from its data, and save it: what `bert-mts-train` runs per task.

Typed arguments only (the command, `training.commands.train`, turns options into them):
the task, its data and how it is split, the base and tokenizer, the training config.
Everything a run did is recorded in the branch's branch.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from model_store.tokenizer import PairTokenizer
from training.data.examples import Example
from training.data.source import DataSource
from training.data.split import split_train_val
from training.encoders.base_model import BaseModel
from training.errors import UsageError
from training.fit import distributed
from training.fit.branch import branch_megabytes, save_branch
from training.fit.distill import Distillation
from training.fit.objectives import TaskSpec
from training.fit.thresholds import tuned_summary, with_tuned_thresholds
from training.fit.trainer import (
    Checkpoint,
    CheckpointMismatchError,
    Selection,
    TrainConfig,
    train_branch,
    training_examples,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataPlan:
    """How a task's file is read and split: at most `limit` rows, a seeded validation
    split of `val_fraction`."""

    limit: int | None
    val_fraction: float
    split_seed: int


@dataclass(frozen=True)
class TaskData:
    source: DataSource
    train: list[Example]
    val: list[Example]
    skipped: int


@dataclass(frozen=True)
class Trained:
    """A saved branch and the line that reports it."""

    path: Path
    summary: str


def load_task_data(spec: TaskSpec, source: DataSource, plan: DataPlan) -> TaskData:
    """Read and split one task's file; all tasks are loaded before any training starts,
    so a malformed file stops the run at once rather than after minutes of training."""
    loaded = source.read(spec.parse_label, limit=plan.limit)
    if loaded.skipped:
        lines = ", ".join(map(str, loaded.skipped_lines[:10]))
        log.warning("%s: skipped %d malformed rows (lines %s)", source.path, loaded.skipped, lines)
    try:
        train, val = split_train_val(loaded.examples, plan.val_fraction, plan.split_seed)
    except ValueError as err:
        raise UsageError(f"{source.path}: {err}") from err
    return TaskData(source, train, val, loaded.skipped)


def train_task(
    spec: TaskSpec,
    data: TaskData,
    base: BaseModel,
    tokenizer: PairTokenizer,
    config: TrainConfig,
    plan: DataPlan,
    out: Path,
    *,
    distillation: Distillation | None = None,
    progress: bool = True,
    resume: bool = False,
    cache_dir: Path | None = None,
) -> Trained | None:
    """Train and save the branch under `out` (None on the ranks other than 0 under
    torchrun: every rank holds the same branch; rank 0 writes it).

    Every completed epoch is checkpointed under `out/.checkpoints/` (see
    `run_checkpoint`); with `resume`, a checkpoint of this very run is continued.
    A config without an epoch count gets the one the data's size calls for (recorded)."""
    log.info(
        "%s: %d train / %d validation examples from %s",
        spec.name,
        len(data.train),
        len(data.val),
        data.source.path,
    )
    if config.epochs is None:
        rows = len(training_examples(spec, data.train, config.pair_order))
        config = config.resolved(rows)
        log.info(
            "%s: %d epochs of %d rows in batches of %d (the default for this size; "
            "--epochs N to choose)",
            spec.name,
            config.epochs,
            rows,
            config.batch_size,
        )
    training_args = {
        **asdict(config),
        "max_seq_len": tokenizer.max_seq_len,
        "val_fraction": plan.val_fraction,
        "split_seed": plan.split_seed,
        "limit": plan.limit,
        "train_file": str(data.source.path),
        "data": data.source.to_json(),
        "train_examples": len(data.train),
        "skipped_rows": data.skipped,
    }
    if distillation is not None:
        training_args["distillation"] = distillation.record()
    checkpoint = run_checkpoint(spec, data, base, training_args, out, resume)
    try:
        result = train_branch(
            base.encoder,
            tokenizer,
            spec,
            data.train,
            data.val,
            config,
            progress=progress,
            distillation=distillation,
            checkpoint=checkpoint,
            cache_dir=cache_dir,
        )
    except CheckpointMismatchError as err:
        raise UsageError(str(err)) from err
    if not distributed.current().is_main:
        return None
    if result.val_outputs is not None:
        spec = with_tuned_thresholds(result, spec, data.val)
    validation = result.validation_summary(spec, len(data.val))
    if result.val_outputs is not None:
        validation.update(tuned_summary(result, spec, data.val))
    validation["train_seconds"] = round(result.seconds, 3)
    path = save_branch(result.model, base, tokenizer, out, validation, training_args)
    if checkpoint is not None:
        checkpoint.path.unlink(missing_ok=True)  # the branch is written: nothing to resume
    chosen = " by validation loss" if result.selection == Selection.LOSS else ""
    summary = (
        f"{spec.name}: validation {spec.metric_name} {validation['value']:.4f} "
        f"(epoch {result.best_epoch}/{config.epochs}{chosen}, {result.seconds:.1f}s), "
        f"{branch_megabytes(path):.1f} MB -> {path}"  # the path last: scripts take it
    )
    return Trained(path, summary)


def run_checkpoint(
    spec: TaskSpec,
    data: TaskData,
    base: BaseModel,
    training_args: dict,
    out: Path,
    resume: bool,
) -> Checkpoint | None:
    """Where this run keeps its per-epoch state: named by everything that decides the
    branch (task, arguments, the examples themselves, the base), so a checkpoint is only
    ever continued by the run that wrote it. None under torchrun (not supported there)."""
    if distributed.current().world_size > 1:
        if resume:
            raise UsageError("--resume is not supported under torchrun")
        return None
    digest = hashlib.sha256()
    record = {
        "task": spec.definition.to_json(),
        "args": training_args,
        "base": base.spec.name,
        "base_weights": base.weights_sha256,
    }
    digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    for example in (*data.train, *data.val):
        digest.update(repr((example.text_a, example.text_b, example.label)).encode())
    fingerprint = digest.hexdigest()
    path = out / ".checkpoints" / f"{spec.name}-{fingerprint[:16]}.pt"
    if resume and not path.is_file():
        log.warning(
            "%s: no checkpoint of this run to resume (%s); starting at epoch 1", spec.name, path
        )
    return Checkpoint(path=path, fingerprint=fingerprint, resume=resume)
