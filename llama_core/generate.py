"""Generation: prefill, then `decode_one_token` over the model's preallocated KV cache, then sample.

Both steps are the model's own forward pass, run with `start_pos` over its KV cache; nothing here
knows the architecture. For speed, give it a model packed for decoding (llama_core.packing).

Everything here works on token ids; text belongs to the tokenizer and the callers, except
`stream_text`, which turns a token stream into whole UTF-8 characters and honours stop strings.
Batches of prompts of different lengths are left-padded: a key mask hides the padding, and since
RoPE only sees position differences, a padded row decodes like the same prompt alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from llama_core.compiled import forward_step, is_compiled
from llama_core.model import Transformer
from llama_core.tokenizer import Tokenizer

REPLACEMENT_CHAR = "\ufffd"  # what a decoder prints for an incomplete UTF-8 sequence


@dataclass(frozen=True)
class Sampling:
    """How to pick each next token. temperature 0 means greedy (argmax), and is deterministic.

    `top_k` keeps the k most likely tokens, `top_p` the smallest set whose probability reaches p
    (nucleus sampling, Holtzman et al. 2019); `seed` makes sampled runs repeatable.
    """

    max_new_tokens: int = 256
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    stop_tokens: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        object.__setattr__(self, "stop_tokens", tuple(int(t) for t in self.stop_tokens))


GREEDY = Sampling(temperature=0.0)


# ---------------------------------------------------------------------------------------- sampling

def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """logits (B, V) with every token outside the top-k / top-p set set to -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens above it already reach p (so the top token always stays)
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from the last-position logits (B, V)."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / sampling.temperature, sampling.top_k, sampling.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


# ------------------------------------------------------------------------------ prefill and decode

def prefill(model: Transformer, tokens: torch.Tensor, key_mask: torch.Tensor | None = None, start_pos: int = 0,
            rope_offset: torch.Tensor | None = None) -> torch.Tensor:
    """Run the prompt (B, T) through the model from `start_pos`, filling the KV cache; next-token logits (B, V)."""
    mask = None if key_mask is None else key_mask[:, :start_pos + tokens.shape[1]]
    return model(tokens, start_pos=start_pos, key_mask=mask, last_only=True, rope_offset=rope_offset)[0][:, -1]


