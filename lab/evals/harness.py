"""Evaluate a model on the registry's tasks: questions into token requests, batched scoring, the paper's
normalisation, and a result per task with n, accuracy and its standard error.

A context longer than the model's window is cut from the left (counted as `truncated`); a question
with a continuation that alone does not fit is left out of the accuracy (counted as `unscorable`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from lab.evals import mmlu
from lab.evals.generative import evaluate_generation
from lab.evals.prompts import Question, check_shots, load_questions, resolve_split
from lab.evals.registry import Task, suites_of, tasks_of
from llama_core.evaluate import ANSWER_CONTEXT, normalized_scores, split_tokens
from llama_core.loglikelihood import fit_context, loglikelihoods
from llama_core.model import Transformer
from llama_core.tokenizer import Tokenizer

Progress = Callable[[str, int, int], None]  # (task name, requests done, requests in the task)
# (token requests, progress(done, total) or None) -> log P(continuation | context) per request
Scorer = Callable[[list[tuple[tuple[int, ...], tuple[int, ...]]], Callable[[int, int], None] | None], list[float]]


def proportion(correct: int, n: int) -> dict:
    """n, accuracy and the standard error of the mean of n 0/1 outcomes (sample variance, as lm-eval)."""
    if n == 0:
        return {"n": 0, "accuracy": None, "stderr": None}
    p = correct / n
    return {"n": n, "accuracy": p, "stderr": math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else None}


class _Requests:
    """Token requests of a task, each distinct (context, continuation) pair once."""

    def __init__(self, tokenizer: Tokenizer, add_bos: bool, max_seq_len: int):
        self.tokenizer, self.add_bos, self.max_seq_len = tokenizer, add_bos, max_seq_len
        self.pairs: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        self.truncated = 0

    def add(self, pairs: Sequence[tuple[str, str]]) -> list[int] | None:
        """Request indices for a question's pairs, or None when one of them cannot be scored."""
        encoded = [split_tokens(self.tokenizer, ctx, cont, self.add_bos) for ctx, cont in pairs]
        by_context: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(encoded):
            by_context.setdefault(tuple(ctx), []).append(i)
        out: list[int] = [0] * len(pairs)
        cut = False
        for ctx, members in by_context.items():
            if not ctx:  # an empty context with no bos token: score after the bos/eos token if there is one
                fallback = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id
                ctx = (fallback,) if fallback is not None else ()
            fitted = fit_context(ctx, [encoded[i][1] for i in members], self.max_seq_len)
            if not fitted.context or not all(fitted.scorable):
                return None
            cut = cut or fitted.dropped > 0
            for i in members:
                out[i] = len(self.pairs)
                self.pairs.append((fitted.context, tuple(encoded[i][1])))
        self.truncated += cut
        return out


def evaluate_task(model: Transformer, tokenizer: Tokenizer, task: Task, add_bos: bool = True, *,
                  split: str | None = None, limit: int | None = None, shots: int | None = None,
                  token_budget: int = 4096, progress: Progress | None = None,
                  questions: Sequence[Question] | None = None, scorer: Scorer | None = None) -> dict:
    """Score the first `limit` documents of `task` (per subject for MMLU); one result record.

    The record holds `predictions` (the chosen index per question, -1 when unscorable), which
    callers drop before storing it. `scorer` replaces the lab's batched scorer (a reference
    implementation scoring the very same token requests).
    """
    if task.generative:
        raise ValueError(f"{task.name} is scored by generating text: use evaluate_suite or "
                         "lab.evals.generative.evaluate_generation")
    start = time.perf_counter()
    shots = check_shots(task, shots)
    split = resolve_split(task, split)
    if questions is None:
        questions = load_questions(task, split, limit, shots)
    reqs = _Requests(tokenizer, add_bos, model.config.max_seq_len)
    plan = []  # per question: (indices of its pairs, indices of its "Answer:" pairs) or None
    for q in questions:
        own = reqs.add(q.pairs)
        base = reqs.add([(ANSWER_CONTEXT, c) for c in q.continuations]) if q.normalization == "answer" else []
        plan.append(None if own is None or base is None else (own, base))
    report = None if progress is None else (lambda d, n: progress(task.name, d, n))
    if scorer is None:
        logp = loglikelihoods(model, reqs.pairs, token_budget, report)
    else:
        logp = scorer(reqs.pairs, report)
    predictions = []
    for q, p in zip(questions, plan):
        if p is None:
            predictions.append(-1)
            continue
        scores = normalized_scores([logp[i] for i in p[0]], q.continuations, q.normalization,
                                   [logp[i] for i in p[1]] if p[1] else None)
        predictions.append(max(range(len(scores)), key=scores.__getitem__))
    scored = [(q, pred) for q, pred in zip(questions, predictions) if pred >= 0]
    result = {"task": task.name, "title": task.title, "table": task.table, "split": split, "shots": shots,
              "metric": task.metric, "normalization": task.normalization,
              **proportion(sum(pred == q.gold for q, pred in scored), len(scored)),
              "chance": sum(1 / len(q.pairs) for q, _ in scored) / len(scored) if scored else None,
              "truncated": reqs.truncated, "unscorable": len(questions) - len(scored),
              "requests": len(set(reqs.pairs)), "elapsed_s": round(time.perf_counter() - start, 3),
              "predictions": predictions}
    if task.prompt == "mmlu":
        result.update(_mmlu_breakdown(scored))
    return result


