"""Small labelled sentences generated from templates: the tests' own data."""

from __future__ import annotations

import random
from pathlib import Path

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


# Subjects, events and settings per topic: their combinations make varied sentences, and
# held-out sentences share no template with them.
_TOPIC_PARTS = {
    "sports": (
        [
            "the striker",
            "our goalkeeper",
            "the home team",
            "the coach",
            "the young sprinter",
            "the tennis champion",
            "the visiting side",
            "the captain",
            "the midfielder",
        ],
        [
            "scored in the final minute",
            "won the championship",
            "missed a penalty",
            "broke the world record",
            "was sent off",
            "lost the derby",
            "lifted the trophy",
            "trained before the match",
            "beat the defending champions",
        ],
        [
            "at the stadium",
            "in the league final",
            "after extra time",
            "in front of the fans",
            "during the tournament",
        ],
    ),
    "politics": (
        [
            "the senate",
            "the prime minister",
            "the opposition leader",
            "parliament",
            "the governor",
            "the minister",
            "voters",
            "the ruling party",
            "the mayor",
        ],
        [
            "passed the new bill",
            "called an early election",
            "vetoed the budget",
            "won the vote",
            "resigned after the scandal",
            "debated the tax reform",
            "signed the treaty",
            "announced new sanctions",
            "formed a coalition",
        ],
        [
            "in the capital",
            "before the election",
            "after a long debate",
            "in the assembly",
            "at the summit",
        ],
    ),
    "science": (
        [
            "the researchers",
            "a biologist",
            "the physicists",
            "the lab",
            "the astronomers",
            "a chemist",
            "the geneticists",
            "the team of scientists",
        ],
        [
            "discovered a new species",
            "measured the particle's mass",
            "sequenced the genome",
            "observed a distant galaxy",
            "isolated the protein",
            "tested the hypothesis",
            "mapped the cells",
            "detected gravitational waves",
            "synthesized a compound",
        ],
        [
            "in the laboratory",
            "under the microscope",
            "in a peer reviewed paper",
            "at the observatory",
            "during the experiment",
        ],
    ),
}
TOPICS = tuple(_TOPIC_PARTS)
# Sentences of each topic in none of topic_rows' templates: what a trained topic task
# must still answer.
HELD_OUT_TOPICS = {
    "sports": [
        "the striker scored twice",
        "the goalkeeper saved a late penalty",
        "she won gold in the marathon",
        "the cyclists raced up the final mountain stage",
    ],
    "politics": [
        "the senator proposed a new immigration law",
        "the cabinet met to discuss the budget deficit",
        "lawmakers voted against the reform",
        "the election results were contested by the party",
    ],
    "science": [
        "the scientists cloned a mouse embryo",
        "a new vaccine was tested on cells in the lab",
        "the rover found traces of water on mars",
        "the experiment confirmed the theory of relativity",
    ],
}


def topic_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(sentence, topic) rows, the topics in turn: sports, politics, science."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        subjects, events, settings = _TOPIC_PARTS[topic]
        sentence = f"{rng.choice(subjects)} {rng.choice(events)} {rng.choice(settings)}"
        rows.append((sentence, topic))
    return rows


def write_topics(path: Path) -> None:
    """A 30-row, three-topic CSV (text,topic) for walking the "Add your own task" block:
    enough to train one epoch on, not to learn from (``topic_rows`` is for that)."""
    texts = {
        "sports": "the striker scored a late goal",
        "politics": "the senate passed the bill",
        "science": "the cells divided under the microscope",
    }
    rows = ["text,topic"] + [
        f"{text} {i},{name}" for i in range(10) for name, text in texts.items()
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_tags(path: Path) -> None:
    """A 30-row multilabel CSV (text,tags: names separated by '|', empty for none) for
    walking the multilabel block of "Add your own task"."""
    texts = {
        "funny|long": "a very long and funny story with many jokes",
        "sad": "the dog died",
        "": "the train left at noon",
    }
    rows = ["text,tags"] + [f"{text} {i},{tags}" for i in range(10) for tags, text in texts.items()]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
