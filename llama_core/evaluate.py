"""Evaluation the paper's way: perplexity and bits per byte on a text, and zero-shot multiple choice.

Multiple choice (Touvron et al., 2023, section 3): each completion is scored by its log-likelihood
given the context, normalised by its number of characters; tasks marked `"normalization":
"answer"` (the paper's OpenBookQA and BoolQ) score log P(completion | context) minus
log P(completion | "Answer:") instead. The highest score is the model's choice.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llama_core.flops import bits_per_byte
from llama_core.model import Transformer
from llama_core.tokenizer import Tokenizer

NORMALIZATIONS = ("chars", "answer")
ANSWER_CONTEXT = "Answer:"


# -------------------------------------------------------------------------------------- perplexity

@torch.inference_mode()
def perplexity(model: Transformer, tokenizer: Tokenizer, text: str, window: int | None = None,
               add_bos: bool = True) -> dict:
    """Per-token perplexity and bits per UTF-8 byte of `text`, over consecutive windows of the context.

    Each window of at most `window` (default max_seq_len) tokens starts afresh, so the first tokens
    of a window see less context than a sliding evaluation would give them.
    """
    ids = tokenizer.encode(text, bos=add_bos)
    if len(ids) < 2:
        raise ValueError("the text is too short to evaluate: it needs at least two tokens")
    window = min(window or model.config.max_seq_len, model.config.max_seq_len)
    device = model.tok_embeddings.weight.device
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = torch.tensor(ids[start:start + window + 1], device=device)
        logits, _ = model(chunk[None, :-1])
        nll += F.cross_entropy(logits[0].float(), chunk[1:], reduction="sum").item()
        count += len(chunk) - 1
    n_bytes = len(text.encode("utf-8"))
    return {"tokens": count, "bytes": n_bytes, "nll_per_token": nll / count,
            "perplexity": math.exp(nll / count), "bits_per_byte": bits_per_byte(nll / count, n_bytes / count)}


# --------------------------------------------------------------------------------- multiple choice

@dataclass(frozen=True)
class Item:
    """One question: a context, candidate completions, the index of the right one."""

    context: str
    choices: tuple[str, ...]
    gold: int
    normalization: str = "chars"


def load_task(path: str | os.PathLike) -> list[Item]:
    """Items from a JSONL file, one {context, choices, gold, (normalization)} object per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = Item(str(row["context"]), tuple(str(c) for c in row["choices"]), int(row["gold"]),
                        row.get("normalization", "chars"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}, line {n}: expected a JSON object with context, choices and gold "
                             f"({err})") from None
        if not 0 <= item.gold < len(item.choices) or len(item.choices) < 2:
            raise ValueError(f"{path}, line {n}: gold={item.gold} must index one of {len(item.choices)} "
                             "choices (at least two)")
        if item.normalization not in NORMALIZATIONS:
            raise ValueError(f"{path}, line {n}: normalization must be one of {NORMALIZATIONS}")
        items.append(item)
    if not items:
        raise ValueError(f"task file {path} holds no items")
    return items


def save_task(items: Sequence[Item], path: str | os.PathLike) -> None:
    lines = []
    for it in items:
        row = {"context": it.context, "choices": list(it.choices), "gold": it.gold}
        if it.normalization != "chars":
            row["normalization"] = it.normalization
        lines.append(json.dumps(row, ensure_ascii=False))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def split_tokens(tokenizer: Tokenizer, context: str, completion: str, add_bos: bool) -> tuple[list[int], list[int]]:
    """(context ids, completion ids): the completion's tokens are those of context+completion past the
    context's, so a word split across the boundary is tokenised as it would be in running text."""
    ctx = tokenizer.encode(context, bos=add_bos)
    whole = tokenizer.encode(context + completion, bos=add_bos)
    if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tokenizer.encode(completion)


@torch.inference_mode()
def completion_logprobs(model: Transformer, tokenizer: Tokenizer, context: str, completions: Sequence[str],
                        add_bos: bool = True) -> list[float]:
    """log P(completion | context) for each completion, in one right-padded batch."""
    device = model.tok_embeddings.weight.device
    limit = model.config.max_seq_len
    rows, spans = [], []
    for completion in completions:
        ctx, comp = split_tokens(tokenizer, context, completion, add_bos)
        if not comp:
            raise ValueError(f"completion {completion!r} encodes to no tokens")
        seq = (ctx + comp)[-(limit + 1):]  # keep the end: the completion and the nearest context
        rows.append(seq)
        spans.append(len(comp))
    width = max(len(r) for r in rows)
    # right padding never changes earlier logits under causal attention
    batch = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)
    logits, _ = model(batch[:, :-1])
    logp = logits.float().log_softmax(-1)  # (B, T, V)
    scores = []
    for i, (seq, n) in enumerate(zip(rows, spans)):
        targets = torch.tensor(seq[-n:], device=device)
        positions = torch.arange(len(seq) - 1 - n, len(seq) - 1, device=device)
        scores.append(logp[i, positions, targets].sum().item())
    return scores


def score_item(model: Transformer, tokenizer: Tokenizer, item: Item, add_bos: bool = True) -> list[float]:
    """The paper's score of every choice (higher is better)."""
    logp = completion_logprobs(model, tokenizer, item.context, item.choices, add_bos)
    base = None
    if item.normalization == "answer":
        base = completion_logprobs(model, tokenizer, ANSWER_CONTEXT, item.choices, add_bos)
    return normalized_scores(logp, item.choices, item.normalization, base)


def normalized_scores(logprobs: Sequence[float], choices: Sequence[str], normalization: str,
                      unconditional: Sequence[float] | None = None) -> list[float]:
    """The paper's score of each choice from log P(choice | context) (higher is better).

    "chars" divides by the choice's length in characters; "answer" subtracts `unconditional`,
    log P(choice | "Answer:").
    """
    if normalization == "chars":
        return [lp / max(1, len(c)) for lp, c in zip(logprobs, choices)]
    if normalization == "answer":
        if unconditional is None:
            raise ValueError('the "answer" normalisation needs log P(choice | "Answer:") for every choice')
        return [a - b for a, b in zip(logprobs, unconditional)]
    raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")


def evaluate_task(model: Transformer, tokenizer: Tokenizer, items: Sequence[Item], add_bos: bool = True,
                  progress=None) -> dict:
    """Accuracy over `items` and each item's choice; `progress(i, n)` is called after each item."""
    predictions = []
    for i, item in enumerate(items):
        scores = score_item(model, tokenizer, item, add_bos)
        predictions.append(max(range(len(scores)), key=scores.__getitem__))
        if progress is not None:
            progress(i + 1, len(items))
    correct = sum(p == it.gold for p, it in zip(predictions, items))
    chance = sum(1 / len(it.choices) for it in items) / len(items)
    return {"accuracy": correct / len(items), "correct": correct, "n": len(items), "chance": chance,
            "predictions": predictions}
