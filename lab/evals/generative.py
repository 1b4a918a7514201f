"""Evaluate a model on the generation benchmarks: prompts continued in left-padded batches until a stop
string, then the text scored by the task's metric.

- exact_match (closed-book QA): the first line of the answer against every gold alias, normalised;
- maj@k (GSM8K, MATH): the final answer extracted from each sample's chain of thought, the most
  common one voted (k = 1: the greedy answer), compared with the gold answer;
- pass@k (HumanEval, MBPP): each sample's program run with the problem's tests in the sandbox
  (lab.evals.sandbox), pass@k estimated from n samples without bias (Chen et al., 2021).

A prompt that leaves no room for the answer is cut from the left (counted as `truncated`). Rows are
sorted by prompt length so that a batch holds prompts of similar length; each batch's sampling seed
is fixed, so a sampled evaluation is repeatable.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

from lab.evals import answers
from lab.evals.problems import Problem, load_problems
from lab.evals.prompts import check_shots, resolve_split
from lab.evals.registry import Task
from lab.evals.sandbox import require_sandbox, run_programs
from llama_core.generate import Sampling, generate_texts
from llama_core.model import Transformer
from llama_core.tokenizer import Tokenizer

Progress = Callable[[str, int, int], None]  # (task name, generations done, generations in the task)
MAX_BATCH = 16
MAJ_TEMPERATURE = 0.6  # Lewkowycz et al. (Minerva) sample at 0.6 for majority voting


def mean_stderr(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean of per-problem scores and its standard error (sample variance; for 0/1 scores the same as
    a proportion's)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def encode_prompts(tokenizer: Tokenizer, problems: Sequence[Problem], add_bos: bool, room: int
                   ) -> tuple[list[list[int]], int]:
    """Token prompts, each cut from the left to at most `room` tokens; also how many were cut."""
    prompts, cut = [], 0
    for p in problems:
        ids = tokenizer.encode(p.prompt, bos=add_bos)
        if len(ids) > room:
            ids, cut = ids[len(ids) - room:], cut + 1
        prompts.append(ids)
    return prompts, cut


def generate_all(model: Transformer, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]], sampling: Sampling,
                 stop: Sequence[str], *, token_budget: int = 32768, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> list[str]:
    """The continuation of every prompt, generated in batches of similar length (returned in order)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    done, start = 0, 0
    while start < len(order):
        longest = len(prompts[order[start]]) + sampling.max_new_tokens
        size = max(1, min(MAX_BATCH, token_budget // longest, len(order) - start))
        rows = order[start:start + size]
        batch_sampling = sampling if sampling.temperature == 0 else dataclasses.replace(sampling, seed=seed + start)
        for i, text in zip(rows, generate_texts(model, tokenizer, [prompts[i] for i in rows], batch_sampling, stop)):
            texts[i] = text
        start += size
        done += size
        if progress is not None:
            progress(done, len(order))
    return texts


def evaluate_generation(model: Transformer, tokenizer: Tokenizer, task: Task, add_bos: bool = True, *,
                        split: str | None = None, limit: int | None = None, shots: int | None = None,
                        samples: int | None = None, temperature: float | None = None,
                        allow_unsafe_code: bool = False, progress: Progress | None = None,
                        problems: Sequence[Problem] | None = None, seed: int = 0) -> dict:
    """Generate for the first `limit` documents of `task` and score them; one result record, with
    `predictions` (per problem: the extracted answer, or the number of passing samples) that
    callers drop before storing it."""
    start = time.perf_counter()
    shots = check_shots(task, shots)
    split = resolve_split(task, split)
    samples = task.samples if samples is None else samples
    if temperature is None:  # k greedy samples would be one sample k times: maj@k samples at Minerva's 0.6
        temperature = MAJ_TEMPERATURE if samples > 1 and task.temperature == 0 else task.temperature
    if samples < 1 or temperature < 0:
        raise ValueError(f"--samples must be >= 1 and --temperature >= 0, got {samples} and {temperature}")
    isolation = require_sandbox(allow_unsafe_code) if task.metric == "pass@k" else None
    if problems is None:
        problems = load_problems(task, split, limit, shots)
    max_new = min(task.max_new_tokens, model.config.max_seq_len // 2)
    prompts, truncated = encode_prompts(tokenizer, problems, add_bos, model.config.max_seq_len - max_new)
    eos = () if tokenizer.eos_id is None else (tokenizer.eos_id,)
    sampling = Sampling(max_new_tokens=max_new, temperature=temperature, stop_tokens=eos)
    rows = [p for p in prompts for _ in range(samples)]
    report = None if progress is None else (lambda d, n: progress(task.name, d, n))
    texts = generate_all(model, tokenizer, rows, sampling, task.stop, seed=seed, progress=report)
    per_problem = [texts[i * samples:(i + 1) * samples] for i in range(len(problems))]
    scored = _score(task, problems, per_problem, isolation)
    mean, stderr = mean_stderr(scored["scores"])
    label = {"exact_match": "exact_match", "maj@k": f"maj@{samples}", "pass@k": "pass@1"}[task.metric]
    result = {"task": task.name, "title": task.title, "table": task.table, "split": split, "shots": shots,
              "metric": label, "n": len(problems), "accuracy": mean, "stderr": stderr, label: mean,
              "chance": None, "truncated": truncated, "unscorable": 0, "samples": samples,
              "temperature": temperature, "requests": len(rows), "elapsed_s": round(time.perf_counter() - start, 3),
              "examples": [{"prompt_end": p.prompt[-200:], "generated": g[0], "gold": list(p.golds[:3])}
                           for p, g in zip(problems[:3], per_problem)],
              "predictions": scored["predictions"], **scored.get("extra", {})}
    if task.prompt == "math":
        result["subjects"] = _by_group(problems, scored["scores"])
    return result


def _score(task: Task, problems: Sequence[Problem], generated: list[list[str]], isolation) -> dict:
    """Per problem: its score in [0, 1] and its prediction, by the task's metric."""
    if task.metric == "exact_match":
        preds = [answers.majority([answers.first_line(t) for t in texts]) or "" for texts in generated]
        return {"scores": [float(answers.exact_match(pred, p.golds)) for pred, p in zip(preds, problems)],
                "predictions": preds}
    if task.metric == "maj@k":
        if task.prompt == "gsm8k":
            preds = [answers.majority([answers.gsm8k_prediction(t) for t in texts]) for texts in generated]
            correct = [pred is not None and pred == answers.gsm8k_gold(p.golds[0]) for pred, p in zip(preds, problems)]
        else:
            preds = [answers.majority([_math_vote(answers.math_prediction(t)) for t in texts]) for texts in generated]
            correct = [answers.math_equal(pred, p.golds[0]) for pred, p in zip(preds, problems)]
        return {"scores": [float(c) for c in correct], "predictions": preds}
    programs = [p.program(t) for p, texts in zip(problems, generated) for t in texts]
    runs = run_programs(programs, isolation=isolation)
    n = len(generated[0]) if generated else 1
    passed = [sum(r.passed for r in runs[i * n:(i + 1) * n]) for i in range(len(problems))]
    ks = [k for k in (1, 10, 100) if k <= n]
    extra = {f"pass@{k}": mean_stderr([answers.pass_at_k(n, c, k) for c in passed])[0] for k in ks}
    extra["outcomes"] = {s: sum(r.status == s for r in runs) for s in dict.fromkeys(r.status for r in runs)}
    return {"scores": [answers.pass_at_k(n, c, 1) for c in passed], "predictions": passed, "extra": extra}


def _math_vote(answer: str | None) -> str | None:
    """A MATH answer in its normal form, so that equal answers spelt differently vote together."""
    return None if answer is None else answers.math_normalize(answer)


def _by_group(problems: Sequence[Problem], scores: Sequence[float]) -> dict[str, dict]:
    groups: dict[str, list[float]] = {}
    for p, s in zip(problems, scores):
        groups.setdefault(p.group, []).append(s)
    return {g: dict(zip(("accuracy", "stderr"), mean_stderr(v)), n=len(v)) for g, v in sorted(groups.items())}
