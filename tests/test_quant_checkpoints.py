"""Quantized checkpoints on disk: a quantized folder reloads the very int8/int4 tensors and logits it
was saved from, without a float32 copy of any quantized weight; a GGUF export reads back (through the
lab's own GGUF reader) as the in-memory quantized model up to the fp16 the format stores scales in;
a float model's Q8_0 export is within the int8 step; a mismatched shape is a clear error."""

import copy

import pytest
import torch

from conftest import TINY_GQA, TINY_TIED_THETA, random_norm_model
from lab.__main__ import main
from llama_core.formats import load_model
from llama_core.formats.gguf_write import save_gguf
from llama_core.formats.quantized import CONFIG, WEIGHTS, meta_tensors, save_quantized
from llama_core.quantize import Int4Linear, Int8Linear, fuse_quantized, quantization_of, quantize, weight_bytes
from llama_core.run_folder import CheckpointError

pytest.importorskip("gguf")
PROMPT = "Friends, Romans, countrymen, lend me your ears"
MODES = [("int8", None), ("int8", 32), ("int4", 32), ("int4", 64)]


def _logits(model, tokenizer):
    tokens = torch.tensor([tokenizer.encode(PROMPT, bos=True)])
    with torch.no_grad():
        return model(tokens)[0]


def _float_matrices(model) -> set[str]:
    """Names of 2-D float weights among parameters and buffers (the rotary tables are not weights)."""
    return {name for name, t in [*model.named_parameters(), *model.named_buffers()]
            if name.endswith("weight") and t.dim() == 2 and t.is_floating_point()}


