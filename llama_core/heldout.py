"""Bits per byte over the whole validation text: every held-out token scored once, at the end of a run.

Intermediate evaluations during training sample a few batches (`train.evaluate`); this is the
measurement a run reports as its held-out result. Windows do not overlap, so the first tokens of
each window see less context than a sliding evaluation would give them (the usual convention,
e.g. nanoGPT's and the lab's own `evaluate.perplexity`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llama_core.data import Mixture, TokenFile, windows

LOGIT_ELEMENTS = 2**25  # logits held at once (128 MB in float32): sets the batch


@torch.no_grad()
def token_file_nll(model: torch.nn.Module, token_file: TokenFile, seq_len: int, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> tuple[float, int]:
    """(summed cross-entropy in nats, tokens scored) over a token file's whole validation split."""
    from llama_core.train import autocast_context

    tokens = token_file.tokens("val")
    batch = max(1, LOGIT_ELEMENTS // (seq_len * model.config.vocab_size))
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    for x, y in windows(tokens, seq_len, batch):
        with autocast_context(device, dtype):
            logits, _ = model(x.to(device))  # no targets: plain logits, whatever loss head is installed
        nll += F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return nll, count


def heldout_metrics(model: torch.nn.Module, mixture: Mixture, seq_len: int, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> dict:
    """Loss per token and bits per byte on all validation text of every source, and their
    mixture-weighted means (`heldout_loss`, `heldout_bpb`; None where no source holds text out)."""
    per_source, scored = {}, []
    for f, w in zip(mixture.files, mixture.weights):
        if f.val_tokens < 2:
            per_source[f.source] = None  # a short single-document source may hold no chunk out
            continue
        nll, count = token_file_nll(model, f, seq_len, device, dtype)
        row = {"loss": nll / count, "bpb": nll / math.log(2) / f.val_bytes, "tokens": count,
               "bytes": f.val_bytes, "rule": f.split["rule"]}
        per_source[f.source] = row
        scored.append((w, row))
    total = sum(w for w, _ in scored)
    mean = (lambda key: sum(w * r[key] for w, r in scored) / total) if scored else (lambda key: None)
    return {"heldout_loss": mean("loss"), "heldout_bpb": mean("bpb"), "heldout_sources": per_source,
            "heldout_method": f"all validation tokens, non-overlapping windows of {seq_len}"}
