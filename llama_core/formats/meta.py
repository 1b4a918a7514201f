"""Meta's original layout: params.json, consolidated.NN.pth model-parallel shards, tokenizer.model.

Meta's reference code splits each matrix over N model-parallel ranks: column-parallel layers
(wq, wk, wv, w1, w3, output) along their output rows (dim 0), row-parallel layers (wo, w2) and the
embedding (split over its feature columns) along dim 1; norms are replicated. Loading concatenates
the shards along those dimensions; saving splits them the same way. Shards are read with
`torch.load(weights_only=True)`, which never runs pickled code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from llama_core.atomic import atomic_path, atomic_write_json
from llama_core.checkpoint import load_weights_only
from llama_core.config import ModelConfig, swiglu_hidden_dim
from llama_core.formats.common import build_model, check_vocab
from llama_core.model import Transformer
from llama_core.run_folder import read_json
from llama_core.tokenizer import SentencePieceTokenizer

_DIM0 = ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
         "feed_forward.w1.weight", "feed_forward.w3.weight", "output.weight")
_DIM1 = ("attention.wo.weight", "feed_forward.w2.weight", "tok_embeddings.weight")
_SHARD = re.compile(r"consolidated\.(\d+)\.pth")


def split_dim(name: str) -> int | None:
    """The dimension a weight is split along across model-parallel shards (None: replicated)."""
    if name.endswith(_DIM0):
        return 0
    if name.endswith(_DIM1):
        return 1
    return None


def shard_paths(folder: Path) -> list[Path]:
    """consolidated.00.pth ... in order; a gap in the numbering is a missing shard."""
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := _SHARD.fullmatch(p.name))}
    if not found:
        raise FileNotFoundError(f"{folder} holds no consolidated.NN.pth shard")
    for i in range(max(found) + 1):
        if i not in found:
            raise FileNotFoundError(f"shard {folder / f'consolidated.{i:02d}.pth'} is missing "
                                    f"(found {len(found)} of at least {max(found) + 1} shards)")
    return [found[i] for i in range(len(found))]


def merge_shards(shards: list[dict[str, torch.Tensor]], source: str) -> dict[str, torch.Tensor]:
    """One state dict from model-parallel pieces, concatenated along each weight's split dimension."""
    names = set(shards[0])
    for i, shard in enumerate(shards[1:], start=1):
        if set(shard) != names:
            diff = sorted(names ^ set(shard))[:3]
            raise ValueError(f"{source}: shard {i} holds different weights from shard 0 (e.g. {diff})")
    merged = {}
    for name in shards[0]:
        if name == "rope.freqs":  # LLaMA-1 stores its rotary table; the model computes its own
            continue
        dim = split_dim(name)
        pieces = [s[name] for s in shards]
        merged[name] = pieces[0] if dim is None or len(pieces) == 1 else torch.cat(pieces, dim=dim)
    return merged


def config_from_params(params: dict, sd: dict[str, torch.Tensor], source: str) -> ModelConfig:
    """A ModelConfig from params.json, checked against the merged weights (vocab_size -1 = from weights)."""
    dim, n_heads = params["dim"], params["n_heads"]
    vocab = params.get("vocab_size", -1)
    emb = sd.get("tok_embeddings.weight")
    if emb is None:
        raise ValueError(f"{source}: the shards hold no tok_embeddings.weight")
    if vocab in (-1, None):
        vocab = emb.shape[0]
    multiple_of, mult = params.get("multiple_of", 256), params.get("ffn_dim_multiplier")
    hidden = params.get("ffn_hidden_dim") or swiglu_hidden_dim(dim, multiple_of, mult)
    w1 = sd.get("layers.0.feed_forward.w1.weight")
    if w1 is not None and w1.shape[0] != hidden:
        raise ValueError(f"{source}: params.json implies a feed-forward size of {hidden} (dim={dim}, "
                         f"multiple_of={multiple_of}, ffn_dim_multiplier={mult}) but the weights have "
                         f"{w1.shape[0]}: a shard is missing, or params.json does not belong to these shards")
    out = sd.get("output.weight")
    return ModelConfig(
        dim=dim, n_layers=params["n_layers"], n_heads=n_heads, n_kv_heads=params.get("n_kv_heads"),
        vocab_size=vocab, multiple_of=multiple_of, ffn_dim_multiplier=mult,
        ffn_hidden_dim=params.get("ffn_hidden_dim"), norm_eps=params.get("norm_eps", 1e-5),
        rope_theta=float(params.get("rope_theta", 10000.0)), max_seq_len=params.get("max_seq_len", 2048),
        # Meta's files always hold an output matrix; an exact copy of the embedding means tied
        tie_embeddings=out is not None and out.shape == emb.shape and torch.equal(out, emb),
    )


