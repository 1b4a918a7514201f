"""The lab's quantized checkpoint folder: int8/int4 weights in safetensors, loaded straight into
the quantized layers (no float32 copy of a quantized weight is ever made), never unpickled.

    DIR/
        quantized.json      {"format": "llama-lab-quantized", "version": 1, "model": ModelConfig,
                             "quant": "int8" | "int4", "group_size": n (null: int8 per channel),
                             "tokenizer": file name, "bos_id", "eos_id", "add_bos",
                             "chat_template": a template name or null, "chat_template_text": Jinja or null}
        model.safetensors   Meta names; each quantized linear NAME as NAME.weight (int8 (out, in), or
                            uint8 (out, in/2): two 4-bit weights per byte), NAME.scales and, for int4,
                            NAME.zeros (float32 (out, groups)); the embedding, the norms and any float
                            linear as float tensors; a head tied to the embedding stored once
        tokenizer.model     (SentencePiece) or tokenizer.json (byte-level BPE)

Fused products (wqkv, w13) are cut back into Meta's rows on save (each row is quantized on its
own, so this is exact) and fused again on load, so a reloaded model computes what was saved.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from llama_core.atomic import atomic_write_bytes, atomic_write_json
from llama_core.config import ModelConfig
from llama_core.formats.bpe import BPETokenizer
from llama_core.formats.common import build_model, check_vocab
from llama_core.formats.gguf_quant import placeholder, swap_in
from llama_core.model import Transformer
from llama_core.quantize import fuse_quantized, layer_from_state, quantization_of, split_rows
from llama_core.run_folder import CheckpointError, check_weights_fit, read_json
from llama_core.tokenizer import SentencePieceTokenizer, Tokenizer

CONFIG, WEIGHTS = "quantized.json", "model.safetensors"
FORMAT, VERSION = "llama-lab-quantized", 1
_SP, _BPE = "tokenizer.model", "tokenizer.json"


def is_quantized_folder(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def stored_quantization(path: str | os.PathLike) -> str:
    """"int4" or "int8" where a checkpoint stores its blocks' linear weights so (a quantized folder,
    a GGUF of Q4_0/Q4_1 or Q8_0 blocks), else "none": the quantization chat defaults to."""
    path = Path(path)
    if path.is_dir():
        return str(read_json(path / CONFIG).get("quant", "none")) if is_quantized_folder(path) else "none"
    import gguf

    try:
        kinds = {t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors if t.name.startswith("blk.")}
    except Exception as err:  # the loader says what is wrong with the file in detail
        raise ValueError(f"{path} is not a readable GGUF file ({err})") from None
    return "int4" if kinds & {"Q4_0", "Q4_1"} else "int8" if "Q8_0" in kinds else "none"


# ------------------------------------------------------------------------------------------ save

def save_quantized(model: Transformer, folder: str | os.PathLike, tokenizer: Tokenizer, group_size: int | None,
                   add_bos: bool = True, chat_template: str | None = None,
                   chat_template_text: str | None = None) -> Path:
    """Write a quantized `model` (llama_core.quantize) with its tokenizer as a quantized folder."""
    quant = quantization_of(model)
    if quant == "none":
        raise ValueError("the model has no quantized layers: quantize it first (llama_core.quantize.quantize), "
                         "or export a float model to the Hugging Face or Meta layout")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(tokenizer, SentencePieceTokenizer):
        tokenizer_file = _SP
    elif isinstance(tokenizer, BPETokenizer):
        tokenizer_file = _BPE
    else:
        raise ValueError(f"cannot store a {type(tokenizer).__name__} in a quantized folder")
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in meta_tensors(model).items()}
    (folder / CONFIG).unlink(missing_ok=True)  # written last: a folder cut short is no checkpoint, not a mix
    atomic_write_bytes(folder / WEIGHTS, save_safetensors(tensors, metadata={"format": "pt"}))
    tokenizer.save(folder / tokenizer_file)
    atomic_write_json(folder / CONFIG, {
        "format": FORMAT, "version": VERSION, "model": model.config.to_dict(), "quant": quant,
        "group_size": group_size, "tokenizer": tokenizer_file, "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id, "add_bos": add_bos, "chat_template": chat_template,
        "chat_template_text": chat_template_text})
    return folder


def meta_tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """Every tensor of the model under Meta's names; a quantized linear's as NAME.weight/.scales/.zeros."""
    cfg = model.config
    out = {"tok_embeddings.weight": model.tok_embeddings.weight, "norm.weight": _gain(model.norm, "norm")}
    kv = cfg.n_kv_heads * cfg.head_dim
    for i, block in enumerate(model.layers):
        p, attn, ffn = f"layers.{i}.", block.attention, block.feed_forward
        out[p + "attention_norm.weight"] = _gain(block.attention_norm, p + "attention_norm")
        out[p + "ffn_norm.weight"] = _gain(block.ffn_norm, p + "ffn_norm")
        linears = {"attention.wo": attn.wo, "feed_forward.w2": ffn.w2}
        if attn.wqkv is not None:
            parts = _rows(attn.wqkv, [cfg.n_heads * cfg.head_dim, kv, kv], p + "attention.wqkv")
            linears.update(zip(("attention.wq", "attention.wk", "attention.wv"), parts))
        else:
            linears.update({"attention.wq": attn.wq, "attention.wk": attn.wk, "attention.wv": attn.wv})
        if ffn.w13 is not None:
            linears.update(zip(("feed_forward.w1", "feed_forward.w3"),
                               _rows(ffn.w13, [cfg.hidden_dim, cfg.hidden_dim], p + "feed_forward.w13")))
        else:
            linears.update({"feed_forward.w1": ffn.w1, "feed_forward.w3": ffn.w3})
        for name, layer in linears.items():
            out.update({f"{p}{name}.{k}": t for k, t in _state(layer, p + name).items()})
    tied = getattr(model.output, "weight", None) is model.tok_embeddings.weight
    if not tied:
        out.update({f"output.{k}": t for k, t in _state(model.output, "output").items()})
    return out


def layer_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """One linear layer's tensors out of `meta_tensors`: {"weight"} or {"weight", "scales"[, "zeros"]}."""
    return {k: tensors[f"{prefix}.{k}"] for k in ("weight", "scales", "zeros") if f"{prefix}.{k}" in tensors}


