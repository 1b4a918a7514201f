"""The hand-written backward passes: exact gradients (gradcheck), same numbers as the model, fewer saves."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY
from llama_core.fused import rms_norm, swiglu_feed_forward
from llama_core.model import FeedForward, RMSNorm


def _saved_bytes(fn, *inputs) -> int:
    """Bytes of the distinct storages autograd saves for the backward of fn(*inputs)."""
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(saved.values())


def test_rms_norm_passes_gradcheck():
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: rms_norm(x, w, 1e-5), (x, weight))


def test_swiglu_feed_forward_passes_gradcheck():
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    w1, w3 = (torch.randn(12, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w2 = torch.randn(8, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swiglu_feed_forward, (x, w1, w2, w3))


def _grads(out: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(out, tensors, torch.ones_like(out))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_the_model(dtype):
    torch.manual_seed(0)
    norm = RMSNorm(TINY.dim, TINY.norm_eps).to(dtype)
    norm.weight.data.normal_()
    x = torch.randn(2, 5, TINY.dim, dtype=dtype, requires_grad=True)
    ref, ours = norm(x), rms_norm(x, norm.weight, norm.eps)
    assert ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref)
    tol = {"atol": 1e-2, "rtol": 1e-2} if dtype == torch.bfloat16 else {}
    for g_ours, g_ref in zip(_grads(ours, x, norm.weight), _grads(ref, x, norm.weight), strict=True):
        torch.testing.assert_close(g_ours, g_ref, **tol)


def test_swiglu_matches_the_model_and_under_autocast():
    torch.manual_seed(0)
    ff = FeedForward(TINY)
    x = torch.randn(2, 5, TINY.dim, requires_grad=True)
    weights = (ff.w1.weight, ff.w2.weight, ff.w3.weight)
    ref, ours = ff(x), swiglu_feed_forward(x, *weights)
    torch.testing.assert_close(ours, ref)
    for g_ours, g_ref in zip(_grads(ours, x, *weights), _grads(ref, x, *weights), strict=True):
        torch.testing.assert_close(g_ours, g_ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the training loop's mixed precision
        ref, ours = ff(x), swiglu_feed_forward(x, *weights)
    assert ours.dtype == ref.dtype == torch.bfloat16
    for g_ours, g_ref in zip(_grads(ours, x, *weights), _grads(ref, x, *weights), strict=True):
        assert g_ours.dtype == g_ref.dtype == torch.float32
        torch.testing.assert_close(g_ours, g_ref, atol=2e-2, rtol=2e-2)


def test_hand_written_functions_save_less_than_autograd():
    torch.manual_seed(0)
    norm, ff = RMSNorm(TINY.dim, TINY.norm_eps), FeedForward(TINY)
    x = torch.randn(4, 16, TINY.dim, requires_grad=True)
    hidden = 4 * 16 * TINY.hidden_dim * 4  # bytes of one float32 activation as wide as the hidden layer
    # the fused norm keeps x and the weight only; autograd also keeps the normed copy
    assert _saved_bytes(lambda x: rms_norm(x, norm.weight, norm.eps), x) < _saved_bytes(norm, x)
    fused = _saved_bytes(lambda x: swiglu_feed_forward(x, ff.w1.weight, ff.w2.weight, ff.w3.weight), x)
    # autograd also keeps silu(w1 x) and the gated product: two hidden-wide tensors more
    assert _saved_bytes(ff, x) - fused == 2 * hidden