def load_meta(folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
              ) -> tuple[Transformer, SentencePieceTokenizer | None]:
    """(model, tokenizer or None) from a Meta checkpoint folder."""
    folder = Path(folder)
    params = read_json(folder / "params.json")
    paths = shard_paths(folder)
    shards = []
    for path in paths:
        shards.append(load_weights_only(path, mmap=True))
    for path, shard in zip(paths, shards):
        if not isinstance(shard, dict) or not all(isinstance(v, torch.Tensor) for v in shard.values()):
            raise ValueError(f"{path} does not hold a dictionary of tensors")
    sd = merge_shards(shards, str(folder))
    try:
        cfg = config_from_params(params, sd, f"{folder / 'params.json'} with {len(paths)} shard(s)")
    except KeyError as err:
        raise ValueError(f"{folder / 'params.json'} lacks the field {err}") from None
    except (TypeError, ValueError, ZeroDivisionError) as err:
        if isinstance(err, ValueError) and "params.json" in str(err):
            raise
        raise ValueError(f"{folder / 'params.json'} does not describe a valid model ({err})") from None
    model = build_model(cfg, sd, f"{folder / 'params.json'} with {len(paths)} shard(s)", device, dtype)
    tokenizer = None
    if (folder / "tokenizer.model").is_file():
        tokenizer = SentencePieceTokenizer.load(folder / "tokenizer.model")
        check_vocab(tokenizer, cfg, str(folder / "tokenizer.model"))
    return model, tokenizer


def params_of(cfg: ModelConfig) -> dict:
    """Meta's params.json for this config (ffn_hidden_dim only when Meta's rule cannot express it)."""
    params = {"dim": cfg.dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads,
              "vocab_size": cfg.vocab_size, "multiple_of": cfg.multiple_of,
              "ffn_dim_multiplier": cfg.ffn_dim_multiplier, "norm_eps": cfg.norm_eps,
              "rope_theta": cfg.rope_theta, "max_seq_len": cfg.max_seq_len}
    if swiglu_hidden_dim(cfg.dim, cfg.multiple_of, cfg.ffn_dim_multiplier) != cfg.hidden_dim:
        params["ffn_hidden_dim"] = cfg.hidden_dim
    return params


def save_meta(model: Transformer, folder: str | os.PathLike, tokenizer: SentencePieceTokenizer | None = None,
              shards: int = 1) -> Path:
    """Write `model` in Meta's layout over `shards` model-parallel files (tied output written out)."""
    cfg = model.config
    for name, size in (("n_heads", cfg.n_heads), ("n_kv_heads", cfg.n_kv_heads), ("dim", cfg.dim),
                       ("hidden_dim", cfg.hidden_dim), ("vocab_size", cfg.vocab_size)):
        if size % shards:
            raise ValueError(f"cannot split into {shards} shards: {name}={size} is not divisible by {shards}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for rank in range(shards):
        piece = {}
        for name, w in sd.items():
            dim = split_dim(name)
            # clone: torch.save would otherwise store each slice's whole underlying matrix
            piece[name] = w.clone() if dim is None else w.chunk(shards, dim=dim)[rank].clone()
        with atomic_path(folder / f"consolidated.{rank:02d}.pth") as tmp:
            torch.save(piece, tmp)
    atomic_write_json(folder / "params.json", params_of(cfg))
    if tokenizer is not None:
        tokenizer.save(folder / "tokenizer.model")
    return folder
