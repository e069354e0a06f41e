"""Knowledge distillation of a branch: the method's second step (Wei et al., ACL 2022).

A shallow student branch shares more frozen layers with the other tasks but fits its
task less well than a deep one. Distillation lets it learn from a deeper *teacher*
branch of the same task as well as from the labels: the student's loss is

    alpha * soft + (1 - alpha) * hard

where `hard` is the task's own loss against the labels and `soft` compares the student
with the teacher: cross-entropy to the teacher's probabilities softened at temperature
T, times T^2 (so the gradient's scale does not shrink as T grows; Hinton et al. 2015),
for classification and binary tasks; mean squared error to the teacher's score for
regression. The teacher never changes during training and runs without dropout, so its
outputs are computed once per training example, before the first epoch, and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from model_store.tokenizer import EncodedRow, PairTokenizer
from training.encoders.base_model import BaseModel
from training.errors import BranchError
from training.fit.branch import BranchInfo, load_branch, read_branch_info, resolve_branch_dir
from training.fit.objectives import TaskSpec
from training.fit.task_model import TaskModel

DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class DistillConfig:
    """How much the student listens to the teacher, and how softly."""

    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA  # weight of the teacher's term; 1 - alpha on the labels

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"the distillation temperature must be > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"the distillation alpha must be in [0, 1], got {self.alpha}")


@dataclass(frozen=True)
class Teacher:
    """A loaded teacher branch and what branch.json says of it."""

    model: TaskModel
    info: BranchInfo

    def describe(self) -> dict[str, Any]:
        """What a student's branch.json records of its teacher: enough to find it again
        (version, weights hash) and to judge it (depth, validation metric)."""
        validation = self.info.meta.get("validation", {})
        return {
            "path": str(self.info.path),
            "task": self.info.task,
            "version": self.info.version,
            "weights_sha256": self.info.meta.get("weights_sha256"),
            "layers": self.info.layers,
            "validation": {
                "metric": validation.get("metric"),
                "value": validation.get("value"),
            },
        }


@dataclass(frozen=True)
class Distillation:
    """A teacher and the loss settings: what `train_branch` needs to distil."""

    teacher: Teacher
    config: DistillConfig

    def record(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher.describe(),
            "temperature": self.config.temperature,
            "alpha": self.config.alpha,
        }


def load_teacher(
    path: str | Path, base: BaseModel, tokenizer: PairTokenizer, spec: TaskSpec
) -> Teacher:
    """Load the teacher branch at `path` (a version, or a task directory meaning its
    newest version), refusing one that cannot teach this student: another base model,
    another tokenizer, or another task definition (name, kind, input, labels, range)."""
    info = read_branch_info(resolve_branch_dir(path))
    if info.definition != spec.definition:
        raise BranchError(
            f"teacher {info.path} is a branch of {info.definition.describe()}, "
            f"but the student is {spec.definition.describe()}: a teacher must have the "
            "student's task definition"
        )
    teacher_tokenizer = info.meta.get("tokenizer_sha256")
    if teacher_tokenizer not in (None, tokenizer.sha256):
        raise BranchError(
            f"teacher {info.path} used another tokenizer (sha256 {teacher_tokenizer[:12]}…, "
            f"the student's is {tokenizer.sha256[:12]}…)"
        )
    model, _ = load_branch(info, base)  # refuses another base, or corrupt weights
    model.requires_grad_(False)
    return Teacher(model=model, info=info)


@torch.no_grad()
def teacher_outputs(
    teacher: Teacher, tokenizer: PairTokenizer, rows: Sequence[EncodedRow], batch_size: int = 64
) -> torch.Tensor:
    """The teacher's raw outputs for every row, [rows, outputs], in row order.

    Computed once, in length-sorted batches (little padding), so that distillation
    costs one teacher pass over the training set rather than one per epoch."""
    model = teacher.model.eval()
    outputs = torch.zeros(len(rows), model.spec.num_outputs)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = tokenizer.pad([rows[i] for i in indices])
        outputs[indices] = model(
            torch.from_numpy(batch.input_ids),
            torch.from_numpy(batch.attention_mask),
            torch.from_numpy(batch.token_type_ids),
        )
    return outputs


def soft_loss(
    kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The student's distance from the teacher, by task kind (see the module docstring)."""
    if kind == "classification":
        targets = F.softmax(teacher / temperature, dim=-1)
        log_probs = F.log_softmax(student / temperature, dim=-1)
        return -(targets * log_probs).sum(dim=-1).mean() * temperature**2
    if kind == "multilabel":  # each label's sigmoid, as binary's one
        targets = torch.sigmoid(teacher / temperature)
        loss = F.binary_cross_entropy_with_logits(student / temperature, targets)
        return loss * temperature**2
    if kind == "binary":
        targets = torch.sigmoid(teacher[:, 0] / temperature)
        loss = F.binary_cross_entropy_with_logits(student[:, 0] / temperature, targets)
        return loss * temperature**2
    return F.mse_loss(student[:, 0], teacher[:, 0])


def distillation_loss(
    spec: TaskSpec,
    student: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor,
    config: DistillConfig,
) -> torch.Tensor:
    """alpha * soft + (1 - alpha) * hard."""
    hard = spec.loss(student, labels)
    if config.alpha == 0:
        return hard
    soft = soft_loss(spec.kind, student, teacher, config.temperature)
    return config.alpha * soft + (1 - config.alpha) * hard
