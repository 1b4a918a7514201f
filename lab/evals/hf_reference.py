"""An independent scorer for checking and timing the lab's: transformers' LlamaForCausalLM over the same
weights, one forward pass per request (context + continuation), as common harnesses do.

It receives the very token requests the lab scores (`harness.evaluate_task(scorer=...)`), so the two
differ only in the model code and the batching. transformers reads a GGUF file only with
`accelerate` installed (the dev extra has both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch


def load_hf_model(checkpoint: Path, fmt: str):
    """LlamaForCausalLM from a GGUF file or a Hugging Face folder, float32, in eval mode."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as err:
        raise FileNotFoundError("the reference scorer needs transformers: pip install -e '.[dev]'") from err
    import transformers

    checkpoint = Path(checkpoint)
    # transformers 5 renamed torch_dtype to dtype (and warns on the old name)
    dtype = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": torch.float32}
    if fmt == "gguf":
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint.parent), gguf_file=checkpoint.name, **dtype)
    elif fmt == "hf":
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint), **dtype)
    else:
        raise ValueError(f"the reference scorer reads GGUF files and Hugging Face folders, not {fmt!r} "
                         "checkpoints (export a lab run first: python -m lab export)")
    return model.eval()


def hf_scorer(model) -> Callable:
    """A `harness.Scorer`: log P(continuation | context) of each request, one unbatched forward each."""

    @torch.inference_mode()
    def score(requests: Sequence[tuple[Sequence[int], Sequence[int]]], progress=None) -> list[float]:
        out = []
        for i, (ctx, cont) in enumerate(requests, start=1):
            ids = torch.tensor([list(ctx) + list(cont)])
            logits = model(ids[:, :-1]).logits[0].float()  # (T-1, V)
            positions = torch.arange(len(ctx) - 1, ids.shape[1] - 1)
            out.append(logits[positions].log_softmax(-1).gather(1, ids[0, len(ctx):, None]).sum().item())
            if progress is not None:
                progress(i, len(requests))
        return out

    return score
