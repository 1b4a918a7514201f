"""GGUF out: a lab model as a llama.cpp file with Q8_0 or Q4_1 linear weights and its vocabulary.

Written with the `gguf` package's GGUFWriter, in the layout llama_core.formats.gguf reads (the same
tensor names, Meta's rotary layout, which is llama.cpp's). Every linear layer, the output head
included, is stored in the chosen block type (llama_core.formats.gguf_quant describes the blocks):
a layer already quantized the same way (int8 in groups of a multiple of 32 for Q8_0, int4 in such
groups for Q4_1) is copied as it is, only its scales and zero points rounded to the format's fp16;
anything else is quantized from its float32 values with the format's own rule (ggml's
`quantize_row_q8_0` / `quantize_row_q4_1`, which llama_core.quantize's int8/int4 are). The head
is always written as its own `output.weight`, so it stays quantized even where it was tied to the
embedding; the embedding is F16 (one row of it is read per token) and the norms F32, as llama.cpp
keeps them. The vocabulary: a SentencePiece model as tokenizer.ggml.model = "llama" (pieces,
scores, types), a byte-level BPE (SmolLM2's, a run finetuned from it) as "gpt2"
(llama_core.formats.gguf_vocab); llama.cpp and llama_core.formats.gguf both rebuild either.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from llama_core.atomic import atomic_path
from llama_core.formats.gguf import _LAYER_NAMES, _TOP_NAMES
from llama_core.formats.gguf_quant import BLOCK
from llama_core.formats.gguf_vocab import add_vocabulary
from llama_core.formats.quantized import layer_state, meta_tensors
from llama_core.model import Transformer
from llama_core.quantize import layer_from_state, quantize_int4, quantize_int8, unpack_nibbles
from llama_core.tokenizer import Tokenizer

KINDS = ("q8_0", "q4_1")
_TO_GGUF = {**{v: k for k, v in _TOP_NAMES.items()}, **{v: k for k, v in _LAYER_NAMES.items()}}  # Meta -> GGUF


def save_gguf(model: Transformer, path: str | os.PathLike, tokenizer: Tokenizer, kind: str, add_bos: bool = True,
              chat_template_text: str | None = None, name: str | None = None) -> Path:
    """Write `model` (float or quantized) as a llama GGUF file whose linear layers are `kind` blocks."""
    import gguf

    if kind not in KINDS:
        raise ValueError(f"unknown GGUF block type {kind!r}; choose one of {KINDS}")
    cfg = model.config
    tensors = meta_tensors(model)
    if "output.weight" not in tensors:  # tied: the head gets its own quantized copy of the embedding
        tensors["output.weight"] = tensors["tok_embeddings.weight"]
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_name(name or path.stem)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if kind == "q8_0" else gguf.LlamaFileType.MOSTLY_Q4_1)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_block_count(cfg.n_layers)
        writer.add_context_length(cfg.max_seq_len)
        writer.add_embedding_length(cfg.dim)
        writer.add_feed_forward_length(cfg.hidden_dim)
        writer.add_head_count(cfg.n_heads)
        writer.add_head_count_kv(cfg.n_kv_heads)
        writer.add_rope_dimension_count(cfg.head_dim)
        writer.add_rope_freq_base(cfg.rope_theta)
        writer.add_layer_norm_rms_eps(cfg.norm_eps)
        writer.add_vocab_size(cfg.vocab_size)
        add_vocabulary(writer, tokenizer, cfg.vocab_size, add_bos)
        if chat_template_text:
            writer.add_chat_template(chat_template_text)
        for meta_name, value in tensors.items():
            if meta_name.endswith((".scales", ".zeros")):
                continue
            target = _gguf_name(meta_name)
            if value.dim() == 1:
                writer.add_tensor(target, value.detach().float().cpu().numpy())
            elif meta_name == "tok_embeddings.weight":
                writer.add_tensor(target, value.detach().cpu().numpy().astype(np.float16))
            else:
                raw = _blocks(layer_state(tensors, meta_name.removesuffix(".weight")), kind, meta_name)
                writer.add_tensor(target, raw, raw_dtype=gguf.GGMLQuantizationType[kind.upper()])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def _gguf_name(meta_name: str) -> str:
    if meta_name.startswith("layers."):
        _, index, rest = meta_name.split(".", 2)
        return f"blk.{index}.{_TO_GGUF[rest]}"
    return _TO_GGUF[meta_name]


# ------------------------------------------------------------------------------------- the blocks

def _blocks(state: dict[str, torch.Tensor], kind: str, name: str) -> np.ndarray:
    """(out, bytes) of `kind` blocks for one linear layer given as its state (float, int8 or int4)."""
    weight = state["weight"].detach().cpu()
    n_in = weight.shape[1] * (2 if "zeros" in state else 1)
    if n_in % BLOCK:
        raise ValueError(f"{name} has {n_in} inputs, which do not split into GGUF blocks of {BLOCK}: export "
                         "this model with --to quantized instead")
    scales = state.get("scales")
    same_groups = scales is not None and (n_in // scales.shape[1]) % BLOCK == 0
    if kind == "q8_0":
        if same_groups and "zeros" not in state:
            return q8_0_blocks(weight, _per_block(scales.cpu(), n_in))
        return q8_0_blocks(*quantize_int8(_float(state), BLOCK))
    if same_groups and "zeros" in state:
        return q4_1_blocks(unpack_nibbles(weight), _per_block(scales.cpu(), n_in),
                           _per_block(state["zeros"].cpu(), n_in))
    return q4_1_blocks(*quantize_int4(_float(state), BLOCK))


def _float(state: dict[str, torch.Tensor]) -> torch.Tensor:
    if "scales" not in state:
        return state["weight"].detach().float().cpu()
    return layer_from_state({k: t.detach().cpu() for k, t in state.items()}).dequantize()


def _per_block(values: torch.Tensor, n_in: int) -> torch.Tensor:
    """(out, groups) -> (out, n_in / 32): each group's value repeated over its blocks."""
    return values.float().repeat_interleave(n_in // BLOCK // values.shape[1], dim=1)


def q8_0_blocks(q: torch.Tensor, scales: torch.Tensor) -> np.ndarray:
    """ggml's block_q8_0 rows: fp16 d, then 32 int8; `scales` per block of 32, (out, n_in / 32)."""
    out, n_in = q.shape
    d = scales.numpy().astype(np.float16).view(np.uint8).reshape(out, -1, 2)
    qs = q.numpy().view(np.uint8).reshape(out, n_in // BLOCK, BLOCK)
    return np.concatenate([d, qs], axis=-1).reshape(out, -1)


def q4_1_blocks(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> np.ndarray:
    """ggml's block_q4_1 rows: fp16 d, fp16 m, 16 bytes whose low nibble is weight j and high nibble
    weight j + 16; from w = scales * (q - 8) + zeros, so m = zeros - 8 * scales."""
    out, n_in = q.shape
    d = scales.numpy().astype(np.float16)
    m = (zeros - 8 * scales).numpy().astype(np.float16)
    qb = q.to(torch.uint8).numpy().reshape(out, n_in // BLOCK, BLOCK)
    nibbles = qb[..., :BLOCK // 2] | (qb[..., BLOCK // 2:] << 4)
    halves = [x.view(np.uint8).reshape(out, -1, 2) for x in (d, m)]
    return np.concatenate([*halves, nibbles], axis=-1).reshape(out, -1)
