"""A fast one-token decode step: the model's weights packed for matrix-vector products.

Decoding one token reads every weight once and does little else, so its speed is memory
bandwidth plus per-operation overhead. The packed copy fuses wq|wk|wv and w1|w3 into one matrix
each (fewer, larger products), stores every matrix as (in, out) so `x @ W` streams it row by row
(on CPU about twice as fast as `F.linear` for the vocabulary head), folds the norm gains and the
attention scale into those matrices, applies RoPE to queries and keys together as one complex
product, and attends without a mask kernel for the single query: about 35 tensor operations per
layer instead of the plain model's 60, which matters when a whole small model takes a millisecond.
It computes the plain model's function (tests compare it with `Transformer.forward`).

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
    """The decode-step weights of one Transformer, laid out for (B, dim) @ (dim, out) products.

    Two constants are folded into the packed matrices, exactly as the algebra allows: each RMSNorm
    gain g into the matrix that consumes the normalised vector ((x * r * g) @ W = (x * r) @ (g W)),
    and the attention scale 1/sqrt(D) into the query rows (RoPE is linear, so it commutes).
    """

    def __init__(self, model: Transformer):
        cfg = model.config
        self.cfg = cfg
        self.version = _version(model)
        self.fp32 = model.output.weight.dtype == torch.float32
        scale = 1.0 / math.sqrt(cfg.head_dim)
        with torch.no_grad():
            self.layers = []
            for layer in model.layers:
                attn, ffn = layer.attention, layer.feed_forward
                wqkv = torch.cat([attn.wq.weight * scale, attn.wk.weight, attn.wv.weight])  # (out, dim)
                w13 = torch.cat([ffn.w1.weight, ffn.w3.weight])  # (2 hidden, dim)
                self.layers.append((
                    (wqkv * layer.attention_norm.weight).t().contiguous(),  # (dim, (H + 2 Hkv) D)
                    attn.wo.weight.t().contiguous(),  # (H D, dim)
                    (w13 * layer.ffn_norm.weight).t().contiguous(),  # (dim, 2 hidden)
                    ffn.w2.weight.t().contiguous(),  # (hidden, dim)
                ))
            self.embedding = model.tok_embeddings.weight.detach()
            self.head = (model.output.weight * model.norm.weight).t().contiguous()  # (dim, V)
            # e^(i m theta_j) per position m: rotating a pair is multiplying by a unit complex number
            self.rotations = torch.complex(model.rope_cos.float(), model.rope_sin.float())  # (max_seq_len, D/2)

    def step(self, model: Transformer, token: torch.Tensor, pos: int,
             key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """token (B, 1) at position `pos` against the caches of `model`; logits (B, V).

        `key_mask` (B, pos+1) marks real keys (left padding is False).
        """
        cfg = self.cfg
        H, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        B = token.shape[0]
        n_qk, eps = (H + Hkv) * D, cfg.norm_eps
        bias = None
        if key_mask is not None:  # additive mask, -inf on padding: (B, 1, 1, S)
            bias = torch.zeros(key_mask.shape, dtype=torch.float32, device=key_mask.device)
            bias = bias.masked_fill_(~key_mask, float("-inf"))[:, None, None, :]
        rot = self.rotations[pos]  # (D/2,)
        x = F.embedding(token[:, 0], self.embedding)  # (B, dim)
        for (wqkv, wo, w13, w2), block in zip(self.layers, model.layers, strict=True):
            cache = block.attention.cache
            qkv = _normalized(x, eps, self.fp32) @ wqkv  # (B, (H + 2 Hkv) D)
            qk = qkv[:, :n_qk] if self.fp32 else qkv[:, :n_qk].float()
            qk = torch.view_as_complex(qk.view(B, H + Hkv, D // 2, 2)) * rot
            qk = torch.view_as_real(qk).view(B, H + Hkv, D)  # (B, H + Hkv, D), rotated
            if not self.fp32:
                qk = qk.to(x.dtype)
            cache.k[:, :, pos] = qk[:, H:]
            cache.v[:, :, pos] = qkv[:, n_qk:].view(B, Hkv, D)
            keys, values = cache.k[:, :, :pos + 1], cache.v[:, :, :pos + 1]  # (B, Hkv, S, D)
            # each key/value head serves a group of H/Hkv query heads: no repeated keys needed
            scores = qk[:, :H].view(B, Hkv, H // Hkv, D) @ keys.transpose(-1, -2)  # (B, Hkv, G, S)
            if not self.fp32:
                scores = scores.float()
            if bias is not None:
                scores = scores + bias
            probs = scores.softmax(-1)
            y = (probs if self.fp32 else probs.to(values.dtype)) @ values  # (B, Hkv, G, D)
            x = torch.addmm(x, y.view(B, H * D), wo)
            gate, up = (_normalized(x, eps, self.fp32) @ w13).split(cfg.hidden_dim, dim=-1)
            x = torch.addmm(x, F.silu(gate) * up, w2)
        return _normalized(x, eps, self.fp32) @ self.head  # (B, V)


def _normalized(x: torch.Tensor, eps: float, fp32: bool) -> torch.Tensor:
    """RMSNorm without its gain (folded into the next matrix), in float32 like model.RMSNorm."""
    x32 = x if fp32 else x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True).add_(eps))
    return normed if fp32 else normed.type_as(x)


def packed_decoder(model: Transformer) -> PackedDecoder:
    """The model's packed decoder, built on first use and rebuilt after any weight changes."""
    packed = _PACKED.get(model)
    if packed is None or packed.version != _version(model):
        packed = PackedDecoder(model)
        _PACKED[model] = packed
    return packed
