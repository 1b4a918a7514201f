"""The LLaMA architecture (Touvron et al., 2023, section 2.2), with Meta's parameter names.

A decoder-only Transformer with three changes: RMSNorm pre-normalisation of each sub-layer's
input, the SwiGLU feed-forward, and rotary position embeddings. No biases anywhere. Grouped-query
attention, other rope thetas and tied embeddings cover the later LLaMA-family checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llama_core.attention import attend, resolve_backend
from llama_core.config import ModelConfig
from llama_core.loss import plain_head


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g (Zhang & Sennrich, 2019); computed in float32.

    The gain g may be folded into the linear layer that reads the output (llama_core.packing):
    then `weight` is None and the norm returns x / rms(x).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight: nn.Parameter | None = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return normed if self.weight is None else self.weight * normed


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles m * theta^(-2i/d), each (max_seq_len, head_dim/2)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate each consecutive pair of x (B, T, H, D) by its position's angles (Meta's layout).

    The pair (x[2i], x[2i+1]) is the complex number x[2i] + i·x[2i+1]; rotating it is one complex
    multiply by `rotation` (T, D/2) = cos + i·sin (or (B, T, D/2), a row's own positions), a single
    fused kernel forward and backward. Compiled code gets `rotation` as cos and sin stacked on a
    last axis of 2 (`rotations`) and does the same product in real arithmetic.
    """
    if not rotation.is_complex():  # Inductor has no complex kernels
        re, im = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, T, H, D/2) each
        cos, sin = rotation.unsqueeze(-3).unbind(-1)
        return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2).type_as(x)
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (B, T, H, D/2)
    return torch.view_as_real(pairs * rotation.unsqueeze(-2)).flatten(-2).type_as(x)


