"""A BERT encoder in plain PyTorch, shaped for the trunk/branch split of the method.

Why not `transformers.BertModel`: the method needs to run the embeddings, the frozen
trunk layers [0, L-K) and the tuned branch layers [L-K, L) as separate steps (to cache
the trunk during training and to share it across tasks when merged), and the ONNX
export wants small, explicit operators. Parameter names follow Hugging Face's
(`embeddings.*`, `encoder.layer.{i}.*`) so checkpoints load without renaming, and a
test holds this module to `transformers.BertModel` within 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# Added to attention scores of padding keys. -1e4 (as in the original BERT) rather than
# the dtype minimum: exp() underflows to exactly 0 in fp32 either way, and the constant
# survives a later fp16 conversion without turning into -inf.
MASK_BIAS = -10000.0

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class ConfigError(ValueError):
    """A config.json this encoder cannot represent."""


@dataclass(frozen=True)
class BertConfig:
    """The subset of a Hugging Face BERT config.json that the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    model_type = "bert"
    # What the serving side must know about the inputs (recorded in the manifest).
    uses_token_types = True
    position_ids = "absolute"  # 0, 1, 2, ... whatever the padding

    @property
    def max_sequence_length(self) -> int:
        """Longest input the position table covers."""
        return self.max_position_embeddings

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BertConfig:
        """Build from a parsed config.json, refusing what the encoder would get wrong."""
        model_type = raw.get("model_type", "bert")
        if model_type != "bert":
            raise ConfigError(
                f"model_type is {model_type!r}; only BERT and MPNet checkpoints are supported"
            )
        position_type = raw.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ConfigError(
                f"position_embedding_type {position_type!r} is not supported (only 'absolute')"
            )
        if raw.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise ConfigError(f"hidden_act {raw.get('hidden_act')!r} is not supported")
        required = (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        )
        missing = [name for name in required if name not in raw]
        if missing:
            raise ConfigError(f"config.json lacks {', '.join(missing)}")
        fields = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        config = cls(**fields)
        if config.hidden_size % config.num_attention_heads:
            raise ConfigError("hidden_size is not a multiple of num_attention_heads")
        return config


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # Position ids as a table sliced to the sequence length, as Hugging Face writes
        # them (not arange): ONNX Runtime's optimizer recognises exactly that subgraph
        # when it fuses the embeddings into EmbedLayerNormalization. Not a checkpoint key.
        self.register_buffer(
            "position_ids",
            torch.arange(config.max_position_embeddings).unsqueeze(0),
            persistent=False,
        )

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, : input_ids.shape[1]]
        embedded = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embedded))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, self.head_size).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        query = self._split_heads(self.query(hidden))
        key = self._split_heads(self.key(hidden))
        value = self._split_heads(self.value(hidden))
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)
        probs = self.dropout(torch.softmax(scores + mask_bias, dim=-1))
        context = torch.matmul(probs, value).transpose(1, 2)
        return context.reshape(hidden.shape)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(context)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, mask_bias), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden))


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, intermediate: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(intermediate)) + residual)


class BertLayer(nn.Module):
    """One transformer block: self-attention, then the feed-forward network."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        attended = self.attention(hidden, mask_bias)
        return self.output(self.intermediate(attended), attended)


class BertLayerStack(nn.Module):
    """Holds the layers under the attribute name `layer`, matching checkpoint keys."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


def attention_mask_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a [batch, seq] 1/0 mask into the additive [batch, 1, 1, seq] score bias."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASK_BIAS


def run_layers(
    layers: nn.ModuleList | list[nn.Module],
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    position_bias: nn.Module | torch.Tensor | None = None,
) -> torch.Tensor:
    """Run `hidden` through `layers` in order; shared by the trunk and every branch.

    `position_bias` is the base's relative position bias (MPNet; None for BERT), as its
    module or as the [1, heads, seq, seq] tensor a caller computed already (the merged
    model, once for all its paths): it is added, with the padding mask, to the scores
    of every layer.
    """
    score_bias = attention_mask_bias(attention_mask, hidden.dtype)
    if position_bias is not None and len(layers):
        if isinstance(position_bias, nn.Module):
            position_bias = position_bias(hidden)
        score_bias = score_bias + position_bias.to(hidden.dtype)
    for layer in layers:
        hidden = layer(hidden, score_bias)
    return hidden


class BertEncoder(nn.Module):
    """Embeddings plus L transformer layers, with the trunk/branch split made explicit.

    For a branch depth K, the trunk is the embeddings and layers [0, L-K); the branch
    is layers [L-K, L). The pooler of the original BERT is not part of the model: the
    task heads pool for themselves.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertLayerStack(config)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layer

    @property
    def position_bias(self) -> None:
        """BERT's positions are absolute, in the embeddings: no bias on the scores."""
        return None

    def trunk_depth(self, branch_layers: int) -> int:
        """Number of layers below a branch of `branch_layers` layers (L - K)."""
        if not 1 <= branch_layers <= self.num_layers:
            raise ValueError(
                f"branch depth must be 1..{self.num_layers} for this base, got {branch_layers}"
            )
        return self.num_layers - branch_layers

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(input_ids, token_type_ids)

    def run_trunk(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        depth: int,
    ) -> torch.Tensor:
        """Embeddings, then the bottom `depth` layers."""
        hidden = self.embed(input_ids, token_type_ids)
        return run_layers(self.layers[:depth], hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Last hidden state, [batch, seq, hidden]."""
        return self.run_trunk(input_ids, attention_mask, token_type_ids, self.num_layers)
