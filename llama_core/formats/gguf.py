"""GGUF (llama.cpp's single-file format) in: weights dequantized, the tokenizer and chat template.

Read through the `gguf` package; F32, F16, BF16, Q8_0, Q4_0 and Q4_1 tensors are dequantized with
its own `gguf.quants.dequantize`; the vocabulary is read by llama_core.formats.gguf_vocab.
llama.cpp's converter permutes Hugging Face's q/k rows into Meta's interleaved-pair rotary layout
(its `LlamaModel.permute`), which is the lab's layout, so the weights load as they are. GGUF lists
each shape fastest axis first; the reader's arrays are already (rows, cols) like torch's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from llama_core.config import ModelConfig
from llama_core.formats.common import build_model, check_vocab
from llama_core.formats.gguf_quant import KEPT_TYPES, placeholder, quantized_linear, swap_in
from llama_core.formats.gguf_vocab import field as _field
from llama_core.formats.gguf_vocab import tokenizer_from_gguf
from llama_core.model import Transformer
from llama_core.tokenizer import Tokenizer

SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")

_LAYER_NAMES = {  # GGUF name inside blk.N -> Meta name inside layers.N
    "attn_q.weight": "attention.wq.weight", "attn_k.weight": "attention.wk.weight",
    "attn_v.weight": "attention.wv.weight", "attn_output.weight": "attention.wo.weight",
    "ffn_gate.weight": "feed_forward.w1.weight", "ffn_down.weight": "feed_forward.w2.weight",
    "ffn_up.weight": "feed_forward.w3.weight", "attn_norm.weight": "attention_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
}
_TOP_NAMES = {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight",
              "output.weight": "output.weight"}


def _reader(path: str | os.PathLike):
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as err:
        raise ValueError(f"{path} is not a readable GGUF file ({err})") from None


def config_from_gguf(reader, source: str) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{source}: architecture {arch!r} is not supported; only 'llama' GGUF files load")
    a = "llama."
    try:
        n_heads = int(_field(reader, a + "attention.head_count"))
        dim = int(_field(reader, a + "embedding_length"))
        embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
        return ModelConfig(
            dim=dim, n_layers=int(_field(reader, a + "block_count")), n_heads=n_heads,
            n_kv_heads=int(_field(reader, a + "attention.head_count_kv", n_heads)),
            vocab_size=int(_field(reader, a + "vocab_size", int(embd.shape[-1]))),
            ffn_hidden_dim=int(_field(reader, a + "feed_forward_length")),
            norm_eps=float(_field(reader, a + "attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(_field(reader, a + "rope.freq_base", 10000.0)),
            max_seq_len=int(_field(reader, a + "context_length", 2048)),
            tie_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
        )
    except (TypeError, StopIteration):
        raise ValueError(f"{source}: the GGUF metadata lacks a llama.* hyperparameter or token_embd.weight") from None


def state_dict_from_gguf(reader, source: str, quantized: dict | None = None) -> dict[str, torch.Tensor]:
    """Every tensor dequantized to float32 under its Meta name; with a `quantized` dict, Q4_0/Q4_1/Q8_0
    linear weights go there as quantized layers instead, with a memoryless placeholder in the result."""
    from gguf.quants import dequantize

    out = {}
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind not in SUPPORTED_TYPES:
            raise ValueError(f"{source}: tensor {t.name} is stored as {kind}; supported: {', '.join(SUPPORTED_TYPES)}")
        if t.name in _TOP_NAMES:
            name = _TOP_NAMES[t.name]
        elif t.name.startswith("blk.") and t.name.split(".", 2)[2] in _LAYER_NAMES:
            _, index, rest = t.name.split(".", 2)
            name = f"layers.{index}.{_LAYER_NAMES[rest]}"
        elif t.name == "rope_freqs.weight":
            raise ValueError(f"{source}: rope frequency scaling (rope_freqs) is not supported yet")
        else:
            raise ValueError(f"{source}: unexpected tensor {t.name!r} for a llama model")
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists the fastest axis first
        if quantized is not None and kind in KEPT_TYPES and (name.startswith("layers.") or name == "output.weight"):
            quantized[name.removesuffix(".weight")] = quantized_linear(kind, np.asarray(t.data), shape)
            out[name] = placeholder(shape, torch.float32)
            continue
        values = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32, copy=False)
        if not values.flags.writeable:  # float32 tensors come straight from the read-only file map
            values = values.copy()
        out[name] = torch.from_numpy(values.reshape(shape))
    return out


def chat_template_of(reader) -> str | None:
    return _field(reader, "tokenizer.chat_template")


def load_gguf(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
              keep_quantized: bool = False) -> tuple[Transformer, Tokenizer, str | None, bool]:
    """(model, tokenizer, chat template text or None, whether prompts start with bos) from a .gguf.

    `keep_quantized` loads Q4_0/Q4_1/Q8_0 linear weights as quantized layers (llama_core.formats.gguf_quant)."""
    reader = _reader(path)
    source = str(path)
    try:
        cfg = config_from_gguf(reader, source)
        tokenizer = tokenizer_from_gguf(reader, source)
        check_vocab(tokenizer, cfg, source)
        quantized = {} if keep_quantized else None  # the rest then stays float32, as the placeholders are
        model = build_model(cfg, state_dict_from_gguf(reader, source, quantized), source, device,
                            torch.float32 if keep_quantized else dtype or torch.float32)
        swap_in(model, {name: layer.to(device) for name, layer in (quantized or {}).items()})
        add_bos = bool(_field(reader, "tokenizer.ggml.add_bos_token", True))
        return model, tokenizer, chat_template_of(reader), add_bos
    except ValueError as err:
        if source in str(err):
            raise
        raise ValueError(f"{source} is damaged ({type(err).__name__}: {err})") from None
    except (ArithmeticError, IndexError, KeyError, TypeError, RuntimeError) as err:
        # the reader decodes fields lazily: a damaged file surfaces here, in the gguf package or numpy
        raise ValueError(f"{source} is damaged ({type(err).__name__}: {err})") from None
