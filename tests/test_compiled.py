"""Compiled decoding (llama_core.compiled) computes what the uncompiled step computes.

Each test compiles a tiny trained model once (Inductor, C++ wrapper on CPU): tens of seconds.
"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_trained import MEMORISED, trained_model
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity

from llama_core.compiled import compile_decoding, compile_unavailable_reason, is_compiled
from llama_core.generate import Sampling, decode_one_token, generate, generate_batch, prefill
from llama_core.quantize import Int8Linear, for_decoding

pytestmark = pytest.mark.skipif(compile_unavailable_reason("cpu") is not None,
                                reason=str(compile_unavailable_reason("cpu")))


def test_compiled_float_decoding_recites_alone_and_in_a_padded_batch(sp_tokenizer):
    model, _ = trained_model(sp_tokenizer)
    compiled = compile_decoding(for_decoding(copy.deepcopy(model), "none"))
    assert is_compiled(compiled) and not is_compiled(model)
    text = sp_tokenizer.encode(MEMORISED, bos=True)[:40]
    # every memorised step has a margin of at least ln 4: compiled float32 must keep every one
    greedy = Sampling(max_new_tokens=39, temperature=0.0)
    before = counters["stats"]["unique_graphs"]
    assert generate(compiled, text[:1], greedy) == text[1:]
    assert counters["stats"]["unique_graphs"] > before  # the steps ran compiled: Dynamo built a graph
    # another length and a start further in: the same compiled step (dynamic shapes) continues the text,
    # with no new compilation (a chat's every reply has another length)
    graphs = counters["stats"]["unique_graphs"]
    assert generate(compiled, text[:9], Sampling(max_new_tokens=20, temperature=0.0)) == text[9:29]
    assert counters["stats"]["unique_graphs"] == graphs
    # left-padded prompts of two lengths: the key-mask step, compiled, continues each
    rows = generate_batch(compiled, [text[:5], text[:12]], Sampling(max_new_tokens=10, temperature=0.0))
    assert rows == [text[5:15], text[12:22]]


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_compiled_quantized_steps_stay_within_the_quantization_error(sp_tokenizer, mode):
    model, _ = trained_model(sp_tokenizer)
    compiled = compile_decoding(for_decoding(copy.deepcopy(model), mode))
    ids = sp_tokenizer.encode(MEMORISED, bos=True)[:40]
    with torch.no_grad():
        reference, _ = model(torch.tensor([ids]))  # float32, every position at once
    steps = []
    compiled.setup_caches(1, len(ids))
    try:
        with torch.inference_mode(), torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
            steps.append(prefill(compiled, torch.tensor([ids[:1]])))
            for pos in range(1, len(ids)):  # the memorised text fed back, one token per compiled step
                steps.append(decode_one_token(compiled, torch.tensor([[ids[pos]]]), pos))
    finally:
        compiled.clear_caches()
    if mode == "int8":  # inside the graph, each int8 layer but w2 runs fbgemm through the lab's op
        fbgemm = [m for m in compiled.modules() if isinstance(m, Int8Linear) and not m.weight_only]
        calls = sum(e.count for e in prof.key_averages() if e.key == "llama_lab::fbgemm_int8_linear")
        assert fbgemm and calls >= len(fbgemm) * (len(ids) - 1)  # (compiling the first step may run it too)
    logits = torch.cat(steps)  # (positions, V)
    fp = reference[0]
    error = (logits - fp).abs().max().item()
    # the bounds of tests/test_quantize.py for the uncompiled layers, relative to the logits' scale
    assert error <= {"int8": 0.05, "int4": 0.25}[mode] * fp.abs().max().item()
    top2 = fp.topk(2, -1).values
    real = (top2[:, 0] - top2[:, 1]) > 2 * error  # steps no error this size can flip
    assert real.any()
    assert torch.equal(logits.argmax(-1)[real], fp.argmax(-1)[real])
