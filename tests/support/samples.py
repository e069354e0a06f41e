"""Small labelled sentences generated from templates: the tests' own data."""

from __future__ import annotations

import random

_GOOD = ["a wonderful film", "a moving story", "brilliant acting", "a joyful ride", "superb work"]
_BAD = ["a dull mess", "tedious and flat", "an awful script", "boring scenes", "a painful bore"]
_SUBJECTS = ["the cat", "a man", "the old car", "my sister", "the small dog", "a chef"]
_ACTIONS = ["sleeps on the sofa", "drives to town", "cooks dinner", "reads a book", "plays outside"]


def sentiment_rows(count: int, seed: int = 0) -> list[tuple[str, int]]:
    """Clearly positive (label 4) or negative (label 0) phrases."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        positive = rng.random() < 0.5
        phrase = rng.choice(_GOOD if positive else _BAD)
        rows.append((f"{phrase} , {rng.choice(_SUBJECTS)} said", 4 if positive else 0))
    return rows


def pair_rows(count: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """Pairs that share subject and action (score 5) or neither (score 0)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        subject, action = rng.choice(_SUBJECTS), rng.choice(_ACTIONS)
        if rng.random() < 0.5:
            rows.append((f"{subject} {action}", f"{subject} {action} today", 5.0))
        else:
            other = rng.choice([s for s in _SUBJECTS if s != subject])
            other_action = rng.choice([a for a in _ACTIONS if a != action])
            rows.append((f"{subject} {action}", f"{other} {other_action}", 0.0))
    return rows
