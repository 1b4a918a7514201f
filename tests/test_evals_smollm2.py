"""Every benchmark reads, scores and reports on a few real documents with the bundled SmolLM2, and the
lab's choices equal those of an independent transformers scorer over the same GGUF weights."""

import pytest

from lab.evals.harness import evaluate_task
from lab.evals.prompts import load_questions
from lab.evals.registry import MMLU, tasks_of
from lab.evals.sources import data_root
from llama_core.formats import load_model, smollm2_path
from llama_core.loglikelihood import loglikelihoods

try:
    data_root()
    smollm2_path()
except FileNotFoundError as err:
    pytest.skip(str(err), allow_module_level=True)

TASKS = {t.name: t for t in tasks_of("paper") if not t.generative}  # generation: test_generation_evals.py


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


def _questions(task, n):
    if task is MMLU:  # one subject's first question, 5-shot (about 600 tokens)
        return [q for q in load_questions(MMLU, limit=1) if q.group == "astronomy"]
    return load_questions(task, limit=n)


@pytest.mark.parametrize("name", list(TASKS))
def test_each_benchmark_scores_real_documents(smollm2, name):
    task = TASKS[name]
    questions = _questions(task, 2)
    seen = []
    result = evaluate_task(smollm2.model, smollm2.tokenizer, task, smollm2.add_bos, questions=questions,
                           progress=lambda t, d, n: seen.append((t, d, n)))
    assert result["n"] == len(questions) and result["unscorable"] == result["truncated"] == 0
    assert result["accuracy"] in (0.0, 0.5, 1.0) and (result["stderr"] is None) == (len(questions) == 1)
    assert all(0 <= p < len(q.pairs) for p, q in zip(result["predictions"], questions, strict=True))
    per_question = sum(len(q.pairs) for q in questions)
    if task.normalization == "answer":  # log P(choice | "Answer:") once for every distinct choice
        assert result["requests"] == per_question + len({c for q in questions for c in q.continuations})
    else:
        assert result["requests"] == per_question
    assert seen[-1][0] == name and seen[-1][1] == seen[-1][2] == result["requests"]
    if task is MMLU:
        assert result["subjects"]["astronomy"]["n"] == 1 and set(result["categories"]) == {"STEM"}


def _recording(scorer, logs: dict, key: str):
    """`scorer`, keeping what it returned in logs[key]."""
    def score(requests, progress=None):
        logs[key] = scorer(requests, progress)
        return logs[key]
    return score


@pytest.mark.slow
def test_choices_equal_an_independent_transformers_scorer(smollm2):
    """A fixed slice: the first 2 documents of five benchmarks and an MMLU question (11 documents)."""
    pytest.importorskip("accelerate", reason="transformers reads GGUF files only with accelerate")
    from lab.evals.hf_reference import hf_scorer, load_hf_model

    hf = hf_scorer(load_hf_model(smollm2.source, smollm2.format))
    same = total = 0
    for name in ("hellaswag", "arc_challenge", "boolq", "winogrande", "openbookqa", "mmlu"):
        task = TASKS[name]
        questions = _questions(task, 2)
        logs: dict[str, list[float]] = {}
        lab = lambda r, p: loglikelihoods(smollm2.model, r, progress=p)
        ours = evaluate_task(smollm2.model, smollm2.tokenizer, task, smollm2.add_bos, questions=questions,
                             scorer=_recording(lab, logs, "lab"))
        theirs = evaluate_task(smollm2.model, smollm2.tokenizer, task, smollm2.add_bos, questions=questions,
                               scorer=_recording(hf, logs, "hf"))
        same += sum(a == b for a, b in zip(ours["predictions"], theirs["predictions"], strict=True))
        total += len(questions)
        assert logs["lab"] == pytest.approx(logs["hf"], abs=2e-2), name  # nats, summed over a continuation
    assert same / total >= 0.99
