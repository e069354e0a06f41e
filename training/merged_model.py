"""Several task branches over one shared trunk, as a single PyTorch module.

With branch depths K_i on an L-layer base, the shared trunk is the embeddings and
layers [0, L - max K_i): everything no task changed. Each task's path is then
  - the unchanged base layers between the trunk and its own tuned layers
    ([L - max K_i, L - K_i), empty for the deepest branch),
  - its K_i tuned layers, and its head.
The trunk runs once on the whole batch; each path runs only on the rows whose task id
selects it (ONNX Runtime executes every node of a graph whatever outputs are asked
for, so routing rows is what keeps one task's traffic from paying for the others).
Each task's output holds its rows in the order they appear in the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from training.base_model import Encoder
from training.bert import run_layers
from training.task_model import TaskHead, TaskModel, pool

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "task_ids")


def output_name(task: str) -> str:
    return f"{task}_logits"


class TaskPath(nn.Module):
    """From the top of the shared trunk to one task's raw outputs."""

    def __init__(self, bridge: Sequence[nn.Module], branch: TaskModel) -> None:
        super().__init__()
        # Copies (of the layers, not of the base the task model points to), so the
        # merged model owns its weights and never aliases a model still in use.
        self.layers = copy.deepcopy(nn.ModuleList([*bridge, *branch.branch_layers]))
        self.head: TaskHead = copy.deepcopy(branch.head)
        self.pooling = branch.pooling

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        position_bias: nn.Module | None = None,
    ) -> torch.Tensor:
        hidden = run_layers(self.layers, hidden, attention_mask, position_bias)
        return self.head(pool(hidden, attention_mask, self.pooling))


class MergedModel(nn.Module):
    """Embeddings + shared trunk + one routed path per task; eval-only.

    forward(input_ids, attention_mask, token_type_ids, task_ids) returns one tensor per
    task, in `task_names` order: [rows of that task, num_outputs]. task_ids[i] is the
    index in `task_names` of row i's task.
    """

    def __init__(self, base: Encoder, branches: Sequence[TaskModel]) -> None:
        super().__init__()
        if not branches:
            raise ValueError("merging needs at least one branch")
        names = [branch.spec.name for branch in branches]
        if len(set(names)) != len(names):
            raise ValueError(f"one branch per task, got {names}")
        self.task_names = tuple(names)
        self.trunk_depth = min(branch.trunk_depth for branch in branches)
        self.embeddings = copy.deepcopy(base.embeddings)
        self.trunk = nn.ModuleList(copy.deepcopy(base.layers[: self.trunk_depth]))
        # MPNet's relative position bias (None for BERT), shared by the trunk and paths.
        self.position_bias = copy.deepcopy(base.position_bias)
        self.paths = nn.ModuleDict(
            {
                branch.spec.name: TaskPath(
                    base.layers[self.trunk_depth : branch.trunk_depth], branch
                )
                for branch in branches
            }
        )
        self.eval()
        self.requires_grad_(False)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        task_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        hidden = run_layers(
            self.trunk,
            self.embeddings(input_ids, token_type_ids),
            attention_mask,
            self.position_bias,
        )
        outputs = []
        for task_index, name in enumerate(self.task_names):
            rows = torch.nonzero(task_ids == task_index).reshape(-1)
            outputs.append(
                self.paths[name](
                    hidden.index_select(0, rows),
                    attention_mask.index_select(0, rows),
                    self.position_bias,
                )
            )
        return tuple(outputs)
