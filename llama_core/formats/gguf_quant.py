"""GGUF's Q4_0, Q4_1 and Q8_0 blocks loaded straight into the lab's quantized linear layers.

A block holds 32 consecutive weights of a row (ggml's `block_q4_0`, `block_q4_1`, `block_q8_0`):
- Q4_0: fp16 d, then 16 bytes of nibbles; w = d * (q - 8)
- Q4_1: fp16 d, fp16 m, then 16 bytes of nibbles; w = d * q + m = d * (q - 8) + (m + 8 d)
- Q8_0: fp16 d, then 32 int8; w = d * q
where byte j's low nibble is weight j of the block and its high nibble weight j + 16. These are
exactly llama_core.quantize's int4 (groups of 32, scale and zero point) and grouped int8, so the
weights never pass through float32: the model keeps the file's bytes per weight.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from llama_core.quantize import Int4Linear, Int8Linear

KEPT_TYPES = ("Q4_0", "Q4_1", "Q8_0")
BLOCK = 32


def quantized_linear(kind: str, data: np.ndarray, shape: tuple[int, int]) -> nn.Module:
    """The quantized linear layer of a GGUF tensor of type `kind` whose raw block bytes are `data`."""
    out, n_in = shape
    if n_in % BLOCK:
        raise ValueError(f"a {kind} tensor of {n_in} columns does not split into blocks of {BLOCK}")
    blocks = np.ascontiguousarray(data, dtype=np.uint8).reshape(out, n_in // BLOCK, -1)  # (out, groups, bytes)
    d = _halves(blocks[..., 0:2])  # (out, groups)
    if kind == "Q8_0":
        q = torch.from_numpy(blocks[..., 2:].copy().view(np.int8)).reshape(out, n_in)
        return Int8Linear(q, d)
    if kind == "Q4_0":
        zeros, nibbles = torch.zeros_like(d), blocks[..., 2:]
    elif kind == "Q4_1":
        zeros, nibbles = _halves(blocks[..., 2:4]) + 8 * d, blocks[..., 4:]
    else:
        raise ValueError(f"GGUF type {kind} is not kept quantized; only {', '.join(KEPT_TYPES)}")
    packed = torch.from_numpy(nibbles.copy())  # (out, groups, 16)
    q = torch.cat([packed & 15, packed >> 4], dim=-1).reshape(out, n_in)  # weights j, then j + 16
    return Int4Linear(q, d, zeros)


def placeholder(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor of `shape` that takes no memory (one element, broadcast): it stands in a state dict
    for a weight that a quantized layer replaces once the model is built."""
    return torch.zeros((), dtype=dtype).expand(shape)


def swap_in(model: nn.Module, layers: dict[str, nn.Module]) -> None:
    """Put each quantized layer at its Meta name ("layers.0.attention.wq")."""
    for name, layer in layers.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)


def _halves(pairs: np.ndarray) -> torch.Tensor:
    """Little-endian fp16 values from (..., 2) bytes, as float32."""
    return torch.from_numpy(np.ascontiguousarray(pairs).view(np.float16)[..., 0].astype(np.float32))
