"""Activation checkpointing applied from outside the plain model: trade backward compute for memory.

Policies (`POLICIES`), roughly from most activation memory to least:
- "none": autograd keeps every intermediate of the forward pass.
- "fused": the paper's hand-written backward functions (llama_core.fused) for RMSNorm and the
  SwiGLU feed-forward: they keep inputs and linear-layer outputs, recompute element-wise work.
- "selective": the paper's rule applied to whole blocks with torch's selective checkpointing:
  keep the outputs of the linear layers (wq, wk, wv, wo, w1, w2, w3) and of the attention kernel,
  recompute the cheap element-wise work (norms, SwiGLU's gate, RoPE) in the backward.
- "full": keep only each block's input and recompute the whole block in the backward.

Every policy computes the same loss and gradients. The modules keep their classes, parameter names
and state dict (an instance-level `forward` replaces the class's), so optimizers, checkpoints and
FSDP see the same model.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from llama_core.fused import rms_norm, swiglu_feed_forward
from llama_core.model import FeedForward, RMSNorm, Transformer, TransformerBlock

POLICIES = ("none", "full", "selective", "fused")

# The linear layers' matmuls: expensive to recompute, so "selective" keeps their outputs.
_SAVED_OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default}


def apply_activation_checkpointing(model: Transformer, policy: str) -> Transformer:
    """Apply `policy` (one of POLICIES) to `model` in place and return it.

    Applying a policy replaces any earlier one, so "none" restores the plain model.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown activation checkpointing policy {policy!r}; choose one of {POLICIES}")
    for module in model.modules():
        if isinstance(module, (TransformerBlock, RMSNorm, FeedForward)):
            module.__dict__.pop("forward", None)  # back to the class's forward
    if policy == "fused":
        for module in model.modules():
            if isinstance(module, RMSNorm):
                module.forward = functools.partial(_fused_rms_norm_forward, module)
            elif isinstance(module, FeedForward):
                module.forward = functools.partial(_fused_feed_forward_forward, module)
    elif policy in ("full", "selective"):
        for block in model.layers:
            # partial (not a closure) so that copy.deepcopy rebinds it to the copied block
            block.forward = functools.partial(_checkpointed_forward, block, policy == "selective")
    return model


def _checkpointed_forward(block: TransformerBlock, selective: bool, *args, **kwargs):
    plain = functools.partial(type(block).forward, block)
    if not torch.is_grad_enabled():  # inference (and KV-cache updates) must run exactly once
        return plain(*args, **kwargs)
    if selective:
        return checkpoint(plain, *args, use_reentrant=False, context_fn=_selective_contexts, **kwargs)
    # no context_fn argument at all: torch.compile cannot trace one chosen at run time
    return checkpoint(plain, *args, use_reentrant=False, **kwargs)


def _keep_linear_and_attention_outputs(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    name = op.name()  # e.g. aten::_scaled_dot_product_flash_attention_for_cpu, xformers_flash::flash_fwd
    if op in _SAVED_OPS or "attention" in name or "flash" in name:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _selective_contexts():
    return create_selective_checkpoint_contexts(_keep_linear_and_attention_outputs)


def _fused_rms_norm_forward(norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
    return rms_norm(x, norm.weight, norm.eps)


def _fused_feed_forward_forward(ff: FeedForward, x: torch.Tensor) -> torch.Tensor:
    return swiglu_feed_forward(x, ff.w1.weight, ff.w2.weight, ff.w3.weight)
