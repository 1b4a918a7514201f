"""Cost arithmetic as pure functions of a config: parameters, FLOPs, MFU, MBU, KV bytes; bits per byte."""

from __future__ import annotations

import math

from llama_core.config import ModelConfig


def layer_params(cfg: ModelConfig) -> int:
    """One transformer block: wq, wk, wv, wo, w1, w2, w3 and two RMSNorm gains."""
    attn = cfg.dim * cfg.n_heads * cfg.head_dim * 2 + cfg.dim * cfg.n_kv_heads * cfg.head_dim * 2
    ffn = 3 * cfg.dim * cfg.hidden_dim
    return attn + ffn + 2 * cfg.dim


def param_count(cfg: ModelConfig) -> int:
    """Exact parameter count (Table 2's 6.7B ... 65.2B for the paper presets); tied weights once."""
    embeddings = cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2)
    return embeddings + cfg.n_layers * layer_params(cfg) + cfg.dim


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matrix multiply per token: the blocks and the output head.

    The input embedding is a lookup, not a matmul, so it costs no FLOPs (even when tied).
    """
    return cfg.n_layers * layer_params(cfg) + cfg.vocab_size * cfg.dim


def attention_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Forward FLOPs of QK^T and AV for one token against `seq_len` keys, all layers."""
    return 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """6N + 12 L H D T (PaLM, Chowdhery et al. 2022, appendix B): forward + backward."""
    return 6 * matmul_params(cfg) + 3 * attention_flops_per_token(cfg, seq_len)


def inference_flops_per_token(cfg: ModelConfig, context: int) -> int:
    """2N + 4 L H D T: one forward pass of one token attending to `context` positions."""
    return 2 * matmul_params(cfg) + attention_flops_per_token(cfg, context)


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak FLOP/s."""
    return tokens_per_s * flops_per_token / peak_flops


def kv_cache_bytes(cfg: ModelConfig, seq_len: int, batch: int = 1, bytes_per_value: int = 2) -> int:
    """Bytes of keys and values held for `seq_len` positions of `batch` sequences."""
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * seq_len * batch * bytes_per_value


def decode_bytes_per_token(cfg: ModelConfig, context: int, bytes_per_param: int = 2,
                           batch: int = 1) -> int:
    """Bytes read from memory to decode one step: every weight once, plus the KV cache so far."""
    return param_count(cfg) * bytes_per_param + kv_cache_bytes(cfg, context, batch, bytes_per_param)


def mbu(steps_per_s: float, bytes_per_step: float, peak_bytes_per_s: float) -> float:
    """Model bandwidth utilisation: achieved bytes/s over the device's peak memory bandwidth."""
    return steps_per_s * bytes_per_step / peak_bytes_per_s


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Cross-entropy per token (nats) -> bits per UTF-8 byte: comparable across tokenizers."""
    return loss_nats / math.log(2) / bytes_per_token


def format_count(n: float) -> str:
    """Truncate to one decimal like the paper: 65,285,660,672 -> '65.2B', 6,738,415,616 -> '6.7B'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{int(n / scale * 10) / 10:.1f}{unit}"
    return str(int(n))
