"""The output head's loss: plain (logits, then cross-entropy) or fused and chunked.

With a 32,000-piece vocabulary the logits of a small model's batch dwarf everything else it
holds (8 x 256 tokens x 32,000 x 4 bytes = 262 MB), and softmax, its backward and the zeroed
gradient each sweep all of it again. The fused head computes, chunk by chunk of rows, the logits,
their log-sum-exp, the loss and at once the gradients of the hidden states and of the output
matrix (Liger-Kernel's fused linear cross-entropy), so no full logits tensor ever exists. The
training loop installs it from outside the model (`use_fused_loss`); the plain model is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100


def plain_head(h: torch.Tensor, output: nn.Linear, targets: torch.Tensor):
    """(logits (B, T, V), mean cross-entropy): the reference."""
    logits = output(h)
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    return logits, loss


class FusedLinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(h_i W^T, t_i) with the gradients computed in the forward pass, chunk by chunk."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
        # h (N, d), weight (V, d), targets (N,)
        valid = targets != IGNORE_INDEX
        n_valid = valid.sum().clamp(min=1)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk):
            hc, tc = h[start:start + chunk], targets[start:start + chunk]
            vc = valid[start:start + chunk]
            safe_t = tc.clamp(min=0)
            log_probs = torch.log_softmax((hc @ weight.t()).float(), dim=-1)  # (c, V), one fused kernel
            total -= (log_probs.gather(1, safe_t[:, None]).squeeze(1) * vc).sum()
            probs = log_probs.exp_()  # softmax, in place
            probs.scatter_add_(1, safe_t[:, None], -vc[:, None].to(probs.dtype))  # minus the one-hot
            if not bool(vc.all()):  # a full pass over (c, V), only where some rows are ignored
                probs.mul_(vc[:, None])
            grad_logits = probs.to(h.dtype)
            grad_h[start:start + chunk] = grad_logits @ weight
            grad_w.addmm_(grad_logits.t().float(), hc.float())
        scale = 1.0 / n_valid.float()
        ctx.save_for_backward(grad_h * scale.to(h.dtype), (grad_w * scale).to(weight.dtype))
        return total * scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out.to(grad_h.dtype), grad_w * grad_out.to(grad_w.dtype), None, None


def fused_head(h: torch.Tensor, output: nn.Linear, targets: torch.Tensor, chunk: int = 256):
    """(None, mean cross-entropy): no logits are materialised or returned."""
    loss = FusedLinearCrossEntropy.apply(h.flatten(0, 1), output.weight, targets.flatten(), chunk)
    return None, loss


def use_fused_loss(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Install (or remove) the fused head on a Transformer; returns the model."""
    model.loss_head = fused_head if enabled else plain_head
    return model
