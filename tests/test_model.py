"""The architecture is the real one: logits equal transformers' LlamaForCausalLM on the same weights."""

import pytest
import torch

from conftest import TINY, TINY_GQA, TINY_TIED_THETA
from llama_core.formats.hf import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf
from llama_core.model import Transformer

CONFIGS = {"mha": TINY, "gqa": TINY_GQA, "tied_mqa_theta1e5": TINY_TIED_THETA}


def _hf_model(cfg):
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in config_to_hf(cfg).items()
                                         if k not in ("architectures", "torch_dtype")})
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # HF initialises norms to one: make them random so they are really compared
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_transformers(name):
    cfg = CONFIGS[name]
    hf = _hf_model(cfg)
    ours = Transformer(config_from_hf(config_to_hf(cfg))).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), cfg))
    tokens = torch.randint(0, cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(tokens).logits
        got, _ = ours(tokens)
    assert (got - expected).abs().max().item() <= 1e-4
    # and back: our weights in HF's layout reproduce HF's own state dict
    back = state_dict_to_hf(ours.state_dict(), cfg)
    for key, value in hf.state_dict().items():
        if key.endswith("inv_freq"):
            continue
        if key == "lm_head.weight" and cfg.tie_embeddings:  # HF lists the tied matrix twice
            key = "model.embed_tokens.weight"
        assert torch.equal(back[key], value), key


@pytest.mark.parametrize("cfg", [TINY, TINY_GQA])
def test_changing_a_token_never_changes_earlier_logits(cfg):
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (1, 32))
    for t in (0, 7, 31):
        changed = tokens.clone()
        changed[0, t] = (changed[0, t] + 1) % cfg.vocab_size
        with torch.no_grad():
            a, _ = model(tokens)
            b, _ = model(changed)
        assert torch.equal(a[:, :t], b[:, :t])
        assert not torch.allclose(a[:, t:], b[:, t:])


def test_loss_is_cross_entropy_of_logits():
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    x = torch.randint(0, TINY.vocab_size, (2, 16))
    y = torch.randint(0, TINY.vocab_size, (2, 16))
    logits, loss = model(x, y)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # an untrained model is close to uniform over the vocabulary
    assert abs(loss.item() - torch.log(torch.tensor(float(TINY.vocab_size))).item()) < 0.5


def test_context_overflow_is_a_clear_error():
    model = Transformer(TINY)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, TINY.max_seq_len + 1, dtype=torch.long))


def test_tied_embeddings_share_one_tensor():
    model = Transformer(TINY_TIED_THETA)
    assert model.output.weight is model.tok_embeddings.weight


@pytest.mark.parametrize("per_row", [False, True])
def test_rope_in_real_arithmetic_is_the_complex_rotation(per_row):
    """Compiled code rotates with cos and sin stacked (Inductor has no complex kernels): the same rotation."""
    from llama_core.model import apply_rope, rope_tables

    cos, sin = rope_tables(16, 12, 10000.0)  # (12, 8)
    if per_row:  # a row's own positions, (B, T, D/2)
        positions = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
        cos, sin = cos[positions], sin[positions]
    else:
        cos, sin = cos[:5], sin[:5]
    x = torch.randn(2, 5, 3, 16)
    complex_form = apply_rope(x, torch.complex(cos, sin))
    real_form = apply_rope(x, torch.stack([cos, sin], dim=-1))
    # the same four products and two sums per pair, each rounded once either way
    torch.testing.assert_close(real_form, complex_form, rtol=1e-6, atol=1e-6)
