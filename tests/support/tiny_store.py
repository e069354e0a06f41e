"""Build a small servable model store in seconds, for the service tests.

A randomly initialised 2-layer BERT (hidden 32) with the default base's real
vocabulary and tokenizer.json, and untrained branches for all three tasks: the
answers are meaningless, but every transformation and the whole serving path are real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from model_store.tasks import TaskDefinition
from model_store.tokenizer import PairTokenizer
from training.data.presets import PRESETS
from training.data.source import DataSource
from training.encoders.base_model import default_base_model_dir, load_base_model
from training.encoders.bert import BertConfig, BertEncoder
from training.fit.branch import load_branch, save_branch
from training.fit.objectives import preset_spec, task_spec
from training.fit.task_model import TaskModel
from training.graph.merge import LoadedBranch, publish_store
from training.graph.publish import publish

TINY_CONFIG = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


def tiny_base_dir(directory: Path, seed: int = 0, layers: int = 2, dropout: float = 0.1) -> Path:
    """A random tiny BERT checkpoint directory (`layers` deep) with the real tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = {
        **TINY_CONFIG,
        "num_hidden_layers": layers,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
    }
    encoder = BertEncoder(BertConfig.from_dict(config))
    save_file(
        {k: v.contiguous() for k, v in encoder.state_dict().items()},
        str(directory / "model.safetensors"),
    )
    (directory / "config.json").write_text(json.dumps(config))
    shutil.copy(default_base_model_dir() / "tokenizer.json", directory / "tokenizer.json")
    return directory


def preset_training_args(task: str) -> dict:
    """What a training run records about its data: the preset's file (by name, as in
    ../shared/data) and columns, and the validation split."""
    preset = PRESETS[task]
    source = DataSource(Path("../shared/data") / preset.data.filename, preset.data.columns)
    return {"data": source.to_json(), "val_fraction": 0.1, "seed": 0, "limit": None}


def build_tiny_store(
    directory: Path, max_seq_len: int = 32, variants=("fp32",), pooling: str = "cls"
) -> Path:
    """A store at `directory/store` with sentiment, paraphrase and similarity (K=1)."""
    base = load_base_model(tiny_base_dir(directory / "base"))
    tokenizer = PairTokenizer.from_dir(base.path, max_seq_len)
    branches = []
    for seed, task in enumerate(PRESETS):
        torch.manual_seed(seed)
        model = TaskModel(base.encoder, preset_spec(task), 1, pooling)
        args = preset_training_args(task)
        path = save_branch(model, base, tokenizer, directory / "branches", {}, args)
        branches.append(LoadedBranch(*load_branch(path, base)))
    return publish_store(base, branches, directory / "store", variants).directory


def build_forked_store(
    directory: Path, layers: int, tasks: dict[str, tuple[str | TaskDefinition, int]]
) -> Path:
    """A fp32 store at `directory/store` on a `layers`-deep tiny base: per task, a preset
    name or a definition, and its K (seeded by position)."""
    base = load_base_model(tiny_base_dir(directory / "base", layers=layers))
    tokenizer = PairTokenizer.from_dir(base.path, 32)
    branches = []
    for seed, (definition, k) in enumerate(tasks.values()):
        torch.manual_seed(seed)
        spec = preset_spec(definition) if isinstance(definition, str) else task_spec(definition)
        model = TaskModel(base.encoder, spec, k, "cls")
        path = save_branch(model, base, tokenizer, directory / "branches", {}, {})
        branches.append(LoadedBranch(*load_branch(path, base)))
    return publish_store(base, branches, directory / "store", ("fp32",)).directory


class TinyBranches:
    """A tiny base and fresh random branches for it, on demand."""

    def __init__(self, directory: Path) -> None:
        self.base_dir = tiny_base_dir(directory / "base")
        self.base = load_base_model(self.base_dir)
        self.tokenizer = PairTokenizer.from_dir(self.base_dir, 32)
        self.out = directory / "trained"

    def make(self, task: str, seed: int) -> Path:
        torch.manual_seed(seed)
        model = TaskModel(self.base.encoder, preset_spec(task), 1, "cls")
        return save_branch(model, self.base, self.tokenizer, self.out, {}, {})

    def publish(self, repository: Path, *branches: Path, activate: bool = True) -> str:
        create = not repository.is_dir()
        published = publish(
            repository, branches, base_model=self.base_dir, activate=activate, create=create
        )
        return published.version
