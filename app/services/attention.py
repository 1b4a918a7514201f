"""Attention maps for the Attention page: one layer's weights recomputed explicitly, and uploaded prompts."""

from __future__ import annotations

import torch

from app.services.checkpoints import ServedModel
from llama_core.attention_maps import attention_weights as model_attention_weights

MAX_ATTENTION_TOKENS = 96  # beyond this an attention heatmap is unreadable and slow to draw


def decode_upload(data: bytes, name: str = "the file") -> str:
    """An uploaded file's text; a ValueError that says what to do if it is not UTF-8 text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{name} is not UTF-8 text (byte {err.start} is {data[err.start]:#04x}); "
                         "save it as UTF-8 and upload it again") from None


@torch.no_grad()
def attention_weights(served: ServedModel, prompt: str, layer: int) -> tuple[list[str], torch.Tensor]:
    """(token labels, weights (H, T, T)) of `layer`, recomputed with the eager backend.

    The model runs as it always does up to the chosen layer; only that layer's attention is
    recomputed explicitly, so a model served by SDPA or xformers is shown without changing it.
    """
    loaded = served.loaded
    model, tokenizer = loaded.model, loaded.tokenizer
    if not prompt.strip():
        raise ValueError("type a prompt to see its attention")
    ids = tokenizer.encode(prompt, bos=loaded.add_bos)
    if len(ids) > MAX_ATTENTION_TOKENS:
        raise ValueError(f"the prompt is {len(ids)} tokens; attention maps are drawn for at most "
                         f"{MAX_ATTENTION_TOKENS}. Shorten it.")
    if not 0 <= layer < model.config.n_layers:
        raise ValueError(f"layer must be within 0..{model.config.n_layers - 1}")
    with served.lock:
        weights = model_attention_weights(model, torch.tensor([ids]), layer)  # (1, H, T, T)
    labels = [f"{i}:{tokenizer.piece(t)}" for i, t in enumerate(ids)]
    return labels, weights[0].float().cpu()
