"""Causal attention behind one `attend()`: torch SDPA, xformers (CUDA), or eager (for inspection).

The paper trains with a memory-efficient causal kernel that neither stores the attention weights
nor computes the masked scores (xformers). `sdpa` and `xformers` are such kernels; `eager` is the
explicit softmax(QK^T/sqrt(d) + mask)V, kept as the reference and to return the weights.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from functools import cache

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKENDS = ("auto", "sdpa", "xformers", "eager")


_XFORMERS: list[bool] = []  # whether xformers imports, once asked (a plain list: compiled code reads it too)


def xformers_available() -> bool:
    if not _XFORMERS:
        _XFORMERS.append(_xformers_imports())
    return _XFORMERS[0]


def _xformers_imports() -> bool:
    if importlib.util.find_spec("xformers") is None:
        return False
    try:
        import xformers.ops  # noqa: F401
    except Exception as err:  # a broken install (wrong torch/CUDA build) must not break the lab
        log.warning("xformers is installed but does not import (%s); using torch SDPA", err)
        return False
    return True


def xformers_unavailable_reason(q: torch.Tensor) -> str | None:
    """Why the xformers kernel cannot run on `q`, or None if it can."""
    if not xformers_available():
        return "xformers is not installed (pip install -e '.[cuda]' on a CUDA machine)"
    if q.device.type != "cuda":
        return f"xformers has no kernels for device {q.device.type!r}; it needs CUDA"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"xformers runs in float16/bfloat16 here, got {q.dtype}"
    return None


@cache
def _log_choice(choice: str, device: str, dtype: str) -> None:
    log.info("attention backend 'auto' chose %r for %s/%s", choice, device, dtype)


def resolve_backend(backend: str, q: torch.Tensor, need_weights: bool = False) -> str:
    """The backend that will run: validates `backend` and resolves 'auto'."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if need_weights and backend not in ("auto", "eager"):
        raise ValueError(f"backend {backend!r} never materialises attention weights; use 'eager'")
    if need_weights:
        return "eager"
    if backend == "auto":
        choice = "xformers" if xformers_unavailable_reason(q) is None else "sdpa"
        if not torch.compiler.is_compiling():  # a logged-once cache is not for traced code
            _log_choice(choice, q.device.type, str(q.dtype))
        return choice
    if backend == "xformers":
        reason = xformers_unavailable_reason(q)
        if reason:
            raise RuntimeError(f"attention backend 'xformers' cannot run here: {reason}; use 'sdpa' or 'auto'")
    return backend


