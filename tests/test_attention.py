import pytest
import torch

from conftest import TINY_GQA
from llama_core.attention import attend, causal_mask, xformers_unavailable_reason
from llama_core.model import Transformer


def _qkv(B=2, H=4, Hkv=2, T=12, S=12, D=16, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, T, D, generator=g).to(device, dtype)
    k = torch.randn(B, Hkv, S, D, generator=g).to(device, dtype)
    v = torch.randn(B, Hkv, S, D, generator=g).to(device, dtype)
    return q, k, v


@pytest.mark.parametrize("T, S", [(12, 12), (1, 12), (5, 12)])
def test_eager_and_sdpa_agree(T, S):
    q, k, v = _qkv(T=T, S=S)
    q_start = S - T
    eager = attend(q, k, v, backend="eager", q_start=q_start)
    sdpa = attend(q, k, v, backend="sdpa", q_start=q_start)
    assert (eager - sdpa).abs().max().item() <= 1e-5


def test_key_mask_hides_padding_in_both_backends():
    q, k, v = _qkv()
    key_mask = torch.ones(2, 12, dtype=torch.bool)
    key_mask[0, :3] = False  # left padding in the first row
    eager = attend(q, k, v, backend="eager", key_mask=key_mask)
    sdpa = attend(q, k, v, backend="sdpa", key_mask=key_mask)
    assert torch.isfinite(sdpa).all()
    assert (eager - sdpa).abs().max().item() <= 1e-5
    # the unpadded row equals the plain causal result
    assert torch.allclose(sdpa[1], attend(q, k, v, backend="sdpa")[1], atol=1e-6)


def test_eager_weights_are_causal_and_normalised():
    q, k, v = _qkv()
    _, w = attend(q, k, v, backend="eager", return_weights=True)
    assert w.shape == (2, 4, 12, 12)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 12))
    assert (w.triu(1) == 0).all()
    assert torch.equal(causal_mask(3, 3, 0, torch.device("cpu")), torch.ones(3, 3).tril().bool())


def test_model_backends_agree():
    torch.manual_seed(0)
    model = Transformer(TINY_GQA).eval()
    tokens = torch.randint(0, TINY_GQA.vocab_size, (2, 20))
    outs = {}
    for backend in ("eager", "sdpa", "auto"):
        model.attn_backend = backend
        with torch.no_grad():
            outs[backend], _ = model(tokens)
    assert (outs["eager"] - outs["sdpa"]).abs().max().item() <= 1e-5
    assert torch.equal(outs["auto"], outs["sdpa"])  # no xformers on CPU: auto is sdpa


def test_unusable_backends_say_why():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="unknown attention backend"):
        attend(q, k, v, backend="flash")
    with pytest.raises(ValueError, match="eager"):
        attend(q, k, v, backend="sdpa", return_weights=True)
    if xformers_unavailable_reason(q) is not None:
        with pytest.raises(RuntimeError, match="xformers"):
            attend(q, k, v, backend="xformers")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_xformers_agrees_with_sdpa_in_bf16():
    q, k, v = _qkv(T=256, S=256, D=64, dtype=torch.bfloat16, device="cuda")
    reason = xformers_unavailable_reason(q)
    if reason:
        pytest.skip(reason)
    xf = attend(q, k, v, backend="xformers")
    sd = attend(q, k, v, backend="sdpa")
    assert (xf.float() - sd.float()).abs().max().item() <= 2e-2


def test_attention_maps_come_from_the_models_own_forward():
    import copy

    from conftest import random_norm_model
    from llama_core.attention_maps import attention_weights
    from llama_core.packing import pack

    model = random_norm_model(TINY_GQA)
    tokens = torch.randint(0, TINY_GQA.vocab_size, (1, 10), generator=torch.Generator().manual_seed(3))
    w = attention_weights(model, tokens, layer=1)
    assert w.shape == (1, TINY_GQA.n_heads, 10, 10)
    assert torch.allclose(w.sum(-1), torch.ones(1, TINY_GQA.n_heads, 10)) and (w.triu(1) == 0).all()
    # by hand: layer 1's input, its norm and projections, softmax(q k^T / sqrt(d)) with the causal mask
    seen = {}
    handle = model.layers[1].register_forward_pre_hook(lambda mod, args: seen.update(x=args[0], rotation=args[1]))
    with torch.no_grad():
        model(tokens)
        handle.remove()
        attn = model.layers[1].attention
        q, k, _ = attn.qkv(model.layers[1].attention_norm(seen["x"]), seen["rotation"])
    k = k.repeat_interleave(TINY_GQA.n_heads // TINY_GQA.n_kv_heads, dim=1)
    scores = (q @ k.transpose(-1, -2)) / TINY_GQA.head_dim ** 0.5
    expected = scores.masked_fill(torch.ones(10, 10).triu(1).bool(), float("-inf")).softmax(-1)
    assert (w - expected).abs().max().item() <= 1e-5
    # the packed model (fused projections, folded gains) shows the same map
    assert (attention_weights(pack(copy.deepcopy(model)), tokens, layer=1) - w).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="layer"):
        attention_weights(model, tokens, layer=2)
