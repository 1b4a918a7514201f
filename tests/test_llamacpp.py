"""llama.cpp runs the lab's GGUF exports: a trained tiny model exported to Q8_0 and Q4_1 is loaded by
llama-cpp-python (llama.cpp's Python binding), which tokenizes text into the lab's ids and, from Q8_0,
recites the memorised text greedily, as the lab's own decoding does.

Opt-in: llama-cpp-python compiles llama.cpp when installed (minutes), so the project does not depend
on it; these tests are skipped without it (`pip install llama-cpp-python` runs them), all but the
one that checks the clear refusal of `--vs llamacpp`.
"""

from __future__ import annotations

import json

import pytest
from tiny_trained import MEMORISED, trained_model

from lab.__main__ import main
from lab.benchmarks.llamacpp_side import check_llamacpp, llamacpp_generate, llamacpp_unavailable_reason
from llama_core.formats.gguf_write import save_gguf

needs_llamacpp = pytest.mark.skipif(llamacpp_unavailable_reason() is not None,
                                    reason=str(llamacpp_unavailable_reason()))


def test_vs_llamacpp_is_refused_before_loading_with_what_to_change(tmp_path, capsys):
    # runs with or without llama-cpp-python: without it the message says how to install it
    what = "pip install llama-cpp-python" if llamacpp_unavailable_reason() else "needs --checkpoint"
    with pytest.raises(ValueError, match=what):
        check_llamacpp(None, ["int8"])
    assert main(["bench", "decode", "--preset", "lab-1m", "--quant", "int8", "--vs", "llamacpp", "--new", "2",
                 "--out", str(tmp_path / "d.jsonl")]) != 0
    assert what in capsys.readouterr().err and not (tmp_path / "d.jsonl").exists()
    if not llamacpp_unavailable_reason():
        with pytest.raises(ValueError, match="give --quant int8, int4 or all"):
            check_llamacpp("smollm2", ["none"])


@needs_llamacpp
@pytest.mark.parametrize("kind", ["q8_0", "q4_1"])
def test_llama_cpp_tokenizes_an_export_into_the_labs_ids(tmp_path, sp_tokenizer, kind):
    from llama_cpp import Llama

    model, _ = trained_model(sp_tokenizer)
    path = save_gguf(model, tmp_path / f"tiny-{kind}.gguf", sp_tokenizer, kind)
    llm = Llama(model_path=str(path), n_ctx=128, verbose=False)
    for text in (MEMORISED, "Shall I compare thee to a summer's day?"):
        assert llm.tokenize(text.encode("utf-8"), add_bos=True) == sp_tokenizer.encode(text, bos=True)


@needs_llamacpp
def test_llama_cpp_recites_what_the_exported_model_memorised(tmp_path, sp_tokenizer):
    model, _ = trained_model(sp_tokenizer)
    path = save_gguf(model, tmp_path / "tiny-q8_0.gguf", sp_tokenizer, "q8_0")
    ids = sp_tokenizer.encode(MEMORISED, bos=True)[:40]
    # every memorised step has a margin of at least ln 4, far above Q8_0's rounding of weights and
    # activations: llama.cpp must continue the text from one token and from nine
    assert llamacpp_generate(path, ids[:1], len(ids) - 1, threads=1)() == ids[1:]
    assert llamacpp_generate(path, ids[:9], 20, threads=1)() == ids[9:29]


@needs_llamacpp
def test_the_decode_benchmark_times_llama_cpp_on_the_labs_export(tmp_path, tiny_runs_dir, capsys):
    assert main(["bench", "decode", "--checkpoint", str(tiny_runs_dir / "tiny-hamlet"), "--quant", "all", "--vs",
                 "llamacpp", "--new", "4", "--rounds", "1", "--threads", "1",
                 "--out", str(tmp_path / "decode.jsonl")]) == 0
    lines = {r["quant"]: r for r in map(json.loads, capsys.readouterr().out.strip().splitlines()[-3:])}
    assert "llamacpp_tokens_per_s" not in lines["none"]  # no float GGUF side
    for mode in ("int8", "int4"):
        assert lines[mode]["llamacpp_tokens_per_s"] > 0 and 0 <= lines[mode]["llamacpp_same_tokens_for"] <= 4
