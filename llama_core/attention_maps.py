"""Attention weights for inspection, taken from the model's own forward pass.

The fast attention kernels never materialise the weights. The model runs as it always does (plain,
packed or quantized, with whatever backend it was given) up to the chosen layer; that layer's
queries and keys come from its own `Attention.qkv`, and only the softmax(QK^T/sqrt(d)) is computed
explicitly by the eager backend.
"""

from __future__ import annotations

import torch

from llama_core.attention import attend
from llama_core.model import Transformer


class _Stop(Exception):
    """Raised inside the chosen layer: the layers after it are not needed."""


@torch.inference_mode()
def attention_weights(model: Transformer, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """Causal attention weights (B, H, T, T) of `layer` for tokens (B, T)."""
    if not 0 <= layer < model.config.n_layers:
        raise ValueError(f"layer must be within 0..{model.config.n_layers - 1}, got {layer}")
    attention = model.layers[layer].attention
    captured = {}

    def grab(module, args):
        captured["args"] = args  # (normalised x, rotation, start_pos, backend, key_mask)
        raise _Stop

    handle = attention.register_forward_pre_hook(grab)
    try:
        model(tokens.to(model.tok_embeddings.weight.device))
    except _Stop:
        pass
    finally:
        handle.remove()
    x, rotation = captured["args"][:2]
    q, k, v = attention.qkv(x, rotation)
    _, weights = attend(q, k, v, backend="eager", return_weights=True)
    return weights
