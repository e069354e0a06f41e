"""A tiny random MPNet checkpoint directory, laid out like all-mpnet-base-v2.

Random weights from `transformers.MPNetModel` (hidden 32), and a tokenizer.json built
the way the real one is: the default base's uncased WordPiece vocabulary behind
<s> <pad> </s> <unk>, <mask> last, and RoBERTa-style pair encoding
(`<s> a </s></s> b </s>`) with <pad> = 1, the id MPNet's position ids count from.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from training.encoders.base_model import default_base_model_dir

SPECIALS_FIRST = ("<s>", "<pad>", "</s>", "<unk>")


def mpnet_tokenizer() -> Tokenizer:
    bert_vocab = Tokenizer.from_file(str(default_base_model_dir() / "tokenizer.json")).get_vocab()
    words = [*SPECIALS_FIRST, *sorted(bert_vocab, key=bert_vocab.__getitem__), "<mask>"]
    tokenizer = Tokenizer(
        models.WordPiece({word: i for i, word in enumerate(words)}, unk_token="[UNK]")
    )
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.add_special_tokens([*SPECIALS_FIRST, "<mask>"])
    tokenizer.enable_padding(pad_id=1, pad_token="<pad>")
    return tokenizer


def tiny_mpnet_config(layers: int = 3, dropout: float = 0.1) -> transformers.MPNetConfig:
    return transformers.MPNetConfig(
        vocab_size=30527,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


def tiny_mpnet_dir(directory: Path, layers: int = 3, seed: int = 0) -> Path:
    """Save a random MPNetModel and its tokenizer.json under `directory`."""
    torch.manual_seed(seed)
    model = transformers.MPNetModel(tiny_mpnet_config(layers), add_pooling_layer=False)
    with torch.no_grad():  # random, not zero: the test must see the bias table at work
        model.encoder.relative_attention_bias.weight.normal_(0.0, 1.0)
    model.save_pretrained(directory)
    mpnet_tokenizer().save(str(directory / "tokenizer.json"))
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "mpnet"
    return directory