def _mmlu_breakdown(scored: list[tuple[Question, int]]) -> dict:
    """Accuracy per subject and per category (over their questions)."""
    def tally(key) -> dict:
        counts: dict[str, list[int]] = {}
        for q, pred in scored:
            c = counts.setdefault(key(q), [0, 0])
            c[0] += pred == q.gold
            c[1] += 1
        return {name: proportion(*c) for name, c in sorted(counts.items())}

    return {"categories": tally(lambda q: mmlu.SUBJECT_CATEGORY[q.group]), "subjects": tally(lambda q: q.group)}


def evaluate_suite(model: Transformer, tokenizer: Tokenizer, suite: str, add_bos: bool = True, *,
                   split: str | None = None, limit: int | None = None, shots: int | None = None,
                   extra_tasks: Sequence[Task] = (), token_budget: int = 4096,
                   progress: Progress | None = None, samples: int | None = None,
                   temperature: float | None = None, allow_unsafe_code: bool = False,
                   only: Sequence[str] | None = None) -> dict[str, dict]:
    """Every task of a suite ("paper" for all), plus `extra_tasks`: task name -> result (no predictions).

    `shots` applies to the tasks that take shots (MMLU, QA, math, MBPP); zero-shot tasks stay
    zero-shot. `samples` and `temperature` override the generation tasks' own (maj@k, pass@k);
    `allow_unsafe_code` runs code benchmarks where no sandbox is available (lab.evals.sandbox).
    `only` keeps the suite's benchmarks of these names.
    """
    results = {}
    for task in [*select(suite, only), *extra_tasks]:
        task_shots = shots if (shots is not None and task.max_shots) else None
        if task.generative:
            result = evaluate_generation(model, tokenizer, task, add_bos, split=split, limit=limit, shots=task_shots,
                                         samples=samples, temperature=temperature,
                                         allow_unsafe_code=allow_unsafe_code, progress=progress)
        else:
            result = evaluate_task(model, tokenizer, task, add_bos, split=split, limit=limit, shots=task_shots,
                                   token_budget=token_budget, progress=progress)
        result.pop("predictions")
        results[task.name] = result
    return results


def select(suite: str, only: Sequence[str] | None = None) -> tuple[Task, ...]:
    """The suite's tasks, or those of them named in `only` (an unknown name is refused, with the list)."""
    tasks = tasks_of(suite)
    if not only:
        return tasks
    unknown = set(only) - {t.name for t in tasks}
    if unknown:
        raise ValueError(f"--only {', '.join(sorted(unknown))}: not in suite {suite} "
                         f"({', '.join(t.name for t in tasks)})")
    return tuple(t for t in tasks if t.name in only)


def paper_table(suite: str, results: dict[str, dict], label: str) -> list[dict]:
    """Rows for a side-by-side table, per suite: the paper's printed rows, then `label`'s, in percent."""
    rows = []
    for s in suites_of(suite):
        columns = [t.name for t in s.tasks] + (list(mmlu.CATEGORIES) if s.name == "mmlu" else [])
        shots = next((r.get("shots") for t, r in results.items() if t in columns), None)
        for model, scores in s.rows(shots).items():
            rows.append({"suite": s.name, "model": model, **{c: scores.get(c) for c in columns}})
        ours = {t: (r["accuracy"] * 100 if r.get("accuracy") is not None else None)
                for t, r in results.items() if t in columns}
        for cat, r in results.get("mmlu", {}).get("categories", {}).items():
            ours[cat] = r["accuracy"] * 100 if r["accuracy"] is not None else None
        rows.append({"suite": s.name, "model": label, **{c: ours.get(c) for c in columns}})
    return rows
