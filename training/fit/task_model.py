"""A single-task model: the frozen base, a tuned copy of its top K layers, and a head.

The branch layers are *copies* of the base's top K layers, so the base encoder object
is never written to: it can be shared by several task models, and the trunk tensors
stay bit-identical to the checkpoint by construction (a test checks it anyway).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from training.encoders.base_model import Encoder
from training.encoders.bert import run_layers
from training.fit.objectives import TaskSpec

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce [batch, seq, hidden] to [batch, hidden]: the [CLS] vector or a masked mean."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")


class TaskHead(nn.Module):
    """Dropout and one linear layer from the pooled vector to the task's outputs."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_outputs)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))


class TaskModel(nn.Module):
    """Base encoder + branch (top K layers, tuned) + head, for one task.

    With `train_embeddings=True` (which needs K = L) nothing is frozen: the embeddings are
    copied and tuned too. That is full fine-tuning, the reference a partial model is
    judged against; such a model has no shared trunk, so it cannot be saved as a branch.
    """

    def __init__(
        self,
        base: Encoder,
        spec: TaskSpec,
        branch_depth: int,
        pooling: str,
        train_embeddings: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
        if spec.kind == "embedding":
            # The base's own sentence embedding: no tuned layers, it forks at the top.
            if branch_depth != 0 or pooling != "mean" or train_embeddings:
                raise ValueError("an embedding task has no tuned layers (K = 0), mean pooling")
            self.trunk_depth = base.num_layers
        else:
            self.trunk_depth = base.trunk_depth(branch_depth)
        if train_embeddings and self.trunk_depth:
            raise ValueError(
                f"tuning the embeddings needs all {base.num_layers} layers tuned, "
                f"not {branch_depth}"
            )
        self.embeddings = (
            copy.deepcopy(base.embeddings).requires_grad_(True) if train_embeddings else None
        )
        self.spec = spec
        self.pooling = pooling
        # Kept out of the module tree (not a registered submodule) so that
        # parameters()/state_dict() cover exactly the branch: what is trained and saved.
        self._base = [base]
        self.branch_layers = nn.ModuleList(
            copy.deepcopy(layer) for layer in base.layers[self.trunk_depth :]
        )
        self.branch_layers.requires_grad_(True)
        # An embedding's "head" is the pooled vector itself (normalised when it is read).
        self.head: nn.Module = (
            nn.Identity()
            if spec.kind == "embedding"
            else TaskHead(
                base.config.hidden_size, spec.num_outputs, base.config.hidden_dropout_prob
            )
        )

    @property
    def base(self) -> Encoder:
        return self._base[0]

    @property
    def branch_depth(self) -> int:
        return len(self.branch_layers)

    @property
    def first_branch_layer(self) -> int:
        return self.trunk_depth

    @property
    def trains_embeddings(self) -> bool:
        return self.embeddings is not None

    def run_trunk(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        """Frozen part, always in eval mode (no dropout): its output is a pure function
        of the input, which is what makes caching it during training exact. Under full
        fine-tuning it is just the model's own (trainable) embeddings."""
        if self.embeddings is not None:
            return self.embeddings(input_ids, token_type_ids)
        return self._frozen_trunk(input_ids, attention_mask, token_type_ids)

    @torch.no_grad()
    def _frozen_trunk(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        if self.base.training:
            self.base.eval()
        return self.base.run_trunk(input_ids, attention_mask, token_type_ids, self.trunk_depth)

    def forward_from_trunk(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = run_layers(self.branch_layers, hidden, attention_mask, self.base.position_bias)
        return self.head(pool(hidden, attention_mask, self.pooling))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.run_trunk(input_ids, attention_mask, token_type_ids)
        return self.forward_from_trunk(hidden, attention_mask)

    def branch_state(self) -> dict[str, torch.Tensor]:
        """The branch's tensors under checkpoint-style names with absolute layer indices
        (`encoder.layer.{i}.*`, `head.*`), so a saved branch says which layers it replaces."""
        if self.embeddings is not None:
            raise ValueError("a fully fine-tuned model is a reference, not a branch: no trunk")
        state: dict[str, torch.Tensor] = {}
        for offset, layer in enumerate(self.branch_layers):
            index = self.first_branch_layer + offset
            for key, tensor in layer.state_dict().items():
                state[f"encoder.layer.{index}.{key}"] = tensor
        for key, tensor in self.head.state_dict().items():
            state[f"head.{key}"] = tensor
        return state

    def load_branch_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `branch_state`; strict, so a branch of another shape is refused."""
        local: dict[str, torch.Tensor] = {}
        for key, tensor in state.items():
            if key.startswith("encoder.layer."):
                index, rest = key[len("encoder.layer.") :].split(".", 1)
                local[f"branch_layers.{int(index) - self.first_branch_layer}.{rest}"] = tensor
            else:
                local[key] = tensor
        self.load_state_dict(local, strict=True)
