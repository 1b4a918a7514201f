"""Supervised finetuning data: conversations rendered with a chat template into token ids and a loss
mask that covers exactly the assistant's tokens (its reply and the marker that ends it), cut to the
context, and served as padded batches (x, y) with y = -100 wherever no loss is taken.

Padding, not packing: packed sequences would need attention that stops at example boundaries and
positions that restart per example, which the model's forward does not take. Right padding is
exact under causal attention: a real token never sees a pad.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llama_core.chat import ChatTemplate, Message, Turns
from llama_core.data import BatchSampler
from llama_core.loss import IGNORE_INDEX
from llama_core.tokenizer import Tokenizer

Segment = tuple[list[int], bool]  # token ids, whether they are assistant tokens (trained on)


@dataclass(frozen=True)
class Rendered:
    """A conversation's token ids and, per token, whether the loss is taken on it."""

    ids: tuple[int, ...]
    mask: tuple[bool, ...]

    @property
    def trained(self) -> int:
        return sum(self.mask)


def _ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text) if text else []


def segments(template: ChatTemplate, messages: Sequence[Message], tokenizer: Tokenizer,
             add_bos: bool = True) -> list[Segment]:
    """The conversation as the template lays it out, cut where the assistant's tokens begin and end."""
    bos = [tokenizer.bos_id] if add_bos and tokenizer.bos_id is not None else []
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    out: list[Segment] = [(bos, False)]
    if isinstance(template, Turns):
        for m in messages:
            mine = m.role == "assistant"
            out += [(_ids(tokenizer, template.header(m.role)), False), (_ids(tokenizer, m.content), mine),
                    (_ids(tokenizer, template.end + "\n"), mine)]
    elif template.name == "chatml":
        for m in messages:
            mine = m.role == "assistant"
            out += [(_ids(tokenizer, f"<|im_start|>{m.role}\n"), False), (_ids(tokenizer, m.content), mine),
                    (_ids(tokenizer, "<|im_end|>"), mine), (_ids(tokenizer, "\n"), False)]
    elif template.name == "llama2":
        system = [m.content for m in messages if m.role == "system"]
        turns = [m for m in messages if m.role != "system"]
        out = []
        for i in range(0, len(turns), 2):
            user = turns[i].content
            if i == 0 and system:
                user = f"<<SYS>>\n{system[0]}\n<</SYS>>\n\n{user}"
            out.append((bos + _ids(tokenizer, f"[INST] {user} [/INST]"), False))
            out.append((_ids(tokenizer, f" {turns[i + 1].content} ") + eos, True))
    elif template.name == "plain":  # no turn markers: chat joins the texts; the last reply ends with eos
        for i, m in enumerate(messages):
            mine = m.role == "assistant"
            out.append((_ids(tokenizer, m.content) + (eos if i == len(messages) - 1 else []), mine))
    else:
        raise ValueError(f"chat template {template.name!r} has no training layout; finetune with one of "
                         "turns, chatml, llama2, plain")
    return [(ids, mine) for ids, mine in out if ids]


def render(template: ChatTemplate, messages: Sequence[Message], tokenizer: Tokenizer,
           add_bos: bool = True) -> Rendered:
    ids, mask = [], []
    for seg, mine in segments(template, messages, tokenizer, add_bos):
        ids += seg
        mask += [mine] * len(seg)
    return Rendered(tuple(ids), tuple(mask))


@dataclass
class Fitted:
    """Rendered conversations that fit the context, and how many had to be cut or were dropped."""

    examples: list[Rendered]
    truncated: int = 0  # history cut from the left to fit
    dropped: int = 0  # no assistant token left within the context


def fit(template: ChatTemplate, conversations: Sequence[Sequence[Message]], tokenizer: Tokenizer,
        max_tokens: int, add_bos: bool = True) -> Fitted:
    """Render each conversation within `max_tokens` tokens: the oldest exchanges go first (a system
    message stays), then tokens from the left, so the last reply is always the one kept."""
    out = Fitted([])
    for messages in conversations:
        messages = list(messages)
        rendered = render(template, messages, tokenizer, add_bos)
        if len(rendered.ids) > max_tokens:
            out.truncated += 1
            head = messages[:1] if messages[0].role == "system" else []
            turns = messages[len(head):]
            while len(rendered.ids) > max_tokens and len(turns) > 2:
                turns = turns[2:]
                rendered = render(template, head + turns, tokenizer, add_bos)
            rendered = Rendered(rendered.ids[-max_tokens:], rendered.mask[-max_tokens:])
        # the first token is never a target: a conversation needs an assistant token after it
        if not any(rendered.mask[1:]):
            out.dropped += 1
            continue
        out.examples.append(rendered)
    return out


class SFTBatches(BatchSampler):
    """Padded batches of rendered examples; batch n depends only on (seed, n), and `position` (batches
    drawn so far) is all the state, as for the BatchSampler it stands in for.

    Each epoch visits every example once in an order drawn from (seed, epoch); `shuffle=False`
    keeps file order (validation).
    """

    def __init__(self, examples: Sequence[Rendered], batch_size: int, seed: int = 0, pad_id: int = 0,
                 shuffle: bool = True, position: int = 0):
        if not examples:
            raise ValueError("no examples to batch: the data is empty or nothing fits the context")
        self.examples, self.batch_size, self.seed = list(examples), batch_size, seed
        self.pad_id, self.shuffle, self.position, self.split = pad_id, shuffle, position, "sft"

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.examples) // self.batch_size)

    def _index(self, i: int) -> int:
        n = len(self.examples)
        epoch, within = divmod(i, n)
        if not self.shuffle:
            return within
        return int(np.random.default_rng([self.seed, epoch]).permutation(n)[within])

    def batch_at(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T) token ids and y (B, T) targets, -100 on non-assistant tokens and padding."""
        start = position * self.batch_size
        rows = [self.examples[self._index(i)] for i in range(start, start + self.batch_size)]
        width = max(len(r.ids) for r in rows) - 1
        x = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        y = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for b, r in enumerate(rows):
            ids = torch.tensor(r.ids, dtype=torch.long)
            keep = torch.tensor(r.mask[1:], dtype=torch.bool)
            x[b, :len(ids) - 1] = ids[:-1]
            y[b, :len(ids) - 1] = torch.where(keep, ids[1:], IGNORE_INDEX)
        return x, y
