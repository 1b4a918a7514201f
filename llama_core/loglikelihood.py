"""Log-likelihoods of continuations after contexts, batched the way evaluation needs.

Every distinct context runs through the model once; its KV cache is then copied to one row per
continuation that follows it (the choices of a multiple-choice question), so a question's shared
prompt is never recomputed. Contexts are left-padded (RoPE sees only position differences, so a
padded row scores as it would alone), continuations right-padded (causal attention never looks
ahead), and requests are packed into batches by length under a token budget.

Works on token ids: tokenising the text, truncating what does not fit (`fit_context`) and turning
log-likelihoods into choices belong to the callers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from llama_core.generate import left_pad, prefill
from llama_core.model import Transformer

Request = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)


@dataclass(frozen=True)
class Fitted:
    """A context cut to fit beside its continuations, and which continuations can be scored at all."""

    context: tuple[int, ...]
    dropped: int  # context tokens cut from the left
    scorable: tuple[bool, ...]  # per continuation: False when it alone fills the model's context


def fit_context(context: Sequence[int], continuations: Sequence[Sequence[int]], max_seq_len: int) -> Fitted:
    """Cut `context` from the left so that it and its longest scorable continuation fit in `max_seq_len`.

    Scoring n continuation tokens reads the context and n - 1 continuation tokens, so a request fits
    when len(context) + n - 1 <= max_seq_len and at least one context token remains.
    """
    scorable = tuple(0 < len(c) <= max_seq_len for c in continuations)
    longest = max((len(c) for c, ok in zip(continuations, scorable) if ok), default=1)
    keep = max_seq_len + 1 - longest
    cut = max(0, len(context) - keep)
    return Fitted(tuple(context[cut:]), cut, scorable)


@dataclass
class _Group:
    context: tuple[int, ...]
    rows: list[int]  # indices into the unique requests
    width: int = 0  # the longest continuation in the group


CACHE_FACTOR = 4  # KV-cache cells (rows x positions) a batch may hold, in token budgets


def _batches(groups: list[_Group], conts: list[tuple[int, ...]], token_budget: int, max_seq_len: int):
    """Groups (longest contexts first) packed so that the tokens computed, each context once and each
    continuation per row (padded), stay within `token_budget`, and the cache copies, rows x (context +
    continuation), within CACHE_FACTOR budgets. A group is split only when its copies alone exceed that:
    splitting recomputes its context."""
    cache_cells = CACHE_FACTOR * token_budget
    batch: list[_Group] = []
    n_groups = ctx_len = cont_len = rows = 0
    for g in groups:
        chunk = max(1, cache_cells // (len(g.context) + g.width))
        for start in range(0, len(g.rows), chunk):
            part = _Group(g.context, g.rows[start:start + chunk])
            part.width = max(len(conts[r]) for r in part.rows)
            c, w = max(ctx_len, len(part.context)), max(cont_len, part.width)
            k, n = n_groups + 1, rows + len(part.rows)
            if batch and (k * c + n * w > token_budget or n * (c + w) > cache_cells or c + w - 1 > max_seq_len):
                yield batch
                batch, c, w, k, n = [], len(part.context), part.width, 1, len(part.rows)
            batch.append(part)
            n_groups, ctx_len, cont_len, rows = k, c, w, n
    if batch:
        yield batch


@torch.inference_mode()
def loglikelihoods(model: Transformer, requests: Sequence[Request], token_budget: int = 4096,
                   progress: Callable[[int, int], None] | None = None) -> list[float]:
    """log P(continuation | context) for every request, in the order given.

    Identical requests are scored once. Each request must fit the model's context (see
    `fit_context`); `progress(done, total)` is called after each batch with counts of requests.
    """
    limit = model.config.max_seq_len
    unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    index = []
    for ctx, cont in requests:
        key = (tuple(int(t) for t in ctx), tuple(int(t) for t in cont))
        if not key[0] or not key[1]:
            raise ValueError("every request needs at least one context token and one continuation token")
        if len(key[0]) + len(key[1]) - 1 > limit:
            raise ValueError(f"a request of {len(key[0])} context and {len(key[1])} continuation tokens does "
                             f"not fit the model's context of {limit}; cut it with fit_context first")
        index.append(unique.setdefault(key, len(unique)))
    keys = list(unique)
    conts = [k[1] for k in keys]
    by_context: dict[tuple[int, ...], _Group] = {}
    for i, (ctx, cont) in enumerate(keys):
        g = by_context.setdefault(ctx, _Group(ctx, []))
        g.rows.append(i)
        g.width = max(g.width, len(cont))
    groups = sorted(by_context.values(), key=lambda g: (-len(g.context), -g.width))
    scores = [0.0] * len(keys)
    done = 0
    try:
        for batch in _batches(groups, conts, token_budget, limit):
            for row, value in zip((r for g in batch for r in g.rows), _score_batch(model, batch, conts)):
                scores[row] = value
            done += sum(len(g.rows) for g in batch)
            if progress is not None:
                progress(min(done, len(keys)), len(keys))
    finally:
        model.clear_caches()
    return [scores[i] for i in index]


def _score_batch(model: Transformer, batch: list[_Group], conts: list[tuple[int, ...]]) -> list[float]:
    """Prefill the batch's contexts once, then score every continuation row over a copy of its cache."""
    device = model.tok_embeddings.weight.device
    ctx_tokens, ctx_mask = left_pad([g.context for g in batch])  # (G, Lc)
    ctx_tokens = ctx_tokens.to(device)
    G, Lc = ctx_tokens.shape
    rows = [r for g in batch for r in g.rows]
    owner = torch.tensor([gi for gi, g in enumerate(batch) for _ in g.rows], device=device)  # row -> group
    width = max(len(conts[r]) for r in rows)
    model.setup_caches(G, Lc + width - 1)
    if ctx_mask is not None:
        ctx_mask = ctx_mask.to(device)
    first = prefill(model, ctx_tokens, ctx_mask).float().log_softmax(-1)[owner]  # (R, V): the first token
    targets = torch.tensor([list(conts[r]) + [0] * (width - len(conts[r])) for r in rows], device=device)  # (R, W)
    total = first.gather(1, targets[:, :1]).squeeze(1)  # (R,)
    if width > 1:
        for layer in model.layers:  # every continuation row reads its own copy of its context's cache
            cache = layer.attention.cache
            cache.k, cache.v = cache.k[owner], cache.v[owner]
        mask = None
        if ctx_mask is not None:
            mask = torch.cat([ctx_mask[owner], torch.ones(len(rows), width - 1, dtype=torch.bool, device=device)], 1)
        logits, _ = model(targets[:, :-1], start_pos=Lc, key_mask=mask)  # (R, W-1, V)
        logits = logits.float()
        # log_softmax at the targets only: no second (R, W-1, V) tensor
        logp = logits.gather(2, targets[:, 1:, None]).squeeze(2) - logits.logsumexp(-1)  # (R, W-1)
        lengths = torch.tensor([len(conts[r]) for r in rows], device=device)
        keep = torch.arange(1, width, device=device)[None, :] < lengths[:, None]  # right padding scores nothing
        total = total + (logp * keep).sum(1)
    model.clear_caches()
    return total.tolist()
