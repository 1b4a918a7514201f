"""Evaluations for the Evaluation page: a suite run in the background with its progress, the paper's rows
beside the result, and the stored results of earlier evaluations.

A job scores a private copy of the model in its own thread, so it never holds the shared model's
lock: other sessions keep chatting with the same checkpoint while it runs, and the page polls the
job's progress instead of waiting on it. The result is stored like `lab eval --suite` stores it.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

from app.services.checkpoints import serve
from app.services.runs import runs_dir
from lab.evals import records
from lab.evals.harness import evaluate_suite, paper_table
from lab.evals.prompts import check_shots
from lab.evals.registry import SUITES, suite_names, tasks_of
from lab.evals.sandbox import SandboxUnavailable, require_sandbox


def suites() -> dict[str, str]:
    """Suite name -> title, "paper" (every suite) last."""
    return {**{name: s.title for name, s in SUITES.items()}, "paper": "Every suite the lab has"}


@dataclass
class EvalJob:
    """One evaluation running in a background thread; the page reads its fields, never the thread."""

    spec: str
    suite: str
    limit: int | None
    split: str | None
    shots: int | None
    tasks: list[str] = field(default_factory=list)
    task: str = ""
    done: int = 0
    total: int = 0
    finished: list[str] = field(default_factory=list)
    record: dict | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def fraction(self) -> float:
        """Share of the suite done: finished tasks plus the running task's share of requests."""
        if not self.tasks:
            return 0.0
        current = self.done / self.total if self.total and self.task not in self.finished else 0.0
        return min(1.0, (len(self.finished) + current) / len(self.tasks))

    def _progress(self, task: str, done: int, total: int) -> None:
        if task != self.task and self.task and self.task not in self.finished:
            self.finished.append(self.task)
        self.task, self.done, self.total = task, done, total

    def _run(self) -> None:
        try:
            start = time.perf_counter()
            served = serve(self.spec)
            with served.lock:  # a moment: copy the weights, then score without the shared model
                model = copy.deepcopy(served.loaded.model)
            loaded = served.loaded
            results = evaluate_suite(model, loaded.tokenizer, self.suite, loaded.add_bos, split=self.split,
                                     limit=self.limit, shots=self.shots, progress=self._progress)
            self.finished = list(self.tasks)
            settings = {"split": self.split, "limit": self.limit, "shots": self.shots}
            record = records.make_record(str(loaded.source), loaded.format, self.suite, settings, results,
                                         time.perf_counter() - start)
            records.save(record, runs_dir())
            self.record = record
        except Exception as err:  # noqa: BLE001 (a background thread's failure must reach the page, not vanish)
            self.error = f"{type(err).__name__}: {err}"


def start(spec: str, suite: str, limit: int | None, split: str | None = None, shots: int | None = None) -> EvalJob:
    """Validate the settings and start the evaluation in a background thread."""
    if suite not in suite_names():
        raise ValueError(f"unknown suite {suite!r}")
    if limit is not None and limit < 1:
        raise ValueError("the number of documents must be at least 1")
    tasks = tasks_of(suite)
    for t in tasks:
        if shots is not None and t.max_shots:
            check_shots(t, shots)
        if t.metric == "pass@k":  # the app never runs generated code without the sandbox
            try:
                require_sandbox(allow_unsafe=False)
            except SandboxUnavailable as err:
                raise ValueError(str(err)) from None
    job = EvalJob(spec, suite, limit, split, shots, tasks=[t.name for t in tasks])
    job.thread = threading.Thread(target=job._run, name=f"eval-{suite}", daemon=True)
    job.thread.start()
    return job


def comparison(record: dict) -> list[dict]:
    """The record's result beside the paper's printed rows, a row per model (scores in %)."""
    return paper_table(record["suite"], record["results"], f"{record['label']} (n≤{record.get('limit') or 'all'})")


def result_rows(record: dict) -> list[dict]:
    """A row per task: n, its metric (accuracy, exact match, maj@k, pass@1) and standard error in %, what
    was cut or left out."""
    return [{"task": r.get("title", name), "split": r.get("split"), "shots": r.get("shots"), "n": r["n"],
             "metric": r.get("metric", "accuracy"),
             "score %": None if r["accuracy"] is None else 100 * r["accuracy"],
             "± stderr %": None if r.get("stderr") is None else 100 * r["stderr"],
             "chance %": None if r.get("chance") is None else 100 * r["chance"],
             "truncated": r.get("truncated", 0), "unscorable": r.get("unscorable", 0), "time (s)": r.get("elapsed_s")}
            for name, r in record["results"].items()]


def stored() -> list[dict]:
    """Earlier evaluations (runs' own and runs/evals/), newest first, as table rows with the record."""
    return [{"time": r["time"], "checkpoint": r["label"], "suite": r["suite"], "limit": r.get("limit"),
             **{name: None if res.get("accuracy") is None else 100 * res["accuracy"]
                for name, res in r["results"].items()}, "record": r}
            for r in reversed(records.stored(runs_dir()))]
