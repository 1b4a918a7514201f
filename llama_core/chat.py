"""Chat templates (Llama-2 `[INST]`, ChatML, plain completion, the lab's `turns`) and a conversation that keeps its
history within the model's context window: the oldest turns go first, the system prompt stays.

Templates render messages straight to token ids, because some markers are tokens, not text
(Llama-2 opens every exchange with bos and closes it with eos).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from llama_core.generate import Sampling, TextStream, stream, text_pieces
from llama_core.model import Transformer
from llama_core.tokenizer import Tokenizer


@dataclass(frozen=True)
class Message:
    role: str  # system, user or assistant
    content: str


class ChatTemplate:
    """How a list of messages becomes a prompt, and what ends the assistant's reply."""

    name = "base"
    stop_strings: tuple[str, ...] = ()

    def render(self, messages: Sequence[Message], tokenizer: Tokenizer, add_bos: bool = True) -> list[int]:
        """Token ids of the whole conversation, ending where the assistant's next reply begins."""
        raise NotImplementedError

    def stop_tokens(self, tokenizer: Tokenizer) -> tuple[int, ...]:
        """Ids that end a reply: the tokenizer's eos, and the stop strings that are single tokens."""
        ids = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
        for s in self.stop_strings:
            token = tokenizer.encode(s)
            if len(token) == 1:
                ids.add(token[0])
        return tuple(sorted(ids))


class ChatML(ChatTemplate):
    """<|im_start|>role\\ncontent<|im_end|>\\n ... <|im_start|>assistant\\n (SmolLM2, Qwen, ...)."""

    name = "chatml"
    stop_strings = ("<|im_end|>",)

    def render(self, messages, tokenizer, add_bos=True):
        text = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
        return tokenizer.encode(text + "<|im_start|>assistant\n", bos=add_bos)


class Llama2(ChatTemplate):
    """<s>[INST] <<SYS>>\\nsystem\\n<</SYS>>\\n\\nuser [/INST] answer </s><s>[INST] ... [/INST]."""

    name = "llama2"
    stop_strings = ("[INST]",)

    def render(self, messages, tokenizer, add_bos=True):
        system = [m.content for m in messages if m.role == "system"]
        turns = [m for m in messages if m.role != "system"]
        ids: list[int] = []
        for i in range(0, len(turns), 2):
            user = turns[i].content
            if i == 0 and system:
                user = f"<<SYS>>\n{system[0]}\n<</SYS>>\n\n{user}"
            if i + 1 < len(turns):  # a finished exchange: bos ... eos
                ids += tokenizer.encode(f"[INST] {user} [/INST] {turns[i + 1].content} ", bos=True, eos=True)
            else:
                ids += tokenizer.encode(f"[INST] {user} [/INST]", bos=True)
        return ids


class Plain(ChatTemplate):
    """Plain completion for base models: the texts one after the other, the model continues."""

    name = "plain"

    def render(self, messages, tokenizer, add_bos=True):
        return tokenizer.encode("".join(m.content for m in messages), bos=add_bos)


class Turns(ChatTemplate):
    """<|system|>\n...<|end|>\n<|user|>\n...<|end|>\n<|assistant|>\n: the lab's own template, for runs
    finetuned by `lab finetune` (a lab tokenizer has no special tokens, so the markers are text no
    Shakespeare line contains). Each piece is encoded on its own, so training (llama_core.sft) and
    chat see the same token ids at every turn boundary."""

    name = "turns"
    end = "<|end|>"
    stop_strings = (end,)
    # the same rendering as a Hugging Face chat template, written into exported folders so that
    # the template travels with the weights (and `template_name` recognises it on the way back)
    jinja = ("{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
             "<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

    def header(self, role: str) -> str:
        return f"<|{role}|>\n"

    def render(self, messages, tokenizer, add_bos=True):
        ids = [tokenizer.bos_id] if add_bos and tokenizer.bos_id is not None else []
        for m in messages:
            for piece in (self.header(m.role), m.content, self.end + "\n"):
                ids += tokenizer.encode(piece)
        return ids + tokenizer.encode(self.header("assistant"))


TEMPLATES: dict[str, ChatTemplate] = {t.name: t for t in (ChatML(), Llama2(), Plain(), Turns())}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}; choose one of {', '.join(TEMPLATES)}") from None


def template_name(template_text: str | None) -> str:
    """The named template a checkpoint's Jinja chat template corresponds to (plain when none)."""
    if not template_text:
        return "plain"
    if "<|im_start|>" in template_text:
        return "chatml"
    if "[INST]" in template_text:
        return "llama2"
    if "<|end|>" in template_text and "<|assistant|>" in template_text:
        return "turns"
    return "plain"


@dataclass
class Conversation:
    """Messages so far; `prompt` renders the newest ones that fit in the context window."""

    template: ChatTemplate
    tokenizer: Tokenizer
    max_context: int
    system: str | None = None
    add_bos: bool = True
    messages: list[Message] = field(default_factory=list)
    last_reply_tokens: int = 0

    def add(self, role: str, content: str) -> None:
        self.messages.append(Message(role, content))

    def prompt(self, reserve: int = 0) -> list[int]:
        """Token ids of the conversation, leaving `reserve` positions free for the reply.

        Whole exchanges are left out from the oldest on (the history itself is unchanged: see
        `trim`); the system prompt is always kept. A single message that does not fit is a ValueError.
        """
        return self._fit(reserve)[0]

    def trim(self, reserve: int = 0) -> None:
        """Forget the oldest exchanges that `prompt(reserve)` leaves out."""
        self.messages = self._fit(reserve)[1]

    def _fit(self, reserve: int) -> tuple[list[int], list[Message]]:
        head = [Message("system", self.system)] if self.system else []
        turns = list(self.messages)
        budget = self.max_context - reserve
        while True:
            ids = self.template.render(head + turns, self.tokenizer, self.add_bos)
            if len(ids) <= budget:
                return ids, turns
            if len(turns) <= 1:
                raise ValueError(f"the prompt needs {len(ids)} tokens but the context holds {self.max_context} "
                                 f"with {reserve} kept for the reply: shorten the message or the system prompt")
            turns = turns[2:] if turns[0].role == "user" and len(turns) > 2 else turns[1:]

    def respond(self, model: Transformer, sampling: Sampling) -> Iterator[str]:
        """Stream the assistant's reply to the last message, then record it in the history (exchanges
        that no longer fit beside the reply are forgotten first).

        `last_reply_tokens` counts the tokens the reply took (its stop token included).
        """
        ids, self.messages = self._fit(reserve=min(sampling.max_new_tokens, self.max_context // 2))
        stops = tuple(sorted(set(sampling.stop_tokens) | set(self.template.stop_tokens(self.tokenizer))))
        text = TextStream(self.tokenizer, self.template.stop_strings, skip_ids=stops)
        self.last_reply_tokens = 0

        def counted():
            for token in stream(model, ids, replace(sampling, stop_tokens=stops)):
                self.last_reply_tokens += 1
                yield token

        yield from text_pieces(counted(), text)
        self.add("assistant", text.emitted)
