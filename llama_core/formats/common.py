"""What every checkpoint format shares: building a model from a named state dict, with clear errors.

A loader reads (config, Meta-named state dict, tokenizer); `build_model` checks that the weights
are exactly the ones the config implies, with the shapes it implies, and `check_vocab` that the
tokenizer fits the embedding matrix, each error naming the file it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llama_core.config import ModelConfig
from llama_core.model import Transformer, rope_tables
from llama_core.tokenizer import Tokenizer


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


# A damaged or hostile header must not make a loader allocate more than the weights themselves:
# rotary tables are built for the whole context, and the expected weights are listed per layer.
MAX_SEQ_LEN = 1 << 20


def check_plausible(cfg: ModelConfig, n_tensors: int, source: str) -> None:
    """Refuse a config that asks for absurd sizes before anything is built from it."""
    if cfg.max_seq_len > MAX_SEQ_LEN:
        raise ValueError(f"{source}: a context of {cfg.max_seq_len:,} tokens is beyond the {MAX_SEQ_LEN:,} "
                         "this lab builds rotary tables for; the file is damaged or not meant for this lab")
    if cfg.n_layers > n_tensors:  # every layer has 9 weights
        raise ValueError(f"{source}: the config has {cfg.n_layers:,} layers but the file holds only {n_tensors} "
                         "weights; the config is damaged or describes a different model")


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of a Transformer with this config and its shape (the tied output included)."""
    d, hd, kv = cfg.dim, cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "tok_embeddings.weight": (cfg.vocab_size, d), "norm.weight": (d,), "output.weight": (cfg.vocab_size, d)}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        shapes.update({
            p + "attention.wq.weight": (cfg.n_heads * hd, d), p + "attention.wk.weight": (kv, d),
            p + "attention.wv.weight": (kv, d), p + "attention.wo.weight": (d, cfg.n_heads * hd),
            p + "feed_forward.w1.weight": (cfg.hidden_dim, d), p + "feed_forward.w2.weight": (d, cfg.hidden_dim),
            p + "feed_forward.w3.weight": (cfg.hidden_dim, d),
            p + "attention_norm.weight": (d,), p + "ffn_norm.weight": (d,),
        })
    return shapes


def build_model(cfg: ModelConfig, state_dict: dict[str, torch.Tensor], source: str,
                device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Transformer:
    """A Transformer holding `state_dict` (Meta names); missing, extra or misshapen weights are errors.

    With tied embeddings, `output.weight` may be absent (it is the embedding matrix).
    """
    check_plausible(cfg, len(state_dict), source)
    shapes = expected_shapes(cfg)
    state_dict = dict(state_dict)
    if cfg.tie_embeddings:
        state_dict.pop("output.weight", None)
        shapes.pop("output.weight")
    missing = sorted(set(shapes) - set(state_dict))
    extra = sorted(set(state_dict) - set(shapes))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ValueError(f"{source}: weights missing for {missing[:5]}{more}; the checkpoint is incomplete "
                         "or its config describes a different model")
    if extra:
        raise ValueError(f"{source}: unexpected weights {extra[:5]}; the config (n_layers="
                         f"{cfg.n_layers}) describes a different model")
    for name, shape in shapes.items():
        got = tuple(state_dict[name].shape)
        if got != shape:
            raise ValueError(f"{source}: {name} has shape {list(got)} but the config implies {list(shape)} "
                             "(a shard missing, or a config that disagrees with the weights)")
    dtype = dtype or _common_float_dtype(state_dict)
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        model = Transformer(cfg)
    # assign=True adopts the loaded tensors instead of copying them into fresh ones
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()},
                          strict=False, assign=True)
    if cfg.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    # the rope tables are buffers computed at construction: compute them again off the meta device
    cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
    model.rope_cos, model.rope_sin = cos.to(device), sin.to(device)
    return model.eval()


def _common_float_dtype(state_dict: dict[str, torch.Tensor]) -> torch.dtype:
    """float32 unless every weight is already bf16 or fp16 (then keep it)."""
    dtypes = {t.dtype for t in state_dict.values()}
    return dtypes.pop() if len(dtypes) == 1 and dtypes & {torch.bfloat16, torch.float16} else torch.float32


def check_vocab(tokenizer: Tokenizer, cfg: ModelConfig, source: str) -> None:
    """A tokenizer may use fewer ids than the model embeds (padded vocabularies), never more."""
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"{source}: the tokenizer has {tokenizer.vocab_size} tokens but the model embeds "
                         f"only {cfg.vocab_size}; they do not belong together (use the model's own tokenizer)")

