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


# ------------------------------------------------------------------ memory per GPU under a layout

# Bytes per parameter held for training in mixed precision: fp32 weights, fp32 gradients, and
# Adam's two fp32 moments (Rajbhandari et al., 2020, ZeRO, section 3: 4 + 4 + 8 of the 16).
WEIGHT_BYTES, GRAD_BYTES, ADAM_BYTES = 4, 4, 8
ACTIVATION_BYTES = 2  # bf16 activations


def activation_elements_per_layer(cfg: ModelConfig, seq_len: int, batch: int, tp: int = 1,
                                  sequence_parallel: bool = False, policy: str = "none") -> float:
    """Activation values one block keeps for its backward, per rank (Korthikanti et al., 2022, Table 2,
    counted for LLaMA's block: RMSNorm, RoPE, SwiGLU, no dropout, a flash kernel that keeps no s x s scores).

    `policy` is the lab's activation checkpointing: "none" keeps the norms' and linear layers' inputs
    (4 dim-wide tensors), q/k/v and the attention output, and SwiGLU's four hidden-wide tensors;
    "selective" (the paper's section 2.4) keeps the block input and the outputs of the linear layers
    and of attention; "full" the block input only (the one block recomputed at a time in the
    backward holds its own activations for a moment; not counted here). Tensor parallelism splits what lies between a
    column-wise and a row-wise product by `tp`; sequence parallelism splits the dim-wide residual
    tensors too, except the all-gathered inputs of the column-wise products, which autograd keeps whole.
    """
    h, f, sb = cfg.dim, cfg.hidden_dim, seq_len * batch
    qkv = h + 2 * h * cfg.n_kv_heads // cfg.n_heads
    split = tp
    stream = tp if sequence_parallel else 1  # the residual stream's share per rank
    if policy == "none":
        return sb * (2 * h / stream + 2 * h + (qkv + h + 4 * f) / split)
    if policy == "selective":
        # block input, wo and w2 outputs on the stream; wq/wk/wv, attention and w1/w3 outputs split
        return sb * (3 * h / stream + (qkv + h + 2 * f) / split)
    if policy == "full":
        return sb * h / stream
    raise ValueError(f"unknown policy {policy!r}; choose none, selective or full")


def training_memory_per_gpu(cfg: ModelConfig, seq_len: int, batch: int, dp: int = 1, tp: int = 1,
                            sequence_parallel: bool = False, policy: str = "none") -> dict:
    """Bytes per GPU of weights, gradients, Adam state (FSDP shards them over dp, TP over tp), the bf16
    blocks FSDP gathers (the running one and the prefetched next) and the activations of `batch`
    sequences of `seq_len` (every layer's, plus the embedding output)."""
    shards = dp * tp
    params = param_count(cfg)
    layers = cfg.n_layers * activation_elements_per_layer(cfg, seq_len, batch, tp, sequence_parallel, policy)
    activations = (layers + seq_len * batch * cfg.dim / (tp if sequence_parallel else 1)) * ACTIVATION_BYTES
    out = {"weights": params * WEIGHT_BYTES / shards, "gradients": params * GRAD_BYTES / shards,
           "adam": params * ADAM_BYTES / shards, "gathered": 2 * layer_params(cfg) * ACTIVATION_BYTES / tp,
           "activations": activations}
    return {**out, "total": sum(out.values())}


def fsdp_bytes_per_rank(cfg: ModelConfig, dp: int, tp: int = 1, bytes_per_value: int = 4) -> float:
    """Bytes one rank sends per optimizer step for FSDP2 over `dp` ranks (ring collectives).

    Each block's weights (1/tp of its matrices, its norm gains whole) are all-gathered in the forward
    and again in the backward, and their gradients reduce-scattered; the root (embeddings, final
    norm, output) is gathered only once, as FSDP2 keeps it unsharded between forward and backward.
    A ring sends (n-1)/n of the tensor.
    """
    block_norms = cfg.n_layers * 2 * cfg.dim
    blocks = cfg.n_layers * layer_params(cfg) - block_norms
    root = param_count(cfg) - blocks - block_norms - cfg.dim
    per_rank = 3 * (blocks / tp + block_norms) + 2 * (root / tp + cfg.dim)
    return (dp - 1) / dp * bytes_per_value * per_rank


def tp_bytes_per_rank(cfg: ModelConfig, seq_len: int, batch: int, tp: int, sequence_parallel: bool = True,
                      bytes_per_value: int = 4) -> float:
    """Bytes one rank sends per micro-batch of `batch` sequences for tensor parallelism over `tp` ranks.

    Per block, forward and backward each move four (batch, seq, dim) activations: with sequence
    parallelism two all-gathers and two reduce-scatters, without it two all-reduces (twice the bytes
    of each): the same total (Korthikanti et al., 2022, section 4.2.2). Around the blocks, the
    embedding's and the output head's input move four more, the gathered logits one (batch, seq,
    vocab), and under sequence parallelism each norm gain's gradient is all-reduced.
    """
    share = (tp - 1) / tp
    activation = batch * seq_len * cfg.dim
    per_step = (8 * cfg.n_layers + 4) * activation + batch * seq_len * cfg.vocab_size
    norms = 2 * (2 * cfg.n_layers + 1) * cfg.dim if sequence_parallel else 0
    return share * bytes_per_value * (per_step + norms)
