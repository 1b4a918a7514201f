"""Documents into questions: each choice a (context, continuation) pair to score, and the gold index.

Common-sense documents hold a `query` and `choices`: the context is the query and each choice,
after a space, is a continuation (the request files' own 0-shot prompts, rebuilt so that test
documents, which the package ships only inside 5-shot requests, get them too). WinoGrande is
scored by partial scoring (Trinh & Le, 2018): the sentence up to the blank, filled with each
option, is the context, and the rest of the sentence the shared continuation.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.evals import mmlu
from lab.evals.registry import Task
from lab.evals.sources import data_path, read_arrow, read_docs, subfolders
from llama_core.evaluate import load_task


@dataclass(frozen=True)
class Question:
    """The requests of one document: a (context, continuation) pair per choice."""

    pairs: tuple[tuple[str, str], ...]
    gold: int
    normalization: str = "chars"
    group: str = ""  # the MMLU subject

    @property
    def continuations(self) -> tuple[str, ...]:
        return tuple(c for _, c in self.pairs)


def query_choices(doc: dict, normalization: str) -> Question:
    return Question(tuple((doc["query"], " " + c) for c in doc["choices"]), int(doc["gold"]), normalization)


def winogrande_partial(doc: dict, normalization: str) -> Question:
    sentence = doc["sentence"]
    blank = sentence.index("_")
    rest = " " + sentence[blank + 1:].strip()
    options = (doc["option1"], doc["option2"])
    return Question(tuple((sentence[:blank] + o, rest) for o in options), int(doc["answer"]) - 1, normalization)


BUILDERS = {"query_choices": query_choices, "winogrande_partial": winogrande_partial}


def resolve_split(task: Task, split: str | None) -> str:
    """The task's split: its default, or `split` where the task has it (else its default)."""
    return split if split in task.files else task.default_split


def check_shots(task: Task, shots: int | None) -> int:
    shots = task.shots if shots is None else shots
    if not 0 <= shots <= task.max_shots:
        raise ValueError(f"--shots {shots} for {task.name}: the package holds {task.max_shots} examples to draw "
                         f"shots from; choose 0..{task.max_shots}")
    return shots


def load_questions(task: Task, split: str | None = None, limit: int | None = None,
                   shots: int | None = None) -> list[Question]:
    """The first `limit` documents of the task's split (per subject for MMLU), as questions."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be a positive number of documents, got {limit}")
    shots = check_shots(task, shots)
    split = resolve_split(task, split)
    if task.prompt == "items":
        return [Question(tuple((it.context, c) for c in it.choices), it.gold, it.normalization)
                for it in load_task(task.files["file"])[:limit]]
    if task.prompt == "mmlu":
        return _mmlu_questions(task, split, limit, shots)
    path = data_path(task.files[split])
    build = BUILDERS[task.prompt]
    questions = []
    for n, doc in enumerate(read_docs(path, limit), start=1):
        try:
            questions.append(build(doc, task.normalization))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}, document {n}: cannot build a {task.prompt} prompt ({err!r})") from None
    return questions


def _mmlu_questions(task: Task, split: str, limit: int | None, shots: int) -> list[Question]:
    questions = []
    for subject in subfolders(task.files[split].split("/{subject}")[0]):
        if subject not in mmlu.SUBJECT_CATEGORY:
            raise ValueError(f"MMLU subject {subject!r} has no category in lab/evals/mmlu.py")
        dev = read_arrow(data_path(task.shots_from.format(subject=subject)))
        if shots > len(dev):
            raise ValueError(f"--shots {shots}: {subject} has only {len(dev)} dev examples")
        where = data_path(task.files[split].format(subject=subject))
        for row in dev[:shots]:
            mmlu.check_row(row, f"{subject} dev")
        for row in read_arrow(where)[:limit]:
            mmlu.check_row(row, str(where))
            context = mmlu.prompt(subject, dev[:shots], row)
            questions.append(Question(tuple((context, " " + L) for L in mmlu.LETTERS), int(row["answer"]),
                                      "chars", subject))
    return questions