def _gain(norm: nn.Module, name: str) -> torch.Tensor:
    if norm.weight is None:
        raise ValueError(f"{name}'s gain was folded into the next layer (llama_core.packing.pack): save the "
                         "plain or the quantized model, not the packed float one")
    return norm.weight


def _state(layer: nn.Module, name: str) -> dict[str, torch.Tensor]:
    if type(layer) is nn.Linear or hasattr(layer, "scales"):
        return dict(layer.state_dict())
    raise ValueError(f"{name} is a {type(layer).__name__}, which a quantized folder does not store: save "
                     "the plain or the quantized model, not the packed float one")


def _rows(layer: nn.Module, sizes: list[int], name: str) -> list[nn.Module | dict]:
    if type(layer) is nn.Linear:
        return [{"weight": w} for w in layer.weight.split(sizes)]
    _state(layer, name)
    return split_rows(layer, sizes)


# ------------------------------------------------------------------------------------------ load

def load_quantized(folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
                   ) -> tuple[Transformer, Tokenizer, dict]:
    """(model with its quantized layers, tokenizer, the folder's quantized.json) from a quantized folder.

    `dtype` applies to the float tensors (embedding, norms); quantized weights stay as stored."""
    folder = Path(folder)
    meta = read_json(folder / CONFIG)
    source = str(folder / CONFIG)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{source} is not a version-{VERSION} {FORMAT} record; write it again with "
                              "`lab export --to quantized`")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        raise CheckpointError(f"{source} does not describe a model ({type(err).__name__}: {err})") from None
    weights = folder / WEIGHTS
    check_weights_fit(logical_shapes(weights), cfg, f"{weights} (with {source})")
    tokenizer = _tokenizer(folder, meta)
    check_vocab(tokenizer, cfg, tokenizer.source)
    tensors = _read(weights)
    layers, floats = {}, {}
    for name, t in tensors.items():
        if name.endswith(".scales"):
            prefix = name.removesuffix(".scales")
            try:
                layers[prefix] = layer_from_state(layer_state(tensors, prefix)).to(device)
            except (KeyError, ValueError, RuntimeError) as err:
                raise CheckpointError(f"{weights}: {prefix} is not a quantized layer ({err}); the file is "
                                      "damaged") from None
            floats[f"{prefix}.weight"] = placeholder((layers[prefix].out_features, layers[prefix].in_features),
                                                     torch.float32)
        elif not name.endswith(".zeros") and f"{name.removesuffix('.weight')}.scales" not in tensors:
            floats[name] = t
    model = build_model(cfg, floats, str(weights), device, dtype or torch.float32)
    swap_in(model, layers)
    return fuse_quantized(model).eval().requires_grad_(False), tokenizer, meta


def logical_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """name -> the (out, in) shape each weight stands for, from the file's header alone; a quantized
    layer's scales must split its inputs into whole groups."""
    with _readable(weights), safe_open(str(weights), framework="pt") as f:
        header = {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()}
    shapes = {}
    for name, (shape, dtype) in header.items():
        if name.endswith((".scales", ".zeros")):
            continue
        prefix = name.removesuffix(".weight")
        scales = header.get(f"{prefix}.scales")
        if scales is None:
            shapes[name] = shape
            continue
        rows, cols = shape
        n_in = cols * 2 if dtype.upper() == "U8" else cols
        groups = scales[0][1] if len(scales[0]) == 2 else 0
        if scales[0][:1] != (rows,) or not groups or n_in % groups:
            raise CheckpointError(f"{weights}: {prefix}.scales has shape {list(scales[0])}, which does not split "
                                  f"{rows} rows of {n_in} inputs into whole groups; the file is damaged")
        shapes[name] = (rows, n_in)
    return shapes


def _tokenizer(folder: Path, meta: dict) -> Tokenizer:
    name = meta.get("tokenizer")
    if name == _SP:
        return SentencePieceTokenizer.load(folder / _SP)
    if name == _BPE:
        return BPETokenizer.from_file(folder / _BPE, meta.get("bos_id"), meta.get("eos_id"))
    raise CheckpointError(f"{folder / CONFIG}: tokenizer {name!r} is neither {_SP} nor {_BPE}")


def _read(weights: Path) -> dict[str, torch.Tensor]:
    with _readable(weights):
        return load_file(str(weights))


@contextlib.contextmanager
def _readable(path: Path):
    """safetensors' errors do not name the file: these do."""
    try:
        yield
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist; the quantized folder is incomplete") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); write the folder again") from None
