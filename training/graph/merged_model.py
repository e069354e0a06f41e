"""Several task branches over the shared frozen layers, as one tree-shaped module.

On an L-layer base, task t tuned its top K_t layers; its fork depth is f_t = L - K_t.
The frozen base layers [0, max f_t) appear once in the module (and in the exported
graph); every task's branch takes the hidden state at its own fork depth and runs its
K_t tuned layers and its head. This is the merged model of Wei et al.: the frozen
layers are shared whatever the depths, not only those below the deepest branch.

Rows carry a task membership mask, so one input can ask several tasks at once:
  - a row's need is the deepest fork among its tasks; frozen layer d runs only on the
    rows whose need is above d (nested active sets, narrowed at each distinct fork
    depth), so a row of one task costs exactly L layers, as a single-task model does,
    and a row of a set S costs max_{t in S} f_t + sum_{t in S} K_t;
  - each task gathers its rows at its fork depth and answers them in batch order.
ONNX Runtime executes every node of a graph whatever outputs are asked for, so this
routing is what keeps one task's traffic from paying for the others.

The routing is written so that ONNX Runtime's transformer optimizer still fuses every
layer of every path (`training.graph.fusion`): rows are selected with a boolean mask
(ONNX `Compress`, not an index `Gather`, which the optimizer takes for an embedding
lookup and then will not fuse the residual Add + LayerNorm behind it), and each path
that starts at depth 0 selects its rows of the integer inputs and runs the embeddings
itself, so that its embeddings feed its first attention directly (the pattern of
EmbedLayerNormalization). A row asking a task that forks at 0 and a deeper one is then
embedded twice: a table lookup and a LayerNorm, next to L layers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from training.encoders.base_model import Encoder
from training.encoders.bert import run_layers
from training.fit.task_model import TaskHead, TaskModel, pool
from training.graph.fused_attention import run_fused_layers

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "task_mask")


def output_name(task: str) -> str:
    return f"{task}_logits"


def layer_evaluations(fork_depths: Sequence[int], num_layers: int) -> int:
    """Layers one input runs for a set of tasks forking at `fork_depths`: the frozen
    layers up to the deepest fork once, then each task's own K = L - f layers."""
    return max(fork_depths) + sum(num_layers - fork for fork in fork_depths)


class TaskBranch(nn.Module):
    """From a task's fork depth to its raw outputs: its K tuned layers and its head."""

    def __init__(self, branch: TaskModel) -> None:
        super().__init__()
        # Copies (of the layers, not of the base the task model points to), so the
        # merged model owns its weights and never aliases a model still in use.
        self.layers = copy.deepcopy(branch.branch_layers)
        self.head: TaskHead | nn.Identity = copy.deepcopy(branch.head)
        self.pooling = branch.pooling

    def forward(
        self,
        hidden: torch.Tensor,
        attention_mask: torch.Tensor,
        position_bias: nn.Module | torch.Tensor | None = None,
        fused_attention: bool = False,
    ) -> torch.Tensor:
        hidden = run_path(self.layers, hidden, attention_mask, position_bias, fused_attention)
        return self.head(pool(hidden, attention_mask, self.pooling))


def run_path(
    layers: nn.ModuleList,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    position_bias: nn.Module | torch.Tensor | None,
    fused_attention: bool,
) -> torch.Tensor:
    """One path's layers: as trained, or with the attention fused for an export
    (`training.graph.fused_attention`, MPNet, where `position_bias` is the tensor)."""
    if fused_attention and len(layers):
        return run_fused_layers(layers, hidden, attention_mask, position_bias)
    return run_layers(layers, hidden, attention_mask, position_bias)


