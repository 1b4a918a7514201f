"""The paper's optimiser: AdamW with decoupled weight decay, and the pure schedule `lr_at`."""

from __future__ import annotations

import math

import torch

from llama_core.config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (linear layers, embeddings); none on RMSNorm gains.

    Decaying a norm's gain pulls it towards zero, shrinking the signal it exists to rescale;
    the usual practice (nanoGPT, torchtitan, Meta's training code as described) decays only
    the 2-D weights.
    """
    decay, no_decay = [], []
    for p in model.parameters():  # tied weights appear once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # foreach is deterministic on CPU and faster than the per-parameter loop
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, foreach=True)


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to min_ratio * peak at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total:
        return peak * min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
