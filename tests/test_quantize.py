"""Weight-only int8/int4: each quantized linear is its dequantized matrix to within the quantization
step, and a quantized model decodes what the float model decodes wherever the float margin is real."""

import copy

import pytest
import torch
from tiny_trained import MEMORISED, trained_model

from conftest import TINY_GQA, random_norm_model
from llama_core.generate import Sampling, generate
from llama_core.quantize import (
    Int4Linear,
    Int8Linear,
    dequantize_int4,
    dequantize_int8,
    quantization_of,
    quantize,
    quantize_int4,
    quantize_int8,
    unpack_nibbles,
    weight_bytes,
)


def _w(out=96, n_in=64, seed=0):
    return torch.randn(out, n_in, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("group", [None, 32])
def test_int8_rounds_each_weight_to_its_nearest_step(group):
    w = _w()
    q, scales = quantize_int8(w, group)
    assert q.dtype == torch.int8 and scales.shape == (96, 64 // (group or 64))
    step = scales.repeat_interleave(group or 64, dim=1)
    assert ((dequantize_int8(q, scales) - w).abs() <= step / 2 * (1 + 1e-5)).all()


@pytest.mark.parametrize("group", [32, 64])
def test_int4_rounds_each_weight_to_its_nearest_step(group):
    w = _w()
    q, scales, zeros = quantize_int4(w, group)
    assert int(q.max()) <= 15 and scales.shape == zeros.shape == (96, 64 // group)
    step = scales.repeat_interleave(group, dim=1)
    assert ((dequantize_int4(q, scales, zeros) - w).abs() <= step / 2 * (1 + 1e-5)).all()
    layer = Int4Linear(q, scales, zeros)
    assert layer.weight.numel() == 96 * 64 // 2  # two weights per byte
    assert torch.equal(layer.dequantize(), dequantize_int4(q, scales, zeros))


def test_grouped_int8_is_its_dequantized_matmul():
    w, x = _w(), torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(1))
    layer = Int8Linear.from_float(w, 32)
    expected = x @ layer.dequantize().t()
    # only float32 summation order differs from the reference product
    assert (layer(x) - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


@pytest.mark.parametrize("rows", [1, 5])
def test_weight_only_int8_is_its_dequantized_matmul_to_bfloat16(rows):
    x = torch.randn(rows, 64, generator=torch.Generator().manual_seed(1))
    x[:, 3] *= 50  # an outlier channel, as w2's inputs have: never quantized here
    layer = Int8Linear.from_float(_w())
    layer.weight_only = True
    w = layer.dequantize()
    expected = x @ w.t()
    # On CPU the weight-only kernel computes in bfloat16: activations, scales and outputs each rounded
    # by at most 2^-9 of themselves
    bound = 2 * 2**-9 * (x.abs() @ w.abs().t()) + 2**-9 * expected.abs()
    assert ((layer(x) - expected).abs() <= bound * 1.01 + 1e-6).all()


def test_quantize_runs_w2_weight_only_and_the_rest_with_quantized_activations():
    q = quantize(random_norm_model(TINY_GQA), "int8")
    assert all(b.feed_forward.w2.weight_only for b in q.layers)
    assert not any(b.attention.wqkv.weight_only or b.feed_forward.w13.weight_only for b in q.layers)


@pytest.mark.parametrize("rows", [1, 5])
def test_int4_is_its_dequantized_matmul_to_the_compute_dtype(rows):
    w, x = _w(), torch.randn(rows, 64, generator=torch.Generator().manual_seed(1))
    layer = Int4Linear.from_float(w, 32)
    expected = x @ layer.dequantize().t()
    # On CPU the kernel runs in bfloat16 (8 significant bits): the activations, each weight's scale,
    # zero point and dequantized value, and the output are each rounded once, by at most 2^-9 of
    # themselves; every input term |x_i| (|(q - 8) s| + |z|) bounds its weight's share of the first
    # four, and |output| the last. (On CUDA, in float32 inputs, this bound is loose.)
    step = layer.scales.repeat_interleave(32, 1)
    magnitude = ((unpack_nibbles(layer.weight).float() - 8) * step).abs() + layer.zeros.repeat_interleave(32, 1).abs()
    bound = 4 * 2**-9 * (x.abs() @ magnitude.t()) + 2**-9 * expected.abs()
    assert ((layer(x) - expected).abs() <= bound * 1.01 + 1e-6).all()


def test_per_channel_int8_on_cpu_is_within_each_tokens_activation_step():
    w = _w()
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    x[2] *= 100  # one token with large activations must not coarsen the others'
    layer = Int8Linear.from_float(w)
    expected = x @ layer.dequantize().t()
    row_sums = layer.dequantize().abs().sum(1)
    # several tokens: each row's activations are quantized on their own, its range (with 0) cut into
    # 255 steps; an input moves by at most half a step, each output by at most that times the row's
    # sum of |weights| (plus float rounding)
    span = x.amax(1, keepdim=True).clamp(min=0) - x.amin(1, keepdim=True).clamp(max=0)
    assert ((layer(x) - expected).abs() <= span / 255 / 2 * row_sums * (1 + 1e-3) + 1e-5).all()
    # one token (fbgemm): its range cut into 255 steps, 127 where fbgemm reduces the range
    one = x[:1]
    half_level = (one.max().clamp(min=0) - one.min().clamp(max=0)) / 127 / 2
    assert ((layer(one) - one @ layer.dequantize().t()).abs() <= half_level * row_sums * (1 + 1e-3) + 1e-5).all()


def test_bad_group_sizes_and_modes_are_clear_errors():
    with pytest.raises(ValueError, match="group size 48 does not divide"):
        quantize_int4(_w(), 48)
    with pytest.raises(ValueError, match="unknown quantization"):
        quantize(random_norm_model(TINY_GQA), "int3")


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_a_quantized_model_is_smaller_and_says_what_it_is(mode):
    plain = random_norm_model(TINY_GQA)
    q = quantize(copy.deepcopy(plain), mode)
    assert quantization_of(q) == mode and quantization_of(plain) == "none"
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    blocks = lambda m: sum(weight_bytes(b) for b in m.layers)  # noqa: E731
    assert blocks(q) < blocks(plain) / (3 if mode == "int8" else 5)
    assert quantize(plain, "none") is plain


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_greedy_decoding_follows_the_float_model_where_its_margin_is_real(sp_tokenizer, mode):
    model, _ = trained_model(sp_tokenizer)
    quantized = quantize(copy.deepcopy(model), mode)
    ids = torch.tensor([sp_tokenizer.encode(MEMORISED * 2, bos=True)[:model.config.max_seq_len]])
    with torch.no_grad():
        fp, _ = model(ids)
        qt, _ = quantized(ids)
    error = (fp - qt).abs().max().item()
    top2 = fp[0].topk(2, -1).values
    margin = top2[:, 0] - top2[:, 1]
    # a step whose float margin exceeds twice the largest logit error cannot change its argmax
    real = margin > 2 * error
    assert torch.equal(qt[0].argmax(-1)[real], fp[0].argmax(-1)[real])
    # quality, relative to the logits' scale: int8's steps are 1/254 of a row's range (and fbgemm's
    # activations 1/255 of theirs), int4's 1/15 of a group's; a 64-wide model has few weights per
    # output to average the rounding away, so these bounds are loose for real models
    assert error <= {"int8": 0.05, "int4": 0.25}[mode] * fp.abs().max().item()
    if mode == "int8":  # small enough to keep every memorised step (margins >= ln 4): it recites
        assert bool(real.all())
        text = ids[0, :40].tolist()
        assert generate(quantized, text[:1], Sampling(max_new_tokens=39, temperature=0.0)) == text[1:]


def test_the_decode_benchmark_reports_each_quantization(tmp_path, capsys):
    import json

    from lab.__main__ import main

    out = tmp_path / "decode.jsonl"
    assert main(["bench", "decode", "--preset", "lab-1m", "--new", "4", "--rounds", "1", "--quant", "all",
                 "--threads", "1", "--out", str(out)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-3:]]
    assert [r["quant"] for r in records] == ["none", "int8", "int4"]
    assert all(r["tokens_per_s"] > 0 and r["mbu"] > 0 for r in records)
    # the stored form is what a step reads: int8 about a quarter of float32; int4 less again (its
    # float32 scale and zero per group of 32 add 2 bits per weight)
    sizes = [r["weight_bytes_per_token"] for r in records]
    assert sizes[0] > 3 * sizes[1] and sizes[1] > sizes[2]
    assert [json.loads(line) for line in out.read_text().splitlines()] == records


def test_for_decoding_packs_float_models_and_quantizes_on_request():
    from llama_core.packing import is_packed
    from llama_core.quantize import for_decoding

    plain = random_norm_model(TINY_GQA)
    packed = for_decoding(copy.deepcopy(plain))
    assert is_packed(packed) and quantization_of(packed) == "none"
    assert quantization_of(for_decoding(copy.deepcopy(plain), "int4")) == "int4"


def test_a_device_without_a_kernel_gets_a_warning_that_names_the_fallback():
    from llama_core.quantize import kernel_for

    assert kernel_for("int8", "cpu", ["x86", "qnnpack"]) == ("fbgemm dynamic int8 (one token), torch._int_mm "
                                                              "(several)", None)
    kernel, warning = kernel_for("int8", "cpu", ["qnnpack"])  # an ARM CPU
    assert "in bfloat16 (weight-only)" in kernel and "fbgemm is not available" in warning
    kernel, warning = kernel_for("int4", "mps")
    assert kernel == "dequantize per call" and "--quant none" in warning
    assert kernel_for("int4", "cuda")[1] is None and kernel_for("none", "mps") == ("float", None)
    # the fallback runs: a quantized layer on a device without its kernel is its dequantized product
    layer = Int4Linear.from_float(_w(), 32).to("meta")
    assert layer(torch.randn(2, 64, device="meta")).shape == (2, 96)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_a_quantized_model_counts_the_weights_its_buffers_hold(mode):
    """Quantized weights are buffers, not parameters: the count still covers them (chat prints it),
    and a tied head quantized into its own copy counts once."""
    from conftest import TINY, TINY_TIED_THETA
    from llama_core.model import Transformer

    for cfg in (TINY, TINY_TIED_THETA):
        torch.manual_seed(0)
        plain = Transformer(cfg)
        assert quantize(copy.deepcopy(plain), mode).num_params == plain.num_params