def decode_one_token(model: Transformer, token: torch.Tensor, pos: int,
                     key_mask: torch.Tensor | None = None, rope_offset: torch.Tensor | None = None) -> torch.Tensor:
    """One step: token (B, 1) at position `pos` attends to the cache; next-token logits (B, V).
    Compiled where `compile_decoding(model)` was called (llama_core.compiled)."""
    mask = None if key_mask is None else key_mask[:, :pos + 1]
    step = getattr(model, "compiled_step", None) or forward_step
    return step(model, token, pos, mask, rope_offset)


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every prompt shares, leaving each at least one token of its own."""
    if not prompts:
        return 0
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return max(n, 0)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prompts -> (tokens (B, T) padded on the left, key_mask (B, T) or None when none is padded)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (encode with bos=True for an empty text)")
    T = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.bool)
    for row, p in enumerate(prompts):
        tokens[row, T - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[row, T - len(p):] = True
    return tokens, (None if bool(mask.all()) else mask)


def _check_fits(model: Transformer, prompt_len: int) -> None:
    limit = model.config.max_seq_len
    if prompt_len > limit:
        raise ValueError(f"the prompt has {prompt_len} tokens but the model's context (max_seq_len) is "
                         f"{limit}: shorten the prompt (or drop old turns of the conversation)")


@torch.inference_mode()
def token_stream(model: Transformer, prompts: Sequence[Sequence[int]], sampling: Sampling = GREEDY,
                 shared_prefix: bool = False, finished: list[bool] | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token of every row (B,) per step, until `max_new_tokens`, every row has hit a
    stop token, or the context is full.

    Rows that have stopped are ignored by callers: what they yield is meaningless. Once a quarter of
    the rows still computed have stopped (at a stop token, or marked True in `finished` by the caller
    between steps), they leave the batch and their KV cache rows are dropped, so a long answer no
    longer makes every short one pay for its steps.
    With `shared_prefix`, the tokens every prompt begins with (few-shot exemplars, or one prompt
    sampled many times) are run once, as one row written into every row's cache; each row's own
    tokens follow, left-padded, at positions that skip the padding.
    """
    _check_fits(model, max((len(p) for p in prompts), default=0))
    device = model.tok_embeddings.weight.device
    P = common_prefix(prompts) if shared_prefix and len(prompts) > 1 else 0
    tokens, mask = left_pad([p[P:] for p in prompts])
    tokens = tokens.to(device)
    B, T = tokens.shape[0], P + tokens.shape[1]
    # the last new token is never fed back, so it may sit one past the context
    n_new = min(sampling.max_new_tokens, model.config.max_seq_len - T + 1)
    if n_new <= 0:
        return
    total = T + n_new - 1  # positions that pass through the model (and the cache)
    offset = None
    if mask is not None:  # the full-length key mask: prefix, padding, prompts, then every new token is real
        offset = (~mask).sum(1).to(device) if P else None
        mask = torch.cat([torch.ones(B, P, dtype=torch.bool), mask, torch.ones(B, total - T, dtype=torch.bool)],
                         dim=1).to(device)
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    stops = torch.tensor(sampling.stop_tokens or [-1], device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)  # the original rows still computed
    model.setup_caches(B, model.config.max_seq_len if is_compiled(model) else total)  # one size compiles once
    try:
        if P:  # one row, written into every row's cache
            prefill(model, torch.as_tensor([list(prompts[0][:P])], device=device))
        logits = prefill(model, tokens, mask, start_pos=P, rope_offset=offset)
        for i in range(n_new):
            nxt = sample(logits, sampling, generator)  # (rows,)
            yield nxt if len(rows) == B else torch.zeros(B, dtype=nxt.dtype, device=device).index_copy_(0, rows, nxt)
            if i == n_new - 1:
                return
            if not sampling.stop_tokens and finished is None:  # nothing can stop a row: no device sync per step
                logits = decode_one_token(model, nxt[:, None], T + i, mask, offset)
                continue
            if sampling.stop_tokens:
                done[rows] |= torch.isin(nxt, stops)
            if finished is not None:
                done |= torch.tensor(finished, dtype=torch.bool, device=device)
            if bool(done.all()):
                return
            stopped = done[rows]
            if 4 * int(stopped.sum()) >= len(rows):  # compact: the stopped rows leave the batch
                keep = (~stopped).nonzero().squeeze(1)
                model.keep_cache_rows(keep)
                rows, nxt = rows[keep], nxt[keep]
                mask = None if mask is None else mask[keep]
                offset = None if offset is None else offset[keep]
            logits = decode_one_token(model, nxt[:, None], T + i, mask, offset)
    finally:
        model.clear_caches()


def generate_batch(model: Transformer, prompts: Sequence[Sequence[int]], sampling: Sampling = GREEDY
                   ) -> list[list[int]]:
    """The new tokens of each prompt, each list ending at (and including) its first stop token."""
    out: list[list[int]] = [[] for _ in prompts]
    stopped = [False] * len(prompts)
    stop_set = set(sampling.stop_tokens)
    for step in token_stream(model, prompts, sampling):
        for row, t in enumerate(step.tolist()):
            if not stopped[row]:
                out[row].append(t)
                stopped[row] = t in stop_set
    return out


def generate_texts(model: Transformer, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]],
                   sampling: Sampling = GREEDY, stop_strings: Sequence[str] = (), shared_prefix: bool = True
                   ) -> list[str]:
    """The text each prompt continues with, cut before its first stop string (or stop token); the
    prefix all prompts share is run once (see `token_stream`).

    A row is done at a stop token or once a stop string appears in its last few tokens' text (a
    window as long as the longest stop string plus a margin, so each step costs the same); the batch
    ends when every row is done, and each row's whole text is decoded once at the end.
    """
    out: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    stop_set = set(sampling.stop_tokens)
    window = 4 * max((len(s) for s in stop_strings), default=0) + 8  # tokens: a character may take 4
    for step in token_stream(model, prompts, sampling, shared_prefix, finished=done):
        for row, t in enumerate(step.tolist()):
            if done[row]:
                continue
            if t in stop_set:
                done[row] = True
                continue
            out[row].append(t)
            if stop_strings and _first_stop(tokenizer.decode(out[row][-window:]), stop_strings) is not None:
                done[row] = True
        if all(done):
            break
    texts = []
    for ids in out:
        text = tokenizer.decode(ids)
        cut = _first_stop(text, stop_strings)
        texts.append(text if cut is None else text[:cut])
    return texts


