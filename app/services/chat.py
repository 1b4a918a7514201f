"""Conversations for the Chat page: message checks, sampling settings, streamed replies with their speed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from app.services.checkpoints import ServedModel
from llama_core.chat import Conversation, get_template
from llama_core.generate import Sampling

MAX_PROMPT_CHARS = 8_000  # a chat message longer than this is refused with a message


def takes_system_prompt(served: ServedModel) -> bool:
    return served.loaded.chat_template in ("chatml", "llama2")


def new_conversation(served: ServedModel, system: str | None) -> Conversation:
    loaded = served.loaded
    return Conversation(get_template(loaded.chat_template), loaded.tokenizer, served.config.max_seq_len,
                        system=system or None, add_bos=loaded.add_bos)


def sampling(max_new_tokens: int, temperature: float, top_p: float, top_k: int, seed: int) -> Sampling:
    """Sampling settings from the sidebar (top_k 0 means off)."""
    return Sampling(max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p),
                    top_k=int(top_k) or None, seed=int(seed))


def check_message(text: str) -> str:
    """The message to send, or a ValueError that tells the user what is wrong."""
    if not text or not text.strip():
        raise ValueError("the message is empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the message has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}. "
                         "Shorten it.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate: no tokenizer can encode it
        raise ValueError(f"the message holds an invalid character at position {err.start} "
                         f"({text[err.start]!r}); retype or paste it again") from None
    return text


class TimedReply:
    """Streams a reply's text and afterwards knows its token count and tokens/s."""

    def __init__(self, served: ServedModel, conversation: Conversation, settings: Sampling):
        self.served, self.conversation, self.settings = served, conversation, settings
        self.text, self.tokens, self.seconds = "", 0, 0.0

    def __iter__(self) -> Iterator[str]:
        with self.served.lock, torch.inference_mode():
            start = time.perf_counter()
            for piece in self.conversation.respond(self.served.loaded.model, self.settings):
                self.text += piece
                yield piece
            self.seconds = time.perf_counter() - start
        self.tokens = self.conversation.last_reply_tokens  # decoded, not re-encoded from the text

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        """Tokens, tokens/s and the weights' quantization, e.g. "42 tokens · 31.0 tokens/s · int8"."""
        weights = "float weights" if self.served.quant == "none" else self.served.quant
        return f"{self.tokens:,} tokens · {self.tokens_per_s:,.1f} tokens/s · {weights}"
