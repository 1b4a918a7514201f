"""Checkpoint formats: lab <-> Hugging Face <-> Meta round trips with identical logits, real
transformers checkpoints, lab runs through the dispatcher and the export CLI, and clear errors."""

import json
import shutil

import pytest
import torch

from conftest import TINY, TINY_GQA, TINY_TIED_THETA, random_norm_model
from llama_core.formats import LoadedModel, detect_format, export, load_model
from llama_core.formats.bpe import BPETokenizer
from llama_core.formats.hf import config_to_hf, load_hf, save_hf
from llama_core.formats.meta import load_meta, save_meta

# Meta's model parallelism splits key/value heads too, so a 2-shard model needs at least 2 of them
TIED_GQA_THETA = TINY_GQA.replace(tie_embeddings=True, rope_theta=100000.0)
TOKENS = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(3))


def _same_shape(a, b):
    """Configs that build the same network (HF's config.json states the feed-forward size, not Meta's rule)."""
    skip = ("multiple_of", "ffn_hidden_dim", "ffn_dim_multiplier")
    return a.hidden_dim == b.hidden_dim and all(
        v == getattr(b, k) for k, v in a.to_dict().items() if k not in skip)


def _logits(model, tokens=TOKENS):
    with torch.no_grad():
        return model(tokens)[0]


@pytest.mark.parametrize("cfg", [TINY_GQA, TINY_TIED_THETA], ids=["gqa", "tied_mqa_theta"])
@pytest.mark.parametrize("max_shard_bytes", [None, 60_000], ids=["single", "sharded"])
def test_lab_to_hf_to_lab_gives_identical_logits(tmp_path, cfg, max_shard_bytes):
    model = random_norm_model(cfg)
    save_hf(model, tmp_path, max_shard_bytes=max_shard_bytes)
    assert (tmp_path / "model.safetensors.index.json").exists() == (max_shard_bytes is not None)
    loaded, tokenizer = load_hf(tmp_path)
    assert tokenizer is None and _same_shape(loaded.config, model.config)
    assert torch.equal(_logits(loaded), _logits(model))