def causal_mask(n_queries: int, n_keys: int, q_start: int, device: torch.device,
                key_mask: torch.Tensor | None = None, segments: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask (True = attend), shape (T, S), or (B, 1, T, S) with `key_mask` or `segments` (B, S).

    Query i sits at slot q_start + i and sees keys 0 .. q_start + i (real ones only, and with
    `segments` only those of its own segment: packed examples never see each other).
    """
    q_pos = torch.arange(q_start, q_start + n_queries, device=device)[:, None]
    k_pos = torch.arange(n_keys, device=device)[None, :]
    mask = k_pos <= q_pos  # (T, S)
    if segments is not None:
        own = segments[:, q_start:q_start + n_queries]  # (B, T): each query's segment
        mask = mask & (own[:, None, :, None] == segments[:, None, None, :])  # (B, 1, T, S)
    if key_mask is not None:
        # a padding query still sees itself, so no row is all -inf (NaN through softmax)
        mask = (mask & key_mask[:, None, None, :].bool()) | (k_pos == q_pos)
    return mask


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "auto",
           q_start: int = 0, key_mask: torch.Tensor | None = None, segments: torch.Tensor | None = None,
           return_weights: bool = False):
    """Causal attention of q (B, H, T, D) over k, v (B, Hkv, S, D); H a multiple of Hkv.

    Keys sit at slots 0..S-1 and queries at q_start..q_start+T-1. `key_mask` (B, S), True
    where a key is real, hides padding. `segments` (B, S) labels each slot's example in a packed
    row (one id per contiguous run): a query attends only within its own. Returns (B, H, T, D),
    and with `return_weights` also the attention weights (B, H, T, S) (eager only).
    """
    B, H, T, D = q.shape
    S, Hkv = k.shape[2], k.shape[1]
    if H % Hkv:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({Hkv})")
    if q_start + T > S:
        raise ValueError(f"queries reach position {q_start + T - 1} but only {S} keys were given")
    if segments is not None and segments.shape != (B, S):
        raise ValueError(f"segments must label every key slot, shape ({B}, {S}); got {tuple(segments.shape)}")
    chosen = resolve_backend(backend, q, need_weights=return_weights)
    if chosen == "eager":
        out, weights = _eager(q, k, v, q_start, key_mask, segments)
        return (out, weights) if return_weights else out
    if chosen == "xformers":
        return _xformers(q, k, v, q_start, key_mask, segments)
    return _sdpa(q, k, v, q_start, key_mask, segments)


def _sdpa(q, k, v, q_start, key_mask, segments=None):
    T, S = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    plain = key_mask is None and segments is None
    if plain and T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if plain and T == 1:  # one new token sees every cached key: no mask at all
        return _one_query(q, k, v)
    mask = causal_mask(T, S, q_start, q.device, key_mask, segments)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def _one_query(q, k, v):
    """Attention of a single query per head (decoding) as two small products, each key/value head
    serving its group of query heads without repeating it: cheaper than a fused kernel's setup for
    one row (measured on CPU, where that kernel also starts a thread team per call)."""
    B, H, _, D = q.shape
    Hkv = k.shape[1]
    scores = (q.view(B, Hkv, H // Hkv, D) @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D))  # (B, Hkv, G, S)
    probs = scores.float().softmax(-1).to(v.dtype)
    return (probs @ v).view(B, H, 1, D)


def _eager(q, k, v, q_start, key_mask, segments=None):
    T, S = q.shape[2], k.shape[2]
    k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
    scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.shape[-1])  # (B, H, T, S)
    mask = causal_mask(T, S, q_start, q.device, key_mask, segments)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with no visible key: all-zero
    return (weights.to(v.dtype) @ v), weights


def _xformers(q, k, v, q_start, key_mask, segments=None):
    import xformers.ops as xops
    from xformers.ops.fmha.attn_bias import BlockDiagonalCausalMask, LowerTriangularFromBottomRightMask

    B, H, T, D = q.shape
    S = k.shape[2]
    if key_mask is not None or q_start + T != S or (segments is not None and T != S):
        # padding masks and partial key windows are generation-time shapes: SDPA serves them
        return _sdpa(q, k, v, q_start, key_mask, segments)
    k, v = repeat_kv(k, H).transpose(1, 2), repeat_kv(v, H).transpose(1, 2)  # (B, S, H, D)
    q = q.transpose(1, 2)
    if segments is None:
        bias = LowerTriangularFromBottomRightMask() if T > 1 else None
        return xops.memory_efficient_attention(q, k, v, attn_bias=bias).transpose(1, 2)
    # packed rows: every row's runs of one segment, end to end, as one block-diagonal causal sequence
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    edges = [*starts.flatten().nonzero().flatten().tolist(), B * T]
    bias = BlockDiagonalCausalMask.from_seqlens([b - a for a, b in zip(edges, edges[1:])])
    out = xops.memory_efficient_attention(q.reshape(1, B * T, H, D), k.reshape(1, B * T, H, D),
                                          v.reshape(1, B * T, H, D), attn_bias=bias)  # (1, B*T, H, D)
    return out.view(B, T, H, D).transpose(1, 2)


def repeat_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, Hkv, S, D) -> (B, n_heads, S, D): each key/value head shared by its query group."""
    n_rep = n_heads // x.shape[1]
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)
