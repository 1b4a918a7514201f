"""GGUF's Q4_0/Q4_1/Q8_0 blocks load straight into quantized layers: no float32 copy of those
weights exists, each layer decodes to exactly the format's values, and the logits are the
dequantized model's to the kernels' compute precision."""

import copy

import pytest
import torch
from test_gguf import TYPES, _write

from conftest import TINY_GQA, random_norm_model
from llama_core.formats.gguf import load_gguf
from llama_core.quantize import Int4Linear, Int8Linear, weight_bytes

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType
KEPT = {Q.Q4_0: Int4Linear, Q.Q4_1: Int4Linear, Q.Q8_0: Int8Linear}


@pytest.fixture(scope="module")
def written(tmp_path_factory, sp_tokenizer):
    model = random_norm_model(TINY_GQA.replace(vocab_size=sp_tokenizer.vocab_size))
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, _write(path, model, sp_tokenizer)


def test_quantized_blocks_load_without_a_float32_copy(written):
    path, reference = written
    model, *_ = load_gguf(path, keep_quantized=True)
    floats, *_ = load_gguf(path)
    for index, block in enumerate(model.layers):
        for short, kind in TYPES.items():
            if short.startswith(("attention.", "feed_forward.")) and kind in KEPT:
                layer = block.get_submodule(short.removesuffix(".weight"))
                assert type(layer) is KEPT[kind], short
                values = reference[f"layers.{index}.{short}"]
                # the format's own values: Q4_1's zero point m + 8d is one float32 rounding away
                assert torch.allclose(layer.dequantize(), values, rtol=0, atol=1e-6 * values.abs().max().item())
    # no float32 matrix stands for a quantized weight: the only ones left are stored as floats in the file
    float_matrices = {name.removesuffix(".weight") for name, t in [*model.named_parameters(), *model.named_buffers()]
                      if name.endswith("weight") and t.dim() == 2 and t.is_floating_point()}
    allowed = {"tok_embeddings"} | {
        f"layers.{i}.{s.removesuffix('.weight')}" for i in range(len(model.layers))
        for s, k in TYPES.items() if k not in KEPT and s != "tok_embeddings.weight"}
    assert float_matrices <= allowed | {"output"}, float_matrices - allowed
    assert weight_bytes(model) < weight_bytes(floats)


def test_kept_quantized_logits_equal_the_dequantized_models(written, sp_tokenizer):
    path, _ = written
    model, *_ = load_gguf(path, keep_quantized=True)
    floats, *_ = load_gguf(path)
    tokens = torch.tensor([sp_tokenizer.encode("Friends, Romans, countrymen, lend me your ears", bos=True)])
    with torch.no_grad():
        expected, _ = floats(tokens)
        got, _ = model(tokens)
    # the same weights; on CPU the int4 kernel computes in bfloat16 (8 significant bits: activations,
    # scales and outputs each rounded by at most 2^-9 of themselves), so the logits agree to a few
    # bfloat16 steps of their scale, not to float32's
    assert (got - expected).abs().max().item() <= 2**-7 * expected.abs().max().item()
    # and decoding runs on it (the cached path through the same layers)
    from llama_core.generate import Sampling, generate

    assert len(generate(copy.deepcopy(model), tokens[0].tolist(), Sampling(max_new_tokens=4, temperature=0.0))) == 4
