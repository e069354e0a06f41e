"""Compute the frozen trunk once per example instead of once per epoch.

The trunk (embeddings + layers [0, L-K)) is frozen and runs without dropout, so its
output for an example is the same in every epoch. Caching it turns each epoch after
the first into a top-K-layers-only computation. Memory is bounded: examples are cached
in order until the budget is spent. With a disk budget, the next examples are cached in
an unlinked temporary file on disk (a 12-layer base's states for a large task do not
fit in memory, and reading them back is far cheaper than recomputing 4-11 layers); the
rest are recomputed when their batch comes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from model_store.tokenizer import EncodedRow, PairTokenizer
from training.fit.task_model import TaskModel

CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


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
        disk_budget_bytes: int = 0,
        disk_dir: Path | None = None,
        progress: bool = False,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._rows = rows
        self._dtype = dtype
        self._cache: dict[int, torch.Tensor] = {}
        self._disk_offsets: dict[int, int] = {}  # example -> first element in the file
        self._disk: np.memmap | None = None
        self.used_bytes = 0
        self.disk_bytes = 0
        self._fill(budget_bytes, fill_batch_size, disk_budget_bytes, disk_dir, progress)

    @property
    def cached_count(self) -> int:
        return len(self._cache) + len(self._disk_offsets)

    @property
    def disk_count(self) -> int:
        return len(self._disk_offsets)

    def _inputs(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self._tokenizer.pad([self._rows[i] for i in indices])
        return (
            torch.from_numpy(batch.input_ids),
            torch.from_numpy(batch.attention_mask),
            torch.from_numpy(batch.token_type_ids),
        )

    def _fill(
        self,
        budget_bytes: int,
        batch_size: int,
        disk_budget_bytes: int,
        disk_dir: Path | None,
        progress: bool,
    ) -> None:
        """Cache in length-sorted batches (little padding) until the budgets are spent:
        memory first, then disk."""
        hidden_size = self._model.base.config.hidden_size
        itemsize = torch.empty((), dtype=self._dtype).element_size()
        chosen: list[int] = []
        on_disk = False
        disk_elements = 0
        for index, row in enumerate(self._rows):
            cost = len(row) * hidden_size * itemsize
            if not on_disk and self.used_bytes + cost > budget_bytes:
                on_disk = True
            if on_disk:
                if self.disk_bytes + cost > disk_budget_bytes:
                    break
                self._disk_offsets[index] = disk_elements
                disk_elements += len(row) * hidden_size
                self.disk_bytes += cost
            else:
                self.used_bytes += cost
            chosen.append(index)
        if disk_elements:
            # Unlinked at once: the file goes away with the process, even after a crash;
            # the mapping stays valid after the handle is closed.
            with tempfile.TemporaryFile(prefix="bert-mts-trunk-", dir=disk_dir) as handle:
                self._disk = np.memmap(
                    handle, dtype=_NUMPY_DTYPES[self._dtype], mode="w+", shape=(disk_elements,)
                )
        chosen.sort(key=lambda i: len(self._rows[i]))
        starts = range(0, len(chosen), batch_size)
        for start in tqdm(starts, desc="trunk cache", unit="batch", disable=not progress):
            indices = chosen[start : start + batch_size]
            input_ids, mask, type_ids = self._inputs(indices)
            hidden = self._model.run_trunk(input_ids, mask, type_ids)
            for row_index, example_index in enumerate(indices):
                length = len(self._rows[example_index])
                state = hidden[row_index, :length].to(self._dtype)
                offset = self._disk_offsets.get(example_index)
                if offset is None:
                    self._cache[example_index] = state.clone()
                else:
                    self._disk[offset : offset + state.numel()] = state.reshape(-1).numpy()

    def _cached(self, index: int) -> torch.Tensor | None:
        cached = self._cache.get(index)
        if cached is not None or index not in self._disk_offsets:
            return cached
        offset = self._disk_offsets[index]
        length = len(self._rows[index])
        hidden_size = self._model.base.config.hidden_size
        flat = np.array(self._disk[offset : offset + length * hidden_size])
        return torch.from_numpy(flat).reshape(length, hidden_size)

    def batch(self, indices: Sequence[int]) -> TrunkBatch:
        """Trunk states for these examples, padded to the longest of them."""
        input_ids, mask, type_ids = self._inputs(indices)
        missing = [
            row
            for row, i in enumerate(indices)
            if i not in self._cache and i not in self._disk_offsets
        ]
        if len(missing) == len(indices):
            return TrunkBatch(self._model.run_trunk(input_ids, mask, type_ids), mask)
        hidden_size = self._model.base.config.hidden_size
        hidden = torch.zeros(len(indices), input_ids.shape[1], hidden_size)
        for row, index in enumerate(indices):
            cached = self._cached(index)
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
