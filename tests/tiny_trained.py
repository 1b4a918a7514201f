"""A tiny model trained (in seconds) until it provably recites a short real text with multi-byte characters.

Shared by the generation and evaluation tests: what it prefers is known, because it memorised it.
Training stops on a criterion, not after a step count tuned on one CPU: every next token of the
text must be the model's choice with probability at least MIN_PROB (so greedy decoding from any
point of the text continues it, by a margin no rounding can flip), and greedy decoding from the
bos token must reproduce the text. A model that does not get there within MAX_STEPS is an error.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from llama_core.config import ModelConfig

MEMORISED = ("To be, or not to be: that is the question.\n"
             "Ça va? naïve café — 日本語の文 «Ünïcödé» ☃ ok\n"
             "Whether 'tis nobler in the mind to suffer\n")
# P(next token) >= 0.8 means a logit margin of at least ln 4 = 1.4 over every other token: no
# float rounding of any CPU, and no difference between cached and uncached decoding, comes near it
MIN_PROB = 0.8
MAX_STEPS = 1500
CHECK_EVERY = 10


@lru_cache(maxsize=1)
def trained_model(tokenizer):
    """(model, final training loss): a 2-layer model fitted to MEMORISED until it recites it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains no faster on two threads of a shared CPU
    try:
        return _train(tokenizer)
    finally:
        torch.set_num_threads(threads)


def _train(tokenizer):
    from llama_core.generate import Sampling, generate
    from llama_core.model import Transformer

    torch.manual_seed(0)
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=tokenizer.vocab_size, multiple_of=32,
                      max_seq_len=128)
    model = Transformer(cfg)
    text = tokenizer.encode(MEMORISED, bos=True)
    ids = torch.tensor(tokenizer.encode(MEMORISED * 3, bos=True))  # the checked span: ids[:max_seq_len]
    seq = min(96, len(ids) - 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for step in range(1, MAX_STEPS + 1):
        starts = torch.randint(0, len(ids) - seq, (8,), generator=gen)
        x = torch.stack([ids[s:s + seq] for s in starts])
        y = torch.stack([ids[s + 1:s + seq + 1] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

        if step % CHECK_EVERY == 0 and _min_next_token_prob(model, ids[:cfg.max_seq_len]) >= MIN_PROB:
            model.eval()
            if generate(model, text[:1], Sampling(max_new_tokens=len(text) - 1, temperature=0.0)) == text[1:]:
                return model, loss.item()
            model.train()
    raise RuntimeError(f"the tiny model did not memorise its text within {MAX_STEPS} steps (every next "
                       f"token at probability >= {MIN_PROB} and a greedy recitation); raise MAX_STEPS or "
                       "the learning rate in tests/tiny_trained.py")


@torch.no_grad()
def _min_next_token_prob(model, ids: torch.Tensor) -> float:
    """The smallest probability the model gives the true next token anywhere in `ids` (teacher forcing)."""
    logits, _ = model(ids[None, :-1])
    probs = logits[0].float().softmax(-1).gather(1, ids[1:, None])
    return probs.min().item()


def memorised_prompt(tokenizer, upto: str) -> list[int]:
    """The memorised token ids (bos first) up to the one that completes `upto`: a prompt the trained
    model provably continues with the rest of the text (its tokens are the ones the criterion checked)."""
    ids = tokenizer.encode(MEMORISED * 3, bos=True)
    for k in range(1, len(ids) + 1):
        if upto in tokenizer.decode(ids[:k]):
            return ids[:k]
    raise ValueError(f"{upto!r} is not in the memorised text")
