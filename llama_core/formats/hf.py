"""Hugging Face Llama layout: config and weight names, and the rotary row permutation.

Meta rotates consecutive pairs (x[2i], x[2i+1]); Hugging Face rotates halves (x[i], x[i+D/2]).
The two agree once the rows of wq and wk are permuted within each head (transformers'
convert_llama_weights_to_hf.py does the same). On disk: config.json, model.safetensors (or shards
with model.safetensors.index.json), tokenizer.model or tokenizer.json; never pickles.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from llama_core.atomic import atomic_write_json
from llama_core.config import ModelConfig
from llama_core.formats.bpe import BPETokenizer
from llama_core.formats.common import build_model, check_vocab
from llama_core.model import Transformer
from llama_core.run_folder import read_json
from llama_core.tokenizer import SentencePieceTokenizer, Tokenizer

CONFIG, TOKENIZER_CONFIG = "config.json", "tokenizer_config.json"
_LAYER_NAMES = {  # Meta name -> Hugging Face name, inside layers.N
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def meta_to_hf_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's rows from interleaved pairs to halves (Meta -> HF)."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def hf_to_meta_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `meta_to_hf_rows` (HF -> Meta)."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def config_from_hf(hf: dict) -> ModelConfig:
    """A ModelConfig from a Hugging Face `config.json` dict of a Llama model."""
    dim, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or dim // n_heads
    if head_dim * n_heads != dim:
        raise ValueError(f"head_dim={head_dim} x heads={n_heads} != hidden_size={dim}: "
                         "such checkpoints are not supported")
    # transformers >= 5 nests theta and the scaling type in rope_parameters; older files keep them flat
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or ({} if rope.get("rope_type", "default") == "default" else rope)
    if scaling:
        raise ValueError(f"rope scaling {scaling} is not supported yet")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    return ModelConfig(
        dim=dim, n_layers=hf["num_hidden_layers"], n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads, vocab_size=hf["vocab_size"],
        ffn_hidden_dim=hf["intermediate_size"], norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        max_seq_len=hf.get("max_position_embeddings", 2048),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    """The Hugging Face `config.json` of a LlamaForCausalLM with this shape."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg.dim, "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_seq_len, "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }


def state_dict_from_hf(hf_sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Hugging Face weight names and rotary layout -> the lab's (Meta's)."""
    reverse_top = {v: k for k, v in _TOP_NAMES.items()}
    reverse_layer = {v: k for k, v in _LAYER_NAMES.items()}
    out = {}
    for name, w in hf_sd.items():
        if name in reverse_top:
            out[reverse_top[name]] = w
            continue
        if not name.startswith("model.layers."):
            if name.endswith("rotary_emb.inv_freq"):
                continue  # a derived buffer some exports include
            raise ValueError(f"unexpected Hugging Face weight {name!r}")
        index, rest = name[len("model.layers."):].split(".", 1)
        if rest.endswith("rotary_emb.inv_freq"):
            continue
        if rest not in reverse_layer:
            raise ValueError(f"unexpected Hugging Face weight {name!r}")
        ours = reverse_layer[rest]
        if ours == "attention.wq.weight":
            w = hf_to_meta_rows(w, cfg.n_heads)
        elif ours == "attention.wk.weight":
            w = hf_to_meta_rows(w, cfg.n_kv_heads)
        out[f"layers.{index}.{ours}"] = w
    if cfg.tie_embeddings:
        out.pop("output.weight", None)
        out["output.weight"] = out["tok_embeddings.weight"]
    return out


def state_dict_to_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The lab's (Meta's) weight names and rotary layout -> Hugging Face's."""
    out = {}
    for name, w in sd.items():
        if name in _TOP_NAMES:
            if name == "output.weight" and cfg.tie_embeddings:
                continue
            out[_TOP_NAMES[name]] = w
            continue
        _, index, rest = name.split(".", 2)
        if rest == "attention.wq.weight":
            w = meta_to_hf_rows(w, cfg.n_heads)
        elif rest == "attention.wk.weight":
            w = meta_to_hf_rows(w, cfg.n_kv_heads)
        out[f"model.layers.{index}.{_LAYER_NAMES[rest]}"] = w
    return out


