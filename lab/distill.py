"""Distillation in the Alpaca manner (Taori et al., 2023): instructions answered by a teacher chat model,
written as chat-format JSONL that `lab finetune` trains a student on.

The teacher is any checkpoint `load_model` reads with a chat template (by default the bundled
SmolLM2-135M-Instruct). Its replies are generated in batches with its own template and stop
markers (greedy by default, so a set is repeatable). The instructions come from a file (a line of
text each, or JSONL with `instruction`/`input` or a `prompt`), or, offline, from the Shakespeare
corpus itself (`shakespeare_prompts`): explain a line, summarise a speech, write verse on a theme.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from lab.instructions import HELD_OUT_WORKS, MAX_CHARS, MIN_CHARS, speeches
from llama_core.atomic import atomic_write_text
from llama_core.chat import Message, get_template
from llama_core.data import shakespeare_files
from llama_core.formats import LoadedModel
from llama_core.generate import Sampling, generate_texts
from llama_core.sft_data import to_jsonl

SHAKESPEARE = "shakespeare"
THEMES = ("the sea", "a winter night", "ambition", "an old friend", "the moon", "a broken promise", "spring",
          "a king's crown", "jealousy", "the morning lark", "exile", "a storm at sea", "music", "time")


def shakespeare_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` instructions about the training works (held-out works never appear), in a fixed order."""
    rng = random.Random(seed)
    pool = [s for path in shakespeare_files() if path.name.removesuffix("_gut.txt") not in HELD_OUT_WORKS
            for s in speeches(path)]
    prompts: list[str] = []
    while len(prompts) < n:
        speech = rng.choice(pool)
        line = next((x for x in speech.lines if MIN_CHARS <= len(x) <= MAX_CHARS), None)
        kind = len(prompts) % 3
        if kind == 0 and line:
            prompts.append(f'Explain in plain modern English what this line from {speech.play} means: "{line}"')
        elif kind == 1 and 2 <= len(speech.lines) <= 8:
            text = "\n".join(speech.lines)
            prompts.append(f"Summarise in one sentence what {speech.speaker.title()} says in this speech from "
                           f"{speech.play}:\n{text}")
        elif kind == 2:
            prompts.append(f"Write two lines of verse in the style of Shakespeare about {rng.choice(THEMES)}.")
    return prompts


def read_prompts(path: str | Path) -> list[str]:
    """Instructions from a text file (a line each) or JSONL (`instruction` [+ `input`], or `prompt`)."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return [line.strip() for line in lines]
    prompts = []
    for n, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
            text = obj["prompt"] if "prompt" in obj else obj["instruction"] + (
                f"\n\n{obj['input']}" if obj.get("input") else "")
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}, line {n}: expected {{\"instruction\": ...}} or {{\"prompt\": ...}} "
                             f"({err!r})") from None
        prompts.append(text)
    return prompts


def distill(teacher: LoadedModel, prompts: Sequence[str], sampling: Sampling, batch_size: int = 8,
            progress: Callable[[int, int], None] | None = None) -> list[list[Message]]:
    """A (user, assistant) conversation per instruction, the assistant's turn written by `teacher`.

    Replies cut short by `max_new_tokens` are kept (a student learns the same cut); empty replies are
    left out.
    """
    if teacher.chat_template in ("plain", "base"):
        raise ValueError(f"{teacher.source} has no chat template to answer instructions with; "
                         "choose an instruction-tuned teacher (the default, smollm2)")
    template = get_template(teacher.chat_template)
    tok = teacher.tokenizer
    room = teacher.model.config.max_seq_len - sampling.max_new_tokens
    stops = tuple(sorted(set(sampling.stop_tokens) | set(template.stop_tokens(tok))))
    sampling = dataclasses.replace(sampling, stop_tokens=stops)
    out: list[list[Message]] = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start:start + batch_size])
        ids = [template.render([Message("user", p)], tok, teacher.add_bos)[-room:] for p in batch]
        for prompt, reply in zip(batch, generate_texts(teacher.model, tok, ids, sampling, template.stop_strings)):
            if reply.strip():
                out.append([Message("user", prompt), Message("assistant", reply.strip())])
        if progress is not None:
            progress(min(start + batch_size, len(prompts)), len(prompts))
    return out


def write(conversations: list[list[Message]], path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, to_jsonl(conversations))
    return path
