"""A tiny model trained (in a few seconds) to memorise a short real text with multi-byte characters.

Shared by the generation and evaluation tests: what it prefers is known, because it memorised it.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from llama_core.config import ModelConfig

MEMORISED = ("To be, or not to be: that is the question.\n"
             "Ça va? naïve café — 日本語の文 «Ünïcödé» ☃ ok\n"
             "Whether 'tis nobler in the mind to suffer\n")


@lru_cache(maxsize=1)
def trained_model(tokenizer):
    """(model, final training loss): a 2-layer model fitted to MEMORISED until it recites it."""
    from llama_core.model import Transformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains no faster on two threads of a shared CPU
    try:
        return _train(tokenizer, Transformer)
    finally:
        torch.set_num_threads(threads)


def _train(tokenizer, Transformer):
    torch.manual_seed(0)
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=tokenizer.vocab_size, multiple_of=32,
                      max_seq_len=128)
    model = Transformer(cfg)
    ids = torch.tensor(tokenizer.encode(MEMORISED * 3, bos=True))
    seq = min(96, len(ids) - 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(0, len(ids) - seq, (8,), generator=gen)
        x = torch.stack([ids[s:s + seq] for s in starts])
        y = torch.stack([ids[s + 1:s + seq + 1] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item()