# ------------------------------------------------------------------------------------- disk layout

def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of `model.safetensors`, or of every shard listed in `model.safetensors.index.json`."""
    from safetensors.torch import load_file

    def read(path: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(path))
        except Exception as err:  # safetensors' own errors do not name the file
            raise ValueError(f"{path} is not a readable safetensors file ({err}); it may be truncated or "
                             "damaged: download it again") from None

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return read(single)
    if not index.is_file():
        pickled = sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt")) + sorted(folder.glob("*.pth"))
        if pickled:
            raise ValueError(f"{pickled[0]} is a pickled PyTorch file and is refused (unpickling can run code): "
                             "only safetensors checkpoints load; ask for, or convert to, model.safetensors")
        raise FileNotFoundError(f"{folder} holds neither model.safetensors nor model.safetensors.index.json "
                                "(only safetensors checkpoints load; pickled .bin files are refused)")
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index} has no 'weight_map' object")
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = folder / shard
        if not path.is_file():
            raise FileNotFoundError(f"shard {path} listed in {index.name} is missing; download it again")
        tensors.update(read(path))
    absent = sorted(set(weight_map) - set(tensors))
    if absent:
        raise ValueError(f"{index}: weights {absent[:5]} are listed but not found in their shards")
    return tensors


def load_hf_tokenizer(folder: Path, hf_cfg: dict) -> Tokenizer | None:
    """tokenizer.model (SentencePiece) if present, else tokenizer.json (BPE), else None."""
    if (folder / "tokenizer.model").is_file():
        return SentencePieceTokenizer.load(folder / "tokenizer.model")
    if (folder / "tokenizer.json").is_file():
        return BPETokenizer.from_file(folder / "tokenizer.json", _first(hf_cfg.get("bos_token_id")),
                                      _first(hf_cfg.get("eos_token_id")))
    return None


def _first(value):
    """eos_token_id may be a list (several stop tokens): the first is the tokenizer's eos."""
    return value[0] if isinstance(value, list) and value else value


def hf_tokenizer_config(folder: Path) -> tuple[str | None, bool]:
    """(the chat template's Jinja text or None, whether prompts start with bos) from tokenizer_config.json."""
    path = folder / TOKENIZER_CONFIG
    config = read_json(path) if path.is_file() else {}
    return config.get("chat_template"), bool(config.get("add_bos_token", True))


def load_hf(folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
            ) -> tuple[Transformer, Tokenizer | None]:
    """A Hugging Face Llama folder: config.json, safetensors weights (single or sharded), tokenizer."""
    folder = Path(folder)
    hf_cfg = read_json(folder / CONFIG)
    if hf_cfg.get("model_type") not in ("llama", None):
        raise ValueError(f"{folder / CONFIG}: model_type {hf_cfg.get('model_type')!r} is not a Llama model")
    try:
        cfg = config_from_hf(hf_cfg)
    except KeyError as err:
        raise ValueError(f"{folder / CONFIG} lacks the field {err}") from None
    except (TypeError, ValueError, ZeroDivisionError) as err:
        raise ValueError(f"{folder / CONFIG} does not describe a valid model ({err})") from None
    weights = read_hf_weights(folder)
    try:
        sd = state_dict_from_hf(weights, cfg)
    except (RuntimeError, ValueError) as err:  # unknown names, or q/k rows that do not split into heads
        raise ValueError(f"{folder}: the weights do not fit {CONFIG} ({err})") from None
    model = build_model(cfg, sd, str(folder), device, dtype)
    tokenizer = load_hf_tokenizer(folder, hf_cfg)
    if tokenizer is not None:
        check_vocab(tokenizer, cfg, tokenizer.source)
    return model, tokenizer


