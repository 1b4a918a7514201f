"""The decode-time layout is the same function: a packed model's logits equal the plain model's."""

import copy

import pytest
import torch

from conftest import TINY, TINY_GQA, TINY_TIED_THETA, random_norm_model
from llama_core.generate import Sampling, generate
from llama_core.packing import TransposedLinear, is_packed, pack

CONFIGS = {"mha": TINY, "gqa": TINY_GQA, "tied_mqa_theta1e5": TINY_TIED_THETA}


def _packed(model, **kwargs):
    return pack(copy.deepcopy(model), **kwargs)


@pytest.mark.parametrize("transpose", [True, False])
@pytest.mark.parametrize("name", CONFIGS)
def test_a_packed_model_computes_the_plain_models_logits(name, transpose):
    cfg = CONFIGS[name]
    plain = random_norm_model(cfg)
    packed = _packed(plain, transpose=transpose)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.max_seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = plain(tokens)
        got, _ = packed(tokens)
    # float32 sums in another order: rounding of the logits' own scale, nothing more
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_packing_fuses_the_products_and_folds_the_gains():
    model = _packed(random_norm_model(TINY), transpose=True)
    assert is_packed(model)
    for block in model.layers:
        attn, ffn = block.attention, block.feed_forward
        assert not hasattr(attn, "wq") and not hasattr(ffn, "w1")
        assert isinstance(attn.wqkv, TransposedLinear) and isinstance(ffn.w13, TransposedLinear)
        assert attn.wqkv.weight_t.shape == (TINY.dim, (TINY.n_heads + 2 * TINY.n_kv_heads) * TINY.head_dim)
        assert block.attention_norm.weight is None and block.ffn_norm.weight is None
    assert model.norm.weight is None
    assert not any(p.requires_grad for p in model.parameters())


def test_a_head_tied_to_the_embedding_gets_its_own_copy_only_when_transposed():
    plain = random_norm_model(TINY_TIED_THETA)
    gain = plain.norm.weight.clone()
    kept = _packed(plain, transpose=False)
    assert kept.output.weight is kept.tok_embeddings.weight  # still one matrix, the gain still the norm's
    assert torch.equal(kept.norm.weight, gain)
    copied = _packed(plain, transpose=True)
    assert isinstance(copied.output, TransposedLinear) and copied.norm.weight is None
    assert torch.equal(copied.tok_embeddings.weight, plain.tok_embeddings.weight)  # the embedding untouched
    assert copied.num_params == plain.num_params - (2 * len(plain.layers) + 1) * TINY_TIED_THETA.dim  # gains folded


def test_packed_generation_equals_plain_generation_in_logits_and_is_deterministic():
    plain = random_norm_model(TINY_GQA)
    packed = _packed(plain)
    prompt = [3, 1, 4, 1, 5]
    greedy = Sampling(max_new_tokens=16, temperature=0.0)
    first = generate(packed, prompt, greedy)
    assert first == generate(packed, prompt, greedy)
    # the plain model scores the packed model's tokens as its own argmax, unless a near tie (which
    # rounding in another summation order may break either way) decided the step
    with torch.no_grad():
        logits, _ = plain(torch.tensor([prompt + first[:-1]]))
    top2 = logits[0, len(prompt) - 1:].topk(2, dim=-1).values
    decided = (top2[:, 0] - top2[:, 1]) > 1e-3
    chosen = logits[0, len(prompt) - 1:].argmax(-1)
    assert torch.equal(chosen[decided], torch.tensor(first)[decided])


def test_bfloat16_packed_model_stays_close():
    plain = random_norm_model(TINY_GQA)
    packed = _packed(plain.to(torch.bfloat16))
    tokens = torch.randint(0, TINY_GQA.vocab_size, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, _ = plain.float()(tokens)
        got, _ = packed(tokens)
    assert got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max().item() < 0.05 * expected.abs().max().item()