def rotations(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """e^(i m theta_j) = cos + i·sin for each position m: complex, or (..., D/2, 2) real while compiling."""
    cos, sin = cos.float(), sin.float()
    return torch.stack([cos, sin], dim=-1) if torch.compiler.is_compiling() else torch.complex(cos, sin)


class KVCache(nn.Module):
    """Preallocated keys and values of one layer: (B, Hkv, max_seq_len, D)."""

    def __init__(self, batch: int, n_kv_heads: int, max_seq_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str | None = None):
        super().__init__()
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, Hkv, T, D) at start_pos; return every key and value up to the last one.

        A one-row k, v over a cache of many rows is written into every row and attended with one:
        a prompt prefix that every row shares is run once (llama_core.generate).
        """
        B, T = k.shape[0], k.shape[2]
        self.k.narrow(2, start_pos, T).copy_(k)
        self.v.narrow(2, start_pos, T).copy_(v)
        return self.k[:B].narrow(2, 0, start_pos + T), self.v[:B].narrow(2, 0, start_pos + T)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.wqkv: nn.Module | None = None  # wq|wk|wv as one matrix, once packed (llama_core.packing)
        self.cache: KVCache | None = None

    def qkv(self, x: torch.Tensor, rotation: torch.Tensor):
        """Queries (B, H, T, D) and keys, values (B, Hkv, T, D); queries and keys rotated by RoPE."""
        B, T, _ = x.shape
        if self.wqkv is None:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        else:  # one product instead of three
            kv = self.n_kv_heads * self.head_dim
            q, k, v = self.wqkv(x).split([self.n_heads * self.head_dim, kv, kv], dim=-1)
        q = apply_rope(q.view(B, T, self.n_heads, self.head_dim), rotation)
        k = apply_rope(k.view(B, T, self.n_kv_heads, self.head_dim), rotation)
        return q.transpose(1, 2), k.transpose(1, 2), v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, rotation, start_pos: int, backend: str, key_mask=None, segments=None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x, rotation)
        if self.cache is not None:
            k, v = self.cache.update(start_pos, k, v)
        elif start_pos:
            raise ValueError("start_pos > 0 needs a KV cache (see llama_core.generate)")
        y = attend(q, k, v, backend=backend, q_start=start_pos, key_mask=key_mask,
                   segments=segments)  # (B, H, T, D)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU (Shazeer, 2020): w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w13: nn.Module | None = None  # w1|w3 as one matrix, once packed (llama_core.packing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w13 is None:
            gate, up = self.w1(x), self.w3(x)
        else:
            gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    """Pre-normalisation: each sub-layer normalises its input, the residual stream stays raw."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, rotation, start_pos: int, backend: str, key_mask=None, segments=None):
        # segments by keyword: tensor parallelism lays out the attention's positional inputs
        h = x + self.attention(self.attention_norm(x), rotation, start_pos, backend, key_mask, segments=segments)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, attn_backend: str = "auto"):
        super().__init__()
        self.config = cfg
        self.attn_backend = attn_backend
        self.loss_head = plain_head  # training may install a fused head (llama_core.loss)
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, 0.02) weights; residual projections scaled by 1/sqrt(2 * n_layers) (GPT-2)."""
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, start_pos: int = 0,
                key_mask: torch.Tensor | None = None, last_only: bool = False,
                rope_offset: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                segments: torch.Tensor | None = None):
        """tokens (B, T) at slots start_pos.. -> (logits (B, T, V), loss or None).

        `targets` (B, T) gives the mean cross-entropy (ignore_index -100); a fused loss head
        (installed for training) returns no logits. With a KV cache (`setup_caches`) the tokens
        attend to every cached slot before start_pos: this is how generation decodes.
        `key_mask` (B, S) marks real (non-padding) slots for batched generation;
        `last_only` gives the logits (B, 1, V) of the last position alone (a prompt's prefill).
        A token's RoPE position is its slot, unless `rope_offset` (B,) places row b's tokens
        rope_offset[b] positions before their cache slots (the padding between a shared prefix and
        a row's own tokens does not count as distance) or `positions` (B, T) gives each one.
        `segments` (B, S) labels the examples packed into a row: a token attends only within its
        own (llama_core.sft packs with positions restarting at 0 and a segment id per example).
        """
        B, T = tokens.shape
        if start_pos + T > self.config.max_seq_len:
            raise ValueError(f"sequence reaches position {start_pos + T} but the model's context "
                             f"(max_seq_len) is {self.config.max_seq_len}; shorten the input")
        if positions is not None and rope_offset is not None:
            raise ValueError("give a row's RoPE positions either as rope_offset or as positions, not both")
        # e^(i m theta_j) for each position m: rotating a pair is one complex multiply
        if positions is None and rope_offset is None:
            rotation = rotations(self.rope_cos[start_pos:start_pos + T], self.rope_sin[start_pos:start_pos + T])
        else:
            if positions is None:
                slots = torch.arange(start_pos, start_pos + T, device=tokens.device)
                positions = (slots[None] - rope_offset.to(tokens.device)[:, None]).clamp(min=0)  # padding clamps
            rotation = rotations(self.rope_cos[positions], self.rope_sin[positions])  # (B, T, D/2)
        h = self.tok_embeddings(tokens)  # (B, T, dim)
        backend = resolve_backend(self.attn_backend, h)  # once, not per layer
        for layer in self.layers:
            h = layer(h, rotation, start_pos, backend, key_mask, segments)
        h = self.norm(h[:, -1:] if last_only else h)
        if targets is None:
            return self.output(h), None  # logits (B, T, V)
        return self.loss_head(h, self.output, targets)

    def setup_caches(self, batch: int, max_seq_len: int | None = None, dtype: torch.dtype | None = None):
        """Give every layer a preallocated KV cache (for generation)."""
        cfg = self.config
        length = min(max_seq_len or cfg.max_seq_len, cfg.max_seq_len)
        dtype = dtype or self.tok_embeddings.weight.dtype
        device = self.tok_embeddings.weight.device
        for layer in self.layers:
            layer.attention.cache = KVCache(batch, cfg.n_kv_heads, length, cfg.head_dim, dtype, device)

    def keep_cache_rows(self, rows: torch.Tensor) -> None:
        """Keep only these rows (B',) of every layer's KV cache: finished sequences leave a batch."""
        for layer in self.layers:
            cache = layer.attention.cache
            cache.k, cache.v = cache.k.index_select(0, rows), cache.v.index_select(0, rows)

    def clear_caches(self) -> None:
        for layer in self.layers:
            layer.attention.cache = None

    @property
    def num_params(self) -> int:
        """Unique weights: the parameters, and the weights a quantized layer holds as buffers
        (llama_core.quantize); a tied output matrix counts once, also where packing or quantization
        gave it its own copy."""
        n = sum(p.numel() for p in self.parameters())
        n += sum(m.in_features * m.out_features for m in self.modules()
                 if hasattr(m, "in_features") and next(m.parameters(recurse=False), None) is None)
        if self.config.tie_embeddings and getattr(self.output, "weight", None) is not self.tok_embeddings.weight:
            n -= self.config.vocab_size * self.config.dim  # the head's own copy of the embedding
        return n
