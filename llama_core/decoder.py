"""A fast one-token decode step: the model's weights packed for matrix-vector products.

Decoding one token reads every weight once and does little else, so its speed is memory
bandwidth plus per-operation overhead. The packed copy fuses wq|wk|wv and w1|w3 into one matrix
each (fewer, larger products), stores every matrix as (in, out) so `x @ W` streams it row by row
(on CPU about twice as fast as `F.linear` for the vocabulary head), applies RoPE to queries and
keys together as one complex product, and attends without a mask kernel for the single query.
It computes exactly the plain model's function (tests compare it with `Transformer.forward`).

The copy costs one more model's worth of memory; it is built once per model and rebuilt only when
a parameter changes (tracked by tensor version counters).
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F

from llama_core.model import Transformer

_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _version(model: Transformer) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())


class PackedDecoder:
    """The decode-step weights of one Transformer, laid out for (B, dim) @ (dim, out) products."""

    def __init__(self, model: Transformer):
        cfg = model.config
        self.cfg = cfg
        self.version = _version(model)
        with torch.no_grad():
            self.layers = []
            for layer in model.layers:
                attn, ffn = layer.attention, layer.feed_forward
                self.layers.append((
                    layer.attention_norm.weight.detach(),
                    torch.cat([attn.wq.weight, attn.wk.weight, attn.wv.weight]).t().contiguous(),
                    attn.wo.weight.t().contiguous(),
                    layer.ffn_norm.weight.detach(),
                    torch.cat([ffn.w1.weight, ffn.w3.weight]).t().contiguous(),
                    ffn.w2.weight.t().contiguous(),
                ))
            self.embedding = model.tok_embeddings.weight.detach()
            self.final_norm = model.norm.weight.detach()
            self.head = model.output.weight.t().contiguous()  # (dim, V)
            # e^(i m theta_j) per position m: rotating a pair is multiplying by a unit complex number
            self.rotations = torch.complex(model.rope_cos, model.rope_sin)  # (max_seq_len, D/2)

    def step(self, model: Transformer, token: torch.Tensor, pos: int,
             key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """token (B, 1) at position `pos` against the caches of `model`; logits (B, V).

        `key_mask` (B, pos+1) marks real keys (left padding is False).
        """
        cfg = self.cfg
        H, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        B = token.shape[0]
        n_qk = (H + Hkv) * D
        scale, eps = 1.0 / math.sqrt(D), cfg.norm_eps
        bias = None
        if key_mask is not None:  # additive mask, -inf on padding: (B, 1, 1, S)
            bias = torch.zeros(key_mask.shape, dtype=torch.float32, device=key_mask.device)
            bias = bias.masked_fill_(~key_mask, float("-inf"))[:, None, None, :]
        rot = self.rotations[pos]  # (D/2,)
        x = F.embedding(token[:, 0], self.embedding)  # (B, dim)
        for (g_attn, wqkv, wo, g_ffn, w13, w2), block in zip(self.layers, model.layers):
            cache = block.attention.cache
            qkv = _rms_norm(x, g_attn, eps) @ wqkv  # (B, (H + 2 Hkv) D)
            qk = torch.view_as_complex(qkv[:, :n_qk].float().reshape(B, H + Hkv, D // 2, 2))
            qk = torch.view_as_real(qk * rot).reshape(B, H + Hkv, D).to(x.dtype)  # (B, H + Hkv, D)
            cache.k[:, :, pos] = qk[:, H:]
            cache.v[:, :, pos] = qkv[:, n_qk:].view(B, Hkv, D)
            keys, values = cache.k[:, :, :pos + 1], cache.v[:, :, :pos + 1]  # (B, Hkv, S, D)
            # each key/value head serves a group of H/Hkv query heads: no repeated keys needed
            q = qk[:, :H].view(B, Hkv, H // Hkv, D)  # (B, Hkv, G, D)
            scores = (q @ keys.transpose(-1, -2)).float() * scale  # (B, Hkv, G, S)
            if bias is not None:
                scores = scores + bias
            y = scores.softmax(-1).to(values.dtype) @ values  # (B, Hkv, G, D)
            x = x + y.reshape(B, H * D) @ wo
            gate_up = _rms_norm(x, g_ffn, eps) @ w13  # (B, 2 hidden)
            gate, up = gate_up.split(cfg.hidden_dim, dim=-1)
            x = x + (F.silu(gate) * up) @ w2
        return _rms_norm(x, self.final_norm, eps) @ self.head  # (B, V)


def _rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """model.RMSNorm's arithmetic, without F.rms_norm's dtype round trips (costly per token on CPU)."""
    x32 = x.float()
    return gain * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


def packed_decoder(model: Transformer) -> PackedDecoder:
    """The model's packed decoder, built on first use and rebuilt after any weight changes."""
    packed = _PACKED.get(model)
    if packed is None or packed.version != _version(model):
        packed = PackedDecoder(model)
        _PACKED[model] = packed
    return packed
