"""The preset tasks: sentiment, paraphrase and similarity, with their default data.

A preset is an ordinary task definition plus the shared train file (in `--data-dir`)
and columns it reads by default; nothing else about it is special. Naming a preset is
all `finetune_top_layers.py` needs; any other task is defined on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_store.presets import PRESET_DEFINITIONS
from model_store.tasks import TaskDefinition
from training.data.examples import Columns
from training.data.source import DatasetFile


@dataclass(frozen=True)
class Preset:
    definition: TaskDefinition
    data: DatasetFile


# The definitions live in model_store (the service checks stores against them); the
# data they train on by default is training's alone.
_DATA = {
    "sentiment": DatasetFile("sst-train.tsv", Columns("sentence", None, "sentiment")),
    "paraphrase": DatasetFile("quora-train.tsv", Columns("sentence1", "sentence2", "is_duplicate")),
    "similarity": DatasetFile("sts-train.tsv", Columns("sentence1", "sentence2", "similarity")),
}
PRESETS: dict[str, Preset] = {
    name: Preset(definition, _DATA[name]) for name, definition in PRESET_DEFINITIONS.items()
}


def preset_order(names: list[str] | tuple[str, ...]) -> list[str]:
    """Presets first in their listed order, then other tasks by name: the order tasks
    are merged in, so that a store's task ids (and graph bytes) do not depend on the
    order directories happen to be listed."""
    known = [name for name in PRESETS if name in names]
    return known + sorted(name for name in names if name not in PRESETS)
