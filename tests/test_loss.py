import pytest
import torch

from conftest import TINY_TIED_THETA
from llama_core.loss import fused_head, plain_head, use_fused_loss
from llama_core.model import Transformer


@pytest.mark.parametrize("chunk", [7, 1024])
def test_fused_head_matches_plain_loss_and_gradients(chunk):
    g = torch.Generator().manual_seed(0)
    output = torch.nn.Linear(16, 50, bias=False)
    h = torch.randn(3, 9, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (3, 9), generator=g)
    targets[0, :4] = -100  # ignored positions
    _, ref = plain_head(h, output, targets)
    ref.backward()
    ref_h, ref_w = h.grad.clone(), output.weight.grad.clone()
    h.grad, output.weight.grad = None, None
    logits, loss = fused_head(h, output, targets, chunk=chunk)
    (loss * 0.5).backward()  # a scaled loss, as gradient accumulation gives
    assert logits is None
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(h.grad, 0.5 * ref_h, atol=1e-6)
    assert torch.allclose(output.weight.grad, 0.5 * ref_w, atol=1e-6)


def test_fused_loss_in_a_model_with_tied_embeddings():
    torch.manual_seed(0)
    model = Transformer(TINY_TIED_THETA)
    x = torch.randint(0, TINY_TIED_THETA.vocab_size, (2, 16))
    y = torch.randint(0, TINY_TIED_THETA.vocab_size, (2, 16))
    _, ref = model(x, y)
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    use_fused_loss(model)
    _, loss = model(x, y)
    loss.backward()
    assert torch.allclose(loss, ref, atol=1e-6)
    for a, p in zip(ref_grads, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)
    logits, _ = model(x)  # inference still returns logits
    assert logits.shape == (2, 16, TINY_TIED_THETA.vocab_size)