def generate(model: Transformer, prompt: Sequence[int], sampling: Sampling = GREEDY) -> list[int]:
    """The new tokens after `prompt`, ending at (and including) the first stop token if one came."""
    return generate_batch(model, [prompt], sampling)[0]


def stream(model: Transformer, prompt: Sequence[int], sampling: Sampling = GREEDY) -> Iterator[int]:
    """`generate`, one token id at a time as each is decoded."""
    stop_set = set(sampling.stop_tokens)
    for step in token_stream(model, [prompt], sampling):
        t = int(step[0])
        yield t
        if t in stop_set:
            return


# ----------------------------------------------------------------------------------- text streaming

class TextStream:
    """Token ids in, one at a time; text out in whole characters, cut before the first stop string.

    Each `push` decodes all ids so far and returns the unseen suffix, unless that ends in an
    incomplete UTF-8 sequence (U+FFFD) or could be the start of a stop string: such text waits for
    the next token. Joined with `flush()`, the pieces equal `decode(ids)` cut at the stop string.
    """

    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str] = (), skip_ids: Sequence[int] = ()):
        self.tokenizer, self.stop_strings, self.skip_ids = tokenizer, tuple(stop_strings), set(skip_ids)
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False  # a stop string has appeared: ignore further tokens

    def push(self, token: int) -> str:
        if self.stopped:
            return ""
        if token not in self.skip_ids:
            self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        cut = _first_stop(text, self.stop_strings)
        if cut is not None:
            self.stopped = True
            return self._emit(text[:cut])
        if text.endswith(REPLACEMENT_CHAR):
            return ""
        return self._emit(text[:len(text) - _held_back(text, self.stop_strings)])

    def flush(self) -> str:
        """The rest of the text at the end of generation (an incomplete character included)."""
        return "" if self.stopped else self._emit(self.tokenizer.decode(self.ids))

    def _emit(self, ready: str) -> str:
        if len(ready) <= len(self.emitted) or not ready.startswith(self.emitted):
            return ""
        piece, self.emitted = ready[len(self.emitted):], ready
        return piece


def stream_text(model: Transformer, tokenizer: Tokenizer, prompt: Sequence[int], sampling: Sampling = GREEDY,
                stop_strings: Sequence[str] = (), skip_stop_tokens: bool = True) -> Iterator[str]:
    """Text as it is decoded, in whole characters; joined, it equals `decode(new tokens)` cut before
    the first stop string (and without the final stop token when `skip_stop_tokens`)."""
    text = TextStream(tokenizer, stop_strings, sampling.stop_tokens if skip_stop_tokens else ())
    yield from text_pieces(stream(model, prompt, sampling), text)


def text_pieces(tokens: Iterable[int], text: TextStream) -> Iterator[str]:
    """Feed `tokens` through `text`, yielding each non-empty piece until a stop string, then the rest."""
    for token in tokens:
        piece = text.push(token)
        if piece:
            yield piece
        if text.stopped:
            return
    tail = text.flush()
    if tail:
        yield tail


def _first_stop(text: str, stop_strings: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stop_strings if s) if i >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for s in stop_strings:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def generate_text(model: Transformer, tokenizer: Tokenizer, prompt: Sequence[int], sampling: Sampling = GREEDY,
                  stop_strings: Sequence[str] = ()) -> str:
    """The whole of `stream_text` at once."""
    return "".join(stream_text(model, tokenizer, prompt, sampling, stop_strings))
