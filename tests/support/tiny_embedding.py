"""A tiny Hugging Face BERT, the same model as a sentence-transformers model, and a
repository serving its embedding beside a sentiment branch: for the embedding tests
and the protocol tests (OpenAI, text-embeddings-inference, Open Inference Protocol)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import transformers

from model_store.tokenizer import PairTokenizer
from training.commands import store as store_cli
from training.encoders.base_model import default_base_model_dir, load_base_model
from training.fit.branch import save_branch
from training.fit.objectives import preset_spec
from training.fit.task_model import TaskModel

LAYERS = 3
HIDDEN = 32
MAX_SEQ_LEN = 64
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def tiny_hf_base(directory: Path, seed: int = 0) -> Path:
    """A random BertModel saved as a checkpoint directory, with the default base's
    tokenizer: loadable by this project and by sentence-transformers alike."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(str(directory))
    source = default_base_model_dir()
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, directory / name)
    return directory


def sentence_transformer(base_dir: Path):
    """The reference: sentence-transformers' Transformer + mean Pooling + Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    word = Transformer(str(base_dir), max_seq_length=MAX_SEQ_LEN)
    pooling = Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[word, pooling, Normalize()], device="cpu")


def embedding_repository(directory: Path, variants: tuple[str, ...] = ("int8", "fp16")) -> Path:
    """A repository at `directory/repo` serving sentiment (K=1) and the base's embedding,
    published with `bert-mts-store publish --embedding`; the base at `directory/base`."""
    base_dir = tiny_hf_base(directory / "base")
    base = load_base_model(base_dir)
    tokenizer = PairTokenizer.from_dir(base_dir, MAX_SEQ_LEN)
    torch.manual_seed(1)
    model = TaskModel(base.encoder, preset_spec("sentiment"), 1, "cls")
    branch = save_branch(model, base, tokenizer, directory / "branches", {}, {})
    repo = directory / "repo"
    args = [
        "publish",
        "--create",
        "--store",
        str(repo),
        "--base-model",
        str(base_dir),
        "--branch",
        str(branch),
    ]
    assert store_cli.main([*args, "--embedding", "--variants", *variants]) == 0
    return repo
