"""Hand-written backward passes for RMSNorm and the SwiGLU feed-forward (the paper's section 2.4).

Autograd stores every intermediate of a layer for the backward pass. These functions save only
what is expensive to recompute - a layer's input and the outputs of its linear layers - and
recompute the cheap element-wise work (the norm's scale, SwiGLU's gate) during the backward.
The math is written out so it can be checked against autograd (`torch.autograd.gradcheck`).

Numerics follow llama_core.model: the norm runs in float32 (or wider) and casts back. Under
torch.autocast the backward runs under the same autocast state as the forward did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs, as the model's RMSNorm; float64 stays float64 (gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class RMSNormFunction(torch.autograd.Function):
    """y = w * x / sqrt(mean(x^2) + eps); saves x and w only, recomputes 1/rms in the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        xc = x.to(_compute_dtype(x))  # (..., D)
        normed = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)
        return weight * normed.type_as(x)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight = ctx.saved_tensors
        dtype = _compute_dtype(x)
        xc = x.to(dtype)  # (..., D)
        rstd = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + ctx.eps)  # (..., 1), recomputed
        normed = xc * rstd
        dnormed = dy.to(dtype) * weight.to(dtype)
        # d/dx of x * r(x), with r = (mean(x^2) + eps)^(-1/2): r * (dn - n * mean(dn * n))
        dx = rstd * (dnormed - normed * (dnormed * normed).mean(-1, keepdim=True))
        # the forward multiplies w by the normed value already cast to x's dtype
        dweight = (dy.to(dtype) * normed.type_as(x).to(dtype)).flatten(0, -2).sum(0)
        return dx.type_as(x), dweight.type_as(weight), None


class SwiGLUFunction(torch.autograd.Function):
    """w2(silu(w1 x) * w3 x) (Shazeer, 2020), saving x and the outputs of w1 and w3 only.

    Autograd would also keep silu(w1 x) and the gated product (each as wide as the hidden layer);
    both are recomputed element-wise from w1 x and w3 x in the backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
        a = F.linear(x, w1)  # (..., H)
        b = F.linear(x, w3)  # (..., H)
        ctx.save_for_backward(x, w1, w2, w3, a, b)
        ctx.autocast = _autocast_state(x.device.type)
        return F.linear(F.silu(a) * b, w2)  # (..., D)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, w1, w2, w3, a, b = ctx.saved_tensors
        enabled, dtype = ctx.autocast
        with torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
            sig = torch.sigmoid(a)
            gate = a * sig  # silu(a), recomputed
            hidden = gate * b  # (..., H), the input of w2, recomputed
            dhidden = dy @ w2  # (..., H)
            # silu'(a) = sig(a) * (1 + a * (1 - sig(a)))
            da = dhidden * b * (sig * (1 + a * (1 - sig)))
            db = dhidden * gate
            dx = da @ w1 + db @ w3  # (..., D)
            flat = lambda t: t.flatten(0, -2)  # (N, features): weight grads sum over every token
            dw1 = flat(da).t() @ flat(x)  # (H, D)
            dw2 = flat(dy).t() @ flat(hidden)  # (D, H)
            dw3 = flat(db).t() @ flat(x)  # (H, D)
        return dx, dw1, dw2, dw3


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of x (..., D) with gain `weight` (D,), through the hand-written backward."""
    return RMSNormFunction.apply(x, weight, eps)


def swiglu_feed_forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                        w3: torch.Tensor) -> torch.Tensor:
    """The SwiGLU feed-forward of x (..., D) with nn.Linear weights w1, w3 (H, D) and w2 (D, H)."""
    return SwiGLUFunction.apply(x, w1, w2, w3)