def save_hf(model: Transformer, folder: str | os.PathLike, tokenizer: Tokenizer | None = None,
            max_shard_bytes: int | None = None, add_bos: bool = True, chat_template: str | None = None) -> Path:
    """Write `model` as a Hugging Face LlamaForCausalLM folder that `transformers` loads.

    With a tokenizer, the folder is complete for `AutoTokenizer` and `generate`: the tokenizer file,
    tokenizer_config.json (class, bos/eos, `add_bos`, the chat template), special_tokens_map.json and
    generation_config.json. With `max_shard_bytes`, weights are split over
    model-0000N-of-0000M.safetensors plus the index.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    hf_cfg = config_to_hf(cfg)
    hf_cfg["torch_dtype"] = str(model.output.weight.dtype).removeprefix("torch.")
    if tokenizer is not None:
        hf_cfg["bos_token_id"], hf_cfg["eos_token_id"] = tokenizer.bos_id, tokenizer.eos_id
    sd = {k: v.detach().contiguous().cpu() for k, v in state_dict_to_hf(model.state_dict(), cfg).items()}
    shards = _split_shards(sd, max_shard_bytes)
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in sd.values())
        atomic_write_json(folder / "model.safetensors.index.json",
                          {"metadata": {"total_size": total}, "weight_map": weight_map})
    atomic_write_json(folder / CONFIG, hf_cfg)
    if tokenizer is not None:
        save_hf_tokenizer(tokenizer, folder, add_bos, chat_template, cfg.max_seq_len)
    return folder


def save_hf_tokenizer(tokenizer: Tokenizer, folder: Path, add_bos: bool, chat_template: str | None,
                      max_len: int) -> None:
    """The tokenizer files transformers' AutoTokenizer reads, encoding as the lab does.

    A SentencePiece model goes as tokenizer.model under LlamaTokenizer (no legacy prefix space
    unless the model has one); a byte-level BPE as tokenizer.json, whose post-processor adds bos
    when prompts start with it (a generic fast tokenizer ignores `add_bos_token`).
    """
    special = {name: _raw_piece(tokenizer, token_id) for name, token_id in
               (("bos_token", tokenizer.bos_id), ("eos_token", tokenizer.eos_id)) if token_id is not None}
    config = {**special, "add_bos_token": add_bos, "add_eos_token": False, "model_max_length": max_len,
              "clean_up_tokenization_spaces": False}
    if isinstance(tokenizer, SentencePieceTokenizer):
        tokenizer.save(folder / "tokenizer.model")
        special["unk_token"] = _raw_piece(tokenizer, tokenizer.sp.unk_id())
        dummy_prefix = tokenizer.sp.encode("a", out_type=str)[0].startswith("\u2581")
        config.update(special, tokenizer_class="LlamaTokenizer", legacy=False, add_prefix_space=dummy_prefix)
    elif isinstance(tokenizer, BPETokenizer):
        tokenizer.save(folder / "tokenizer.json", bos_first=add_bos)
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    else:
        raise ValueError(f"cannot write a {type(tokenizer).__name__} in the Hugging Face layout")
    if chat_template:
        config["chat_template"] = chat_template
    atomic_write_json(folder / TOKENIZER_CONFIG, config)
    atomic_write_json(folder / "special_tokens_map.json", special)
    atomic_write_json(folder / "generation_config.json", {
        "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.eos_id})


def _raw_piece(tokenizer: Tokenizer, token_id: int) -> str:
    """A token as its vocabulary spells it (not decoded): what the tokenizer files name it by."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        return tokenizer.sp.id_to_piece(int(token_id))
    return tokenizer.tk.id_to_token(int(token_id))


def _split_shards(sd: dict[str, torch.Tensor], max_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in sd.items():
        nbytes = t.numel() * t.element_size()
        if max_bytes and shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards
