"""The seeded train/validation split: the same rows on every machine, run and Python."""

from __future__ import annotations

import random
from collections.abc import Sequence

from training.data.examples import Example


def _permutation(n: int, seed: int) -> list[int]:
    """A seeded Fisher-Yates permutation of ``range(n)``.

    Built on ``Random.random()`` because Python guarantees that method's sequence for a given
    seed across versions, whereas ``shuffle``/``randrange`` carry no such promise. That keeps
    a published validation split reproducible on a newer interpreter. (The floor-of-float
    draw has a bias far below anything measurable at data-set sizes.)
    """
    rng = random.Random(seed)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def split_seed_of(training_args: dict) -> int:
    """The seed a branch's validation split was drawn with: `split_seed` when the run set
    it apart from the training seed (seed sweeps keep one split), else `seed`."""
    seed = training_args.get("split_seed", training_args.get("seed"))
    return int(seed) if seed is not None else 0


def split_train_val(
    examples: Sequence[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into ``(train, val)`` with a seeded random choice of validation rows.

    The validation part has ``max(1, round(n * val_fraction))`` examples (but at most
    ``n - 1``, so both parts are non-empty). The result depends only on the arguments, never
    on global random state, and ``train`` + ``val`` is exactly the input with no overlap.

    Both parts keep the **original file order**: only the choice of rows is random. That keeps
    splits easy to diff and trace by line; shuffle the training part per epoch in the data
    loader instead.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise ValueError(f"val_fraction must be a number, got {val_fraction!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    items = list(examples)
    n = len(items)
    if n < 2:
        raise ValueError(f"need at least 2 examples to split into train and validation, got {n}")
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    val_idx = set(_permutation(n, seed)[:n_val])
    train = [ex for i, ex in enumerate(items) if i not in val_idx]
    val = [ex for i, ex in enumerate(items) if i in val_idx]
    return train, val
