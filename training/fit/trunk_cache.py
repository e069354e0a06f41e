"""Compute the frozen trunk once per example instead of once per epoch.

The trunk (embeddings + layers [0, L-K)) is frozen and runs without dropout, so its
output for an example is the same in every epoch. Caching it turns each epoch after
the first into a top-K-layers-only computation. Memory is bounded: examples are cached
in order until the budget is spent, and the rest are recomputed when their batch comes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model_store.tokenizer import EncodedRow, PairTokenizer
from training.fit.task_model import TaskModel

CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class TrunkBatch:
    """What the branch needs for one batch: trunk states and the attention mask."""

    hidden: torch.Tensor  # float32 [batch, seq, hidden]
    attention_mask: torch.Tensor  # int64 [batch, seq]


class TrunkStates:
    """Trunk outputs for a fixed list of encoded examples, cached within a byte budget.

    With `budget_bytes=0` nothing is cached and every batch runs the trunk: the
    uncached baseline the benchmark compares against.
    """

    def __init__(
        self,
        model: TaskModel,
        tokenizer: PairTokenizer,
        rows: Sequence[EncodedRow],
        budget_bytes: int,
        dtype: torch.dtype = torch.float32,
        fill_batch_size: int = 64,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._rows = rows
        self._dtype = dtype
        self._cache: dict[int, torch.Tensor] = {}
        self.used_bytes = 0
        self._fill(budget_bytes, fill_batch_size)

    @property
    def cached_count(self) -> int:
        return len(self._cache)

    def _inputs(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self._tokenizer.pad([self._rows[i] for i in indices])
        return (
            torch.from_numpy(batch.input_ids),
            torch.from_numpy(batch.attention_mask),
            torch.from_numpy(batch.token_type_ids),
        )

    def _fill(self, budget_bytes: int, batch_size: int) -> None:
        """Cache in length-sorted batches (little padding) until the budget is spent."""
        hidden_size = self._model.base.config.hidden_size
        itemsize = torch.empty((), dtype=self._dtype).element_size()
        chosen: list[int] = []
        for index, row in enumerate(self._rows):
            cost = len(row) * hidden_size * itemsize
            if self.used_bytes + cost > budget_bytes:
                break
            self.used_bytes += cost
            chosen.append(index)
        chosen.sort(key=lambda i: len(self._rows[i]))
        for start in range(0, len(chosen), batch_size):
            indices = chosen[start : start + batch_size]
            input_ids, mask, type_ids = self._inputs(indices)
            hidden = self._model.run_trunk(input_ids, mask, type_ids)
            for row_index, example_index in enumerate(indices):
                length = len(self._rows[example_index])
                self._cache[example_index] = hidden[row_index, :length].to(self._dtype).clone()

    def batch(self, indices: Sequence[int]) -> TrunkBatch:
        """Trunk states for these examples, padded to the longest of them."""
        input_ids, mask, type_ids = self._inputs(indices)
        missing = [row for row, i in enumerate(indices) if i not in self._cache]
        if len(missing) == len(indices):
            return TrunkBatch(self._model.run_trunk(input_ids, mask, type_ids), mask)
        hidden_size = self._model.base.config.hidden_size
        hidden = torch.zeros(len(indices), input_ids.shape[1], hidden_size)
        for row, index in enumerate(indices):
            cached = self._cache.get(index)
            if cached is not None:
                hidden[row, : cached.shape[0]] = cached.to(torch.float32)
        if missing:
            rows = torch.tensor(missing)
            width = int(mask[rows].sum(dim=1).max())
            computed = self._model.run_trunk(
                input_ids[rows, :width], mask[rows, :width], type_ids[rows, :width]
            )
            hidden[rows, :width] = computed
        return TrunkBatch(hidden, mask)
