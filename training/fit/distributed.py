"""Data-parallel training of one branch over several processes (torchrun).

    torchrun --nproc_per_node 2 training/finetune_top_layers.py --task similarity --layers 8 ...
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 \\
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 training/finetune_top_layers.py ...

Why this shape: the expensive part of a branch's training is the trunk (run once per
example and cached) and the K tuned layers (every epoch). Each process owns a fixed
shard of the examples (example i belongs to rank i mod N), so it computes and caches the
trunk for its shard only: the cache and its fill time are split N ways. Every process
draws the same global batches from the same seeded generator; each runs its own
examples of the batch through the branch, and DistributedDataParallel sums the
gradients. The loss of a rank is scaled by its share of the global batch, so the
update equals the one a single process computes on the whole global batch (up to the
order of floating-point sums): `--batch-size` is the global batch whatever N is.
Validation outputs are gathered from all shards before the metric is computed, so
every rank sees the same metric and keeps the same best epoch; only rank 0 writes.

Backend: gloo (CPU tensors: training runs on the CPU); NCCL is chosen for CUDA tensors.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, count: int) -> Shard:
        """This rank's share of `count` examples."""
        if count < self.world_size:
            raise ValueError(f"{count} examples cannot be shared by {self.world_size} processes")
        return Shard(self.rank, self.world_size, count)

    def sum(self, value: float) -> float:
        """Sum of a number over all ranks (the number itself in one process)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor[0])

    def gather_rows(self, local: np.ndarray, shard: Shard) -> np.ndarray:
        """Every rank's rows of a [count, ...] array, in example order, on every rank."""
        if not self.distributed:
            return local
        full = torch.zeros((shard.count, *local.shape[1:]), dtype=torch.float32)
        full[shard.indices] = torch.from_numpy(local)
        dist.all_reduce(full)  # each row is non-zero on exactly one rank: an exact gather
        return full.numpy()

    def check_same(self, value: int, what: str) -> None:
        """Fail loudly if ranks disagree (they would write different branches)."""
        if not self.distributed:
            return
        low, high = torch.tensor([value]), torch.tensor([value])
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if int(low) != int(high):
            raise RuntimeError(f"ranks disagree on {what}: {int(low)}..{int(high)}")

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around `module` when distributed, else `module`."""
        if not self.distributed:
            return module
        return nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)


@dataclass(frozen=True)
class Shard:
    """The examples a rank owns: indices rank, rank + N, rank + 2N, ... of `count`."""

    rank: int
    world_size: int
    count: int

    @property
    def indices(self) -> list[int]:
        return list(range(self.rank, self.count, self.world_size))

    def own(self, batch: Sequence[int]) -> tuple[list[int], list[int]]:
        """Of a global batch, the examples this rank owns: (their positions within the
        shard, their global indices)."""
        mine = [i for i in batch if i % self.world_size == self.rank]
        return [i // self.world_size for i in mine], mine

    def share(self, batch: Sequence[int]) -> float:
        """Weight of this rank's mean loss on its part of a global batch, such that the
        ranks' gradients, averaged by DistributedDataParallel, are the gradient of the
        mean loss over the whole batch (exactly 1.0 in one process)."""
        mine = sum(1 for i in batch if i % self.world_size == self.rank)
        return mine * self.world_size / len(batch)


SINGLE = DistContext()
_current = SINGLE


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(device: torch.device | None = None) -> DistContext:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK,
    MASTER_ADDR, ...); a plain `python` run is rank 0 of 1 and joins nothing."""
    global _current
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        _current = SINGLE
        return _current
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device or torch.device("cpu")))
        atexit.register(dist.destroy_process_group)
    _current = DistContext(dist.get_rank(), dist.get_world_size(), dist.get_backend())
    if not _current.is_main:  # one process reports; the others only warn
        logging.getLogger().setLevel(logging.WARNING)
    return _current


def current() -> DistContext:
    """The context `init_from_env` set up (rank 0 of 1 before, or without, it)."""
    return _current