class MergedModel(nn.Module):
    """Embeddings + the frozen layers once + one branch per task at its fork; eval-only.

    forward(input_ids, attention_mask, token_type_ids, task_mask) returns one tensor
    per task, in `task_names` order: [rows asking that task, num_outputs], rows in batch
    order. task_mask[i, t] (bool) says whether row i asks task t.
    """

    def __init__(self, base: Encoder, branches: Sequence[TaskModel]) -> None:
        super().__init__()
        if not branches:
            raise ValueError("merging needs at least one branch")
        names = [branch.spec.name for branch in branches]
        if len(set(names)) != len(names):
            raise ValueError(f"one branch per task, got {names}")
        self.task_names = tuple(names)
        self.model_type = base.config.model_type  # "bert" or "mpnet"
        self.num_layers = base.num_layers
        self.fork_depths = tuple(branch.trunk_depth for branch in branches)
        # Layers every task shares (the old trunk), and frozen layers held in the graph.
        self.trunk_depth = min(self.fork_depths)
        self.frozen_depth = max(self.fork_depths)
        self.embeddings = copy.deepcopy(base.embeddings)
        self.frozen = nn.ModuleList(copy.deepcopy(base.layers[: self.frozen_depth]))
        # MPNet's relative position bias (None for BERT), shared by the frozen layers
        # and every branch.
        self.position_bias = copy.deepcopy(base.position_bias)
        # Set only while an export writes the fused attention nodes itself.
        self.fused_attention = False
        self.branches = nn.ModuleDict({b.spec.name: TaskBranch(b) for b in branches})
        self.register_buffer(
            "forks", torch.tensor(self.fork_depths, dtype=torch.long), persistent=False
        )
        self.eval()
        self.requires_grad_(False)

    def layer_evaluations(self, tasks: Sequence[str]) -> int:
        forks = [self.fork_depths[self.task_names.index(task)] for task in tasks]
        return layer_evaluations(forks, self.num_layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        task_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        asks = task_mask.to(torch.bool)
        # The deepest fork any of a row's tasks needs (0 for a row asking nothing).
        need = (asks.to(torch.long) * self.forks).amax(dim=1)
        # The relative position bias depends on the length alone: one tensor for the
        # batch, shared by every layer of every path.
        position = (
            self.position_bias.for_length(input_ids.shape[1])
            if self.position_bias is not None
            else None
        )
        at_fork: dict[int, _Rows] = {}
        deeper = sorted({fork for fork in self.fork_depths if fork > 0})
        if deeper:
            # The frozen path: rows needing layers [0, f) for the first fork f > 0, then
            # narrowed at each deeper fork to the rows that still need more.
            frozen = need > 0
            rows = self._embedded_rows(input_ids, attention_mask, token_type_ids, frozen)
            rows = rows._replace(asks=select_rows(asks, frozen), need=select_rows(need, frozen))
            depth = 0
            for fork in deeper:
                if depth:
                    rows = rows.select(rows.need >= fork)
                hidden = run_path(
                    self.frozen[depth:fork],
                    rows.hidden,
                    rows.attention_mask,
                    position,
                    self.fused_attention,
                )
                at_fork[fork] = rows = rows._replace(hidden=hidden)
                depth = fork
        outputs = []
        for task_index, name in enumerate(self.task_names):
            fork = self.fork_depths[task_index]
            if fork == 0:
                mine = self._embedded_rows(
                    input_ids, attention_mask, token_type_ids, asks[:, task_index]
                )
            else:
                mine = at_fork[fork].select(at_fork[fork].asks[:, task_index])
            outputs.append(
                self.branches[name](
                    mine.hidden, mine.attention_mask, position, self.fused_attention
                )
            )
        return tuple(outputs)

    def _embedded_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        keep: torch.Tensor,
    ) -> _Rows:
        """The embeddings of the rows where `keep` is true (a path starting at depth 0)."""
        hidden = self.embeddings(select_rows(input_ids, keep), select_rows(token_type_ids, keep))
        return _Rows(hidden, select_rows(attention_mask, keep))


class _Rows(NamedTuple):
    """The rows one path carries, in batch order: hidden states, their attention mask,
    and (on the frozen path) the tasks they ask and the depth they need."""

    hidden: torch.Tensor
    attention_mask: torch.Tensor
    asks: torch.Tensor | None = None
    need: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> _Rows:
        return _Rows(*(select_rows(part, keep) if part is not None else None for part in self))


class _SelectRows(torch.autograd.Function):
    """x[keep] along the rows, exported as ONNX Compress (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return x[keep]

    @staticmethod
    def symbolic(g, x, keep):
        return g.op("Compress", x, keep, axis_i=0)


def select_rows(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The rows of `x` where the bool vector `keep` is true, in order."""
    return _SelectRows.apply(x, keep)
