"""MPNet's attention exported as ONNX Runtime's fused `MultiHeadAttention`, bias and all.

ONNX Runtime's transformer optimizer finds BERT's attention by its pattern (scores,
mask Add, Softmax); MPNet adds a relative position bias to the scores, which that
pattern does not take, so an MPNet graph would stay unfused. Rather than teach a
pattern matcher a second shape, the export writes the fused node itself: while
`fused_attention(model)` is active, every MPNet layer's self-attention traces as

    q, k, v = MatMul(hidden, Wq), MatMul(hidden, Wk), MatMul(hidden, Wv)
    context = com.microsoft.MultiHeadAttention(q, k, v, bias=[bq; bk; bv],
                  key_padding_mask=attention_mask (int32, 1 = keep),
                  attention_bias=position bias [1, heads, seq, seq])
    out = MatMul(context, Wo) + bo

- the position bias is one tensor per batch (it depends on the length alone), computed
  by the merged model once and fed to every layer of every path (input 5);
- the Q, K, V projections stay MatMuls named as the unfused export names them
  (`.../attn/q/MatMul`), so int8 quantizes them as before; not `Attention`, whose int8
  form (`QAttention`) drops input 5 and dies on an empty batch (`training.graph.fusion`);
- the key padding mask is the path's own rows of `attention_mask` in the (B, T) form,
  masked scores getting MHA's default -10000, as `attention_mask_bias` adds in PyTorch;
- MHA takes a batch of no rows, which a path gets when no row asks its tasks.

The modules are swapped in place for the export and put back after it, so the
PyTorch model the graphs are checked against is the plain one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from training.encoders.bert import MASK_BIAS
from training.encoders.mpnet import MPNetLayer, MPNetSelfAttention

if TYPE_CHECKING:
    from training.graph.merged_model import MergedModel

CUSTOM_OPSETS = {"com.microsoft": 1}


class AttentionInputs(NamedTuple):
    """What each fused layer of a path takes besides its hidden state."""

    key_padding_mask: torch.Tensor  # [rows, seq] int32, 1 = real token
    attention_bias: torch.Tensor  # [1, heads, seq, seq], shared by every path


def attention_inputs(attention_mask: torch.Tensor, position: torch.Tensor) -> AttentionInputs:
    return AttentionInputs(attention_mask.to(torch.int32), position)


class _MultiHeadAttention(torch.autograd.Function):
    """The attention core (projection biases, scores, bias, mask, softmax, context),
    exported as one `com.microsoft.MultiHeadAttention` node."""

    @staticmethod
    def forward(
        ctx,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        bias: torch.Tensor,
        key_padding_mask: torch.Tensor,
        attention_bias: torch.Tensor,
        num_heads: int,
        head_size: int,
    ) -> torch.Tensor:
        # No sizes are read here (the tracer would record them, and the export's
        # graph passes cannot follow those into the node this becomes).
        scale = 1.0 / math.sqrt(head_size)
        biases = bias.chunk(3)

        def heads(x: torch.Tensor, part: int) -> torch.Tensor:
            return (x + biases[part]).unflatten(-1, (-1, head_size)).transpose(1, 2)

        scores = torch.matmul(heads(query, 0), heads(key, 1).transpose(-1, -2)) * scale
        masked = (1.0 - key_padding_mask[:, None, None, :].to(scores.dtype)) * MASK_BIAS
        probs = torch.softmax(scores + attention_bias + masked, dim=-1)
        return torch.matmul(probs, heads(value, 2)).transpose(1, 2).flatten(2)

    @staticmethod
    def symbolic(
        g, query, key, value, bias, key_padding_mask, attention_bias, num_heads, head_size
    ):
        context = g.op(
            "com.microsoft::MultiHeadAttention",
            query,
            key,
            value,
            bias,
            key_padding_mask,
            attention_bias,
            num_heads_i=num_heads,
        )
        # Its type, with no sizes: the exporter has no shape inference for the node
        # (and warns of it for every layer), and sizes taken from the query would tie
        # the row counts of different paths together.
        context.setType(query.type().with_sizes([None, None, None]))
        return context


class _Projection(nn.Module):
    """A Linear's weight without its bias (which moves into the attention node); named
    as the Linear it stands for, so its MatMul keeps the unfused export's name."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight.t())


class FusedSelfAttention(nn.Module):
    """`MPNetSelfAttention` with the same weights, taking `AttentionInputs`."""

    def __init__(self, attention: MPNetSelfAttention) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.head_size = attention.head_size
        self.q = _Projection(attention.q)
        self.k = _Projection(attention.k)
        self.v = _Projection(attention.v)
        self.register_buffer(
            "qkv_bias",
            torch.cat([attention.q.bias, attention.k.bias, attention.v.bias]).detach(),
            persistent=False,
        )
        self.o = attention.o

    def forward(self, hidden: torch.Tensor, inputs: AttentionInputs) -> torch.Tensor:
        context = _MultiHeadAttention.apply(
            self.q(hidden),
            self.k(hidden),
            self.v(hidden),
            self.qkv_bias,
            inputs.key_padding_mask,
            inputs.attention_bias,
            self.num_heads,
            self.head_size,
        )
        return self.o(context)


def run_fused_layers(
    layers: nn.ModuleList | list[nn.Module],
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    position: torch.Tensor,
) -> torch.Tensor:
    """`run_layers` for layers whose attention is fused: the mask and the position
    bias go in separately, as the fused node takes them."""
    inputs = attention_inputs(attention_mask, position)
    for layer in layers:
        hidden = layer(hidden, inputs)
    return hidden


def _mpnet_layers(model: MergedModel) -> list[MPNetLayer]:
    layers = [*model.frozen, *(layer for b in model.branches.values() for layer in b.layers)]
    if not all(isinstance(layer, MPNetLayer) for layer in layers):
        raise TypeError("fused attention export is for MPNet layers only")
    return layers


@contextmanager
def fused_attention(model: MergedModel) -> Iterator[MergedModel]:
    """`model` with every layer's self-attention fused, for an export; put back after."""
    layers = _mpnet_layers(model)
    originals = [layer.attention.attn for layer in layers]
    try:
        for layer, attention in zip(layers, originals, strict=True):
            layer.attention.attn = FusedSelfAttention(attention)
        model.fused_attention = True
        yield model
    finally:
        for layer, attention in zip(layers, originals, strict=True):
            layer.attention.attn = attention
        model.fused_attention = False
