"""Benchmarks during training (`lab train --eval-suite commonsense --eval-limit N`): the paper's Figure 2
recorded as the run goes.

A metrics sink wraps the run's own: every line that carries a validation loss (each `eval_every`
steps, and the last) is first extended with `eval`, the suite's result on the same first N
documents each time ({task: {n, accuracy, stderr}}), so accuracy and loss share their steps and
tokens in metrics.jsonl. Single-process training only: a sharded model's forward is collective.
"""

from __future__ import annotations

from lab.evals.harness import evaluate_task
from lab.evals.prompts import load_questions
from lab.evals.registry import tasks_of
from llama_core.model import Transformer
from llama_core.tokenizer import Tokenizer
from llama_core.train import MetricsSink

EVAL_KEY = "eval"


class EvalSink:
    """`inner`, with the suite's accuracy added to every line that has a validation loss."""

    def __init__(self, inner: MetricsSink, model: Transformer, tokenizer: Tokenizer, suite: str, limit: int):
        if limit < 1:
            raise ValueError(f"--eval-limit must be a positive number of documents, got {limit}")
        self.inner, self.model, self.tokenizer = inner, model, tokenizer
        # the documents are read once and are the same at every step
        self.tasks = [(task, load_questions(task, limit=limit)) for task in likelihood_tasks(suite)]

    def append(self, metrics: dict) -> None:
        if "val_loss" in metrics:
            was_training = self.model.training
            self.model.eval()
            try:
                metrics = dict(metrics, **{EVAL_KEY: {
                    task.name: {k: r[k] for k in ("n", "accuracy", "stderr")}
                    for task, questions in self.tasks
                    for r in [evaluate_task(self.model, self.tokenizer, task, questions=questions)]}})
            finally:
                self.model.train(was_training)
        self.inner.append(metrics)


def likelihood_tasks(suite: str) -> list:
    """The suite's likelihood-scored tasks (generation tasks take minutes, not a checkpoint's moment)."""
    tasks = [t for t in tasks_of(suite) if not t.generative]
    if not tasks:
        raise ValueError(f"--eval-suite {suite} has only generation benchmarks; during training choose a "
                         "likelihood suite (commonsense, mmlu, paper), and run lab eval --suite on the checkpoints")
    return tasks


def suite_sink(suite: str, limit: int):
    """A `wrap_sink` for lab.experiment.run_training; refused under torchrun."""
    from llama_core import distributed

    if distributed.is_distributed():
        raise ValueError("--eval-suite runs in single-process training only (a sharded model's forward is "
                         "collective); evaluate the run's checkpoints afterwards with lab eval --suite")
    likelihood_tasks(suite)  # an unknown suite, or one only of generation tasks, fails before training starts
    return lambda sink, model, tokenizer: EvalSink(sink, model, tokenizer, suite, limit)


def recorded_curve(metrics: list[dict]) -> list[dict]:
    """Rows of (step, tokens, val_loss, accuracy per task) from metrics lines that carry an evaluation."""
    return [{"step": m["step"], "tokens": m["tokens"], "val_loss": m.get("val_loss"),
             **{task: r["accuracy"] for task, r in m[EVAL_KEY].items()}}
            for m in metrics if isinstance(m.get(EVAL_KEY), dict)]
