"""The paper's Figure 2 at lab scale: accuracy (and validation loss) against training tokens along one run,
from the run's kept checkpoints, each scored on the same documents."""

from __future__ import annotations

import os
from collections.abc import Sequence

from lab.evals.harness import evaluate_task
from lab.evals.registry import Task
from llama_core.formats.lab import load_lab
from llama_core.run_folder import RunFolder, read_state


def checkpoint_curve(run_dir: str | os.PathLike, tasks: Sequence[Task], limit: int | None = None,
                     device: str = "cpu") -> list[dict]:
    """A row per kept checkpoint, oldest first: step, tokens, validation loss (when logged at that
    step) and, per task, accuracy and its standard error on the first `limit` documents."""
    run = RunFolder(run_dir)
    val_loss = {m["step"]: m["val_loss"] for m in run.read_metrics() if "val_loss" in m}
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise FileNotFoundError(f"{run.path} has no checkpoints; train it with checkpoint_every below its steps "
                                "and keep_checkpoints high enough to keep several")
    rows = []
    for ckpt in checkpoints:
        state = read_state(ckpt)
        model, tokenizer = load_lab(run.path, device, step=state["step"])
        row = {"step": state["step"], "tokens": state["tokens"], "val_loss": val_loss.get(state["step"])}
        for task in tasks:
            result = evaluate_task(model, tokenizer, task, limit=limit)
            row[task.name], row[f"{task.name} stderr"] = result["accuracy"], result["stderr"]
        rows.append(row)
    return rows