def _as_gguf_stores(model):
    """The quantized model with what GGUF rounds to fp16 rounded so: block scales, Q4_1's minimum
    m = zeros - 8 * scales, and the F16 embedding."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.tok_embeddings.weight.copy_(model.tok_embeddings.weight.half().float())
        for layer in model.modules():
            if isinstance(layer, Int4Linear):
                d, m = layer.scales.half().float(), (layer.zeros - 8 * layer.scales).half().float()
                layer.scales.copy_(d)
                layer.zeros.copy_(m + 8 * d)
                layer._kernel = None
            elif isinstance(layer, Int8Linear):
                layer.scales.copy_(layer.scales.half().float())
                layer._fbgemm = None
    return model


@pytest.mark.parametrize("cfg", [TINY_GQA, TINY_TIED_THETA], ids=["untied", "tied"])
@pytest.mark.parametrize("mode,group", MODES, ids=[f"{m}-{g or 'channel'}" for m, g in MODES])
def test_a_quantized_folder_reloads_the_same_tensors_and_logits(tmp_path, sp_tokenizer, cfg, mode, group):
    model = quantize(random_norm_model(cfg.replace(vocab_size=sp_tokenizer.vocab_size)), mode, group)
    save_quantized(model, tmp_path / "q", sp_tokenizer, group)
    loaded = load_model(tmp_path / "q")
    assert loaded.format == "quantized" and quantization_of(loaded.model) == mode
    saved, reloaded = meta_tensors(model), meta_tensors(loaded.model)
    assert saved.keys() == reloaded.keys()
    for name, t in saved.items():
        assert reloaded[name].dtype == t.dtype and torch.equal(reloaded[name], t), name
    assert torch.equal(_logits(loaded.model, loaded.tokenizer), _logits(model, sp_tokenizer))
    assert loaded.tokenizer.encode(PROMPT, bos=True) == sp_tokenizer.encode(PROMPT, bos=True)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_a_loaded_quantized_folder_holds_no_float32_weight_matrix(tmp_path, sp_tokenizer, mode):
    plain = random_norm_model(TINY_GQA.replace(vocab_size=sp_tokenizer.vocab_size))
    model = quantize(copy.deepcopy(plain), mode)
    save_quantized(model, tmp_path / "q", sp_tokenizer, None)
    loaded = load_model(tmp_path / "q").model
    # the embedding is looked up, not multiplied: it is the only float matrix left
    assert _float_matrices(loaded) == {"tok_embeddings.weight"}
    assert weight_bytes(loaded) == weight_bytes(model)
    blocks = lambda m: sum(weight_bytes(b) for b in m.layers)  # noqa: E731
    assert blocks(loaded) < blocks(plain) / (3 if mode == "int8" else 5)
    kinds = {type(m) for m in loaded.modules()}
    assert (Int8Linear if mode == "int8" else Int4Linear) in kinds and torch.nn.Linear not in kinds


def test_a_quantized_folder_of_another_shape_is_refused(tmp_path, sp_tokenizer):
    import json

    vocab = sp_tokenizer.vocab_size
    save_quantized(quantize(random_norm_model(TINY_GQA.replace(vocab_size=vocab)), "int4"), tmp_path / "a",
                   sp_tokenizer, 32)
    save_quantized(quantize(random_norm_model(TINY_GQA.replace(vocab_size=vocab, dim=96)), "int4"),
                   tmp_path / "b", sp_tokenizer, 32)
    (tmp_path / "a" / WEIGHTS).write_bytes((tmp_path / "b" / WEIGHTS).read_bytes())  # weights of another model
    with pytest.raises(CheckpointError, match=r"has shape \[.*\] but the config implies"):
        load_model(tmp_path / "a")
    record = json.loads((tmp_path / "b" / CONFIG).read_text())
    record["model"]["n_layers"] = 3
    (tmp_path / "b" / CONFIG).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="weights missing"):
        load_model(tmp_path / "b")


def test_bad_group_sizes_and_block_widths_are_clear_errors(tmp_path, sp_tokenizer):
    model = random_norm_model(TINY_GQA.replace(vocab_size=sp_tokenizer.vocab_size))
    with pytest.raises(ValueError, match="group size 48 does not divide"):
        quantize(copy.deepcopy(model), "int4", 48)
    narrow = random_norm_model(TINY_GQA.replace(vocab_size=sp_tokenizer.vocab_size, dim=48, n_heads=3, n_kv_heads=3))
    with pytest.raises(ValueError, match="do not split into GGUF blocks of 32"):
        save_gguf(narrow, tmp_path / "narrow.gguf", sp_tokenizer, "q8_0")
    assert not (tmp_path / "narrow.gguf").exists()
    with pytest.raises(ValueError, match="no quantized layers"):
        save_quantized(model, tmp_path / "float", sp_tokenizer, None)


@pytest.mark.parametrize("cfg", [TINY_GQA, TINY_TIED_THETA], ids=["untied", "tied"])
@pytest.mark.parametrize("mode,kind", [("int8", "q8_0"), ("int4", "q4_1")])
def test_a_gguf_export_reads_back_as_the_quantized_model(tmp_path, sp_tokenizer, cfg, mode, kind):
    model = quantize(random_norm_model(cfg.replace(vocab_size=sp_tokenizer.vocab_size)), mode, 32)
    save_gguf(model, tmp_path / "m.gguf", sp_tokenizer, kind)
    loaded = load_model(tmp_path / "m.gguf", keep_quantized=True)
    assert loaded.format == "gguf" and quantization_of(loaded.model) == mode
    assert _float_matrices(loaded.model) == {"tok_embeddings.weight"}
    stored = _as_gguf_stores(model)
    reloaded = meta_tensors(fuse_quantized(loaded.model))
    for name, t in meta_tensors(stored).items():
        assert torch.equal(reloaded[name], t), name  # every block value, as the format holds it
    expected = _logits(stored, sp_tokenizer)
    got = _logits(loaded.model, loaded.tokenizer)
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()  # summation order only
    assert loaded.tokenizer.encode(PROMPT, bos=True) == sp_tokenizer.encode(PROMPT, bos=True)


def test_a_q8_0_export_of_a_float_model_is_within_the_int8_step(tmp_path, sp_tokenizer):
    model = random_norm_model(TINY_GQA.replace(vocab_size=sp_tokenizer.vocab_size))
    save_gguf(model, tmp_path / "m.gguf", sp_tokenizer, "q8_0")
    loaded = load_model(tmp_path / "m.gguf", keep_quantized=True).model
    for name, w in model.state_dict().items():
        if w.dim() != 2 or name.startswith("tok_embeddings"):
            continue
        layer = loaded.get_submodule(name.removesuffix(".weight"))
        assert isinstance(layer, Int8Linear) and layer.group_size == 32, name
        # each block's step is its largest |w| / 127; d in fp16 moves a weight by at most 127 d 2^-11 more
        step = w.view(w.shape[0], -1, 32).abs().amax(-1).repeat_interleave(32, dim=1) / 127
        assert ((layer.dequantize() - w).abs() <= step * (0.5 + 127 * 2**-11) * (1 + 1e-3)).all(), name


def test_lab_export_writes_a_trained_run_quantized_and_as_gguf(tmp_path, tiny_runs_dir):
    run = str(tiny_runs_dir / "tiny-hamlet")
    source = load_model(run)
    assert main(["export", "--checkpoint", run, "--to", "quantized", "--quant", "int4", "--out",
                 str(tmp_path / "q")]) == 0
    assert main(["export", "--checkpoint", run, "--to", "gguf", "--quant", "q4_1", "--out",
                 str(tmp_path / "m.gguf")]) == 0
    quantized = quantize(copy.deepcopy(source.model), "int4", 32)
    folder = load_model(tmp_path / "q")
    assert torch.equal(_logits(folder.model, folder.tokenizer), _logits(quantized, source.tokenizer))
    gguf = load_model(tmp_path / "m.gguf", keep_quantized=True)
    expected = _logits(_as_gguf_stores(quantized), source.tokenizer)
    assert (_logits(gguf.model, gguf.tokenizer) - expected).abs().max() <= 1e-5 * expected.abs().max()
    text = "HAMLET: To be, or not to be, that is the question 1601"
    assert gguf.tokenizer.encode(text, bos=True) == source.tokenizer.encode(text, bos=True)
    assert gguf.add_bos == source.add_bos and folder.chat_template == source.chat_template
    with pytest.raises(SystemExit, match="--to quantized needs --quant"):
        main(["export", "--checkpoint", run, "--to", "quantized", "--out", str(tmp_path / "x")])
    assert main(["export", "--checkpoint", run, "--to", "quantized", "--quant", "int4", "--group-size", "48",
                 "--out", str(tmp_path / "bad")]) != 0


def test_the_quant_quality_benchmark_prints_one_line_per_checkpoint(tmp_path, tiny_runs_dir, capsys):
    import json

    out = tmp_path / "quant_quality.jsonl"
    assert main(["bench", "quant-quality", "--checkpoint", str(tiny_runs_dir / "tiny-hamlet"), "--max-bytes",
                 "3000", "--window", "64", "--threads", "1", "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == json.loads(out.read_text().splitlines()[-1])
    assert line["stored_quantization"] == "none" and line["bytes"] <= 3000 and line["tokens"] > 100
    for mode in ("none", "int8", "int4"):
        assert line[mode]["weights"] == mode and line[mode]["bits_per_byte"] > 0
    assert line["int4"]["weight_bytes"] < line["int8"]["weight_bytes"] < line["none"]["weight_bytes"]


def test_the_decode_benchmark_times_a_checkpoints_own_weights(tmp_path, tiny_runs_dir, capsys):
    import json

    folder = tmp_path / "q"
    assert main(["export", "--checkpoint", str(tiny_runs_dir / "tiny-hamlet"), "--to", "quantized", "--quant",
                 "int8", "--out", str(folder)]) == 0
    capsys.readouterr()
    assert main(["bench", "decode", "--checkpoint", str(folder), "--quant", "int8", "--new", "4", "--rounds", "1",
                 "--threads", "1", "--out", str(tmp_path / "decode.jsonl")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["checkpoint"] == str(folder) and line["quant"] == "int8" and line["tokens_per_s"] > 0