@pytest.mark.parametrize("cfg", [TINY, TIED_GQA_THETA], ids=["mha", "tied_gqa_theta"])
def test_lab_to_meta_two_shards_to_lab_gives_identical_logits(tmp_path, cfg, sp_tokenizer):
    cfg = cfg.replace(vocab_size=sp_tokenizer.vocab_size)
    model = random_norm_model(cfg)
    save_meta(model, tmp_path, sp_tokenizer, shards=2)
    shards = [torch.load(tmp_path / f"consolidated.0{i}.pth", weights_only=True) for i in range(2)]
    # each weight is split along Meta's model-parallel dimension
    assert shards[0]["layers.0.attention.wq.weight"].shape == (cfg.dim // 2, cfg.dim)
    assert shards[0]["layers.0.attention.wo.weight"].shape == (cfg.dim, cfg.dim // 2)
    assert shards[0]["layers.0.feed_forward.w2.weight"].shape == (cfg.dim, cfg.hidden_dim // 2)
    assert shards[0]["tok_embeddings.weight"].shape == (cfg.vocab_size, cfg.dim // 2)
    assert shards[0]["output.weight"].shape == (cfg.vocab_size // 2, cfg.dim)
    assert torch.equal(shards[1]["norm.weight"], model.norm.weight)
    loaded, tokenizer = load_meta(tmp_path)
    assert loaded.config == model.config  # a tied output is recognised as the embedding's copy
    assert tokenizer.fingerprint == sp_tokenizer.fingerprint
    assert torch.equal(_logits(loaded), _logits(model))


def _transformers_model(cfg, seed=0):
    transformers = pytest.importorskip("transformers")
    fields = {k: v for k, v in config_to_hf(cfg).items() if k not in ("architectures", "torch_dtype")}
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("cfg", [TINY_GQA, TINY_TIED_THETA], ids=["gqa", "tied_mqa_theta"])
def test_a_checkpoint_written_by_transformers_loads_and_matches_its_logits(tmp_path, cfg, sp_tokenizer):
    cfg = cfg.replace(vocab_size=sp_tokenizer.vocab_size)
    hf = _transformers_model(cfg)
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    sp_tokenizer.save(tmp_path / "tokenizer.model")
    ckpt = load_model(tmp_path)
    assert ckpt.format == "hf" and ckpt.tokenizer.fingerprint == sp_tokenizer.fingerprint
    tokens = torch.tensor([sp_tokenizer.encode("Now is the winter of our discontent", bos=True)])
    with torch.no_grad():
        expected = hf(tokens).logits
    assert (_logits(ckpt.model, tokens) - expected).abs().max().item() < 1e-4


def test_a_tokenizer_json_folder_loads_a_byte_level_bpe(tmp_path, shakespeare_text):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator([shakespeare_text[:200_000]], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    model = random_norm_model(TINY)
    save_hf(model, tmp_path, BPETokenizer(tk, bos_id=0, eos_id=1))
    loaded, tokenizer = load_hf(tmp_path)
    text = "O Romeo, Romeo! wherefore art thou Romeo? café 42"
    assert isinstance(tokenizer, BPETokenizer)
    assert tokenizer.encode(text) == tk.encode(text).ids
    assert tokenizer.decode(tokenizer.encode(text, bos=True)) == "<s>" + text
    assert torch.equal(_logits(loaded), _logits(model))


@pytest.fixture
def lab_run(tmp_path, sp_tokenizer):
    """A lab run written by llama_core.checkpoint itself (config.json, tokenizer.model, checkpoints/)."""
    from llama_core.checkpoint import save_checkpoint

    run = tmp_path / "runs" / "tiny"
    cfg = TIED_GQA_THETA.replace(vocab_size=sp_tokenizer.vocab_size)
    model = random_norm_model(cfg)
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    sp_tokenizer.save(run / "tokenizer.model")
    save_checkpoint(run, 10, model, torch.optim.AdamW(model.parameters()), {})
    return run, model


def test_a_lab_run_exports_to_hf_and_meta_with_identical_logits(lab_run, tmp_path):
    from lab.__main__ import main

    run, model = lab_run
    ckpt = load_model(run)
    assert ckpt.format == "lab" and ckpt.chat_template == "plain"
    assert torch.equal(_logits(ckpt.model), _logits(model))
    for layout, shards in (("hf", 1), ("meta", 2)):
        out = tmp_path / f"export-{layout}"
        assert main(["export", "--checkpoint", str(run), "--to", layout, "--out", str(out),
                     "--shards", str(shards)]) == 0
        back = load_model(out)
        assert back.format == layout and _same_shape(back.model.config, model.config)
        assert back.tokenizer.fingerprint == ckpt.tokenizer.fingerprint
        assert torch.equal(_logits(back.model), _logits(model))


def test_meta_shards_must_divide_the_heads(tmp_path):
    with pytest.raises(ValueError, match="n_kv_heads=1 is not divisible by 2"):
        save_meta(random_norm_model(TINY_TIED_THETA), tmp_path, shards=2)


def test_a_missing_meta_shard_is_named(tmp_path):
    save_meta(random_norm_model(TINY), tmp_path, shards=4)
    (tmp_path / "consolidated.01.pth").unlink()
    with pytest.raises(FileNotFoundError, match=r"consolidated\.01\.pth is missing"):
        load_meta(tmp_path)
    (tmp_path / "consolidated.02.pth").unlink()
    (tmp_path / "consolidated.03.pth").unlink()  # the last ones gone: the shapes no longer add up
    with pytest.raises(ValueError, match="shard is missing"):
        load_meta(tmp_path)


def test_a_missing_hf_shard_is_named(tmp_path):
    save_hf(random_norm_model(TINY), tmp_path, max_shard_bytes=60_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / victim).unlink()
    with pytest.raises(FileNotFoundError, match=f"shard .*{victim} listed in model.safetensors.index.json"):
        load_hf(tmp_path)


def test_params_json_that_disagrees_with_the_weights_is_named(tmp_path):
    save_meta(random_norm_model(TINY), tmp_path, shards=1)
    params = json.loads((tmp_path / "params.json").read_text())
    (tmp_path / "params.json").write_text(json.dumps(dict(params, multiple_of=256)))
    with pytest.raises(ValueError, match=r"params\.json .* feed-forward size of 256 .* weights have 192"):
        load_meta(tmp_path)
    (tmp_path / "params.json").write_text(json.dumps(dict(params, n_layers=3)))
    with pytest.raises(ValueError, match=r"weights missing for \['layers\.2\."):
        load_meta(tmp_path)


def test_a_shape_mismatch_names_the_weight(tmp_path):
    save_hf(random_norm_model(TINY), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, num_key_value_heads=2, head_dim=16)))
    with pytest.raises(ValueError, match=r"layers\.0\.attention\.wk\.weight has shape \[64, 64\] .* \[32, 64\]"):
        load_hf(tmp_path)


def test_a_tokenizer_that_disagrees_with_the_model_is_refused(tmp_path, sp_tokenizer):
    save_meta(random_norm_model(TINY), tmp_path, sp_tokenizer)  # 512 pieces for a 300-token model
    with pytest.raises(ValueError, match="tokenizer has 512 tokens but the model embeds only 300"):
        load_meta(tmp_path)


def test_loading_never_unpickles_code(tmp_path):
    save_meta(random_norm_model(TINY), tmp_path)
    torch.save({"payload": LoadedModel}, tmp_path / "consolidated.00.pth")  # a pickled class, not tensors
    with pytest.raises(ValueError, match=r"consolidated\.00\.pth could not be read as a weights-only"):
        load_meta(tmp_path)


def test_unknown_paths_and_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="is not a checkpoint"):
        detect_format(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"not gguf")
    with pytest.raises(ValueError, match="not a GGUF file"):
        detect_format(tmp_path / "weights.bin")
    save_hf(random_norm_model(TINY), tmp_path / "hf")
    with pytest.raises(FileNotFoundError, match="holds no tokenizer"):
        load_model(tmp_path / "hf")
    shutil.rmtree(tmp_path / "hf")


def test_export_of_a_bpe_checkpoint_to_meta_is_refused(tmp_path):
    from tokenizers import Tokenizer, models

    ckpt = LoadedModel(random_norm_model(TINY), BPETokenizer(Tokenizer(models.BPE()), None, None), "plain", True, "hf",
                      tmp_path)
    with pytest.raises(ValueError, match="SentencePiece"):
        export(ckpt, tmp_path / "out", "meta")
