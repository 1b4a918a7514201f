"""What every checkpoint format shares: building a model from a named state dict, with clear errors.

A loader reads (config, Meta-named state dict, tokenizer); `build_model` checks that the weights
are exactly the ones the config implies (llama_core.run_folder.check_weights_fit, the one check
every format shares), and `check_vocab` that the tokenizer fits the embedding matrix, each error
naming the file it came from.
"""

from __future__ import annotations

import torch

from llama_core.config import ModelConfig
from llama_core.model import Transformer, rope_tables
from llama_core.run_folder import check_weights_fit
from llama_core.tokenizer import Tokenizer


def build_model(cfg: ModelConfig, state_dict: dict[str, torch.Tensor], source: str,
                device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Transformer:
    """A Transformer holding `state_dict` (Meta names); missing, extra or misshapen weights are errors.

    With tied embeddings, `output.weight` may be absent (it is the embedding matrix).
    """
    check_weights_fit({name: w.shape for name, w in state_dict.items()}, cfg, source)
    state_dict = dict(state_dict)
    if cfg.tie_embeddings:
        state_dict.pop("output.weight", None)
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

