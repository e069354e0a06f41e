"""Compact storage for shipped branches: int8 weight matrices with one scale per row.

A branch's bulk is its weight matrices. Stored as int8 with a float32 scale per output
row (symmetric, scale = max |row| / 127), they take a quarter of the float32 bytes,
which is what lets deeper branches fit the repository's size budget. Vectors (biases,
LayerNorm) stay float32: they are tiny and sensitive. What the rounding costs in
validation metric is measured by `python -m benchmarks.pack_cost_bench` (docs/results.md), and
the shipped model is evaluated after decoding, so what is reported is what is served.
"""

from __future__ import annotations

import torch

INT8_ROWWISE = "int8-rowwise"
_SCALE_SUFFIX = ".int8_row_scale"


def encode_int8_rowwise(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    encoded: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if tensor.ndim == 2 and tensor.is_floating_point():
            weights = tensor.to(torch.float32)
            scale = (weights.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)
            encoded[key] = torch.round(weights / scale).clamp(-127, 127).to(torch.int8)
            encoded[key + _SCALE_SUFFIX] = scale
        else:
            encoded[key] = tensor.to(torch.float32) if tensor.is_floating_point() else tensor
    return encoded


def decode_int8_rowwise(encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32 tensors under the original names; refuses a state that is not encoded."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in encoded.items():
        if key.endswith(_SCALE_SUFFIX):
            continue
        scale = encoded.get(key + _SCALE_SUFFIX)
        if tensor.dtype == torch.int8:
            if scale is None:
                raise ValueError(f"int8 tensor {key} has no {_SCALE_SUFFIX} companion")
            state[key] = tensor.to(torch.float32) * scale
        else:
            state[key] = tensor
    return state


def decode_weights(state: dict[str, torch.Tensor], encoding: str | None) -> dict[str, torch.Tensor]:
    """The branch's float tensors, whatever encoding branch.json names (None: as saved)."""
    if encoding in (None, "float32"):
        return state
    if encoding == INT8_ROWWISE:
        return decode_int8_rowwise(state)
    raise ValueError(f"unknown weights encoding {encoding!r}")
