"""Evaluation records on disk: the one module that knows what a line holds and where they go.

    runs/NAME/evals.jsonl     evaluations of a lab run, a line each (RunFolder.evals_path names the file)
    runs/evals/MODEL.jsonl    evaluations of any other checkpoint (a GGUF, a Hugging Face folder, ...)

A line: when, which checkpoint, the suite and its settings (split, limit, shots), and the result of
every task (`n`, `accuracy` or the task's metric, `stderr`, ...). The app and notebook 05 read them.
"""

from __future__ import annotations

import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

from llama_core.run_folder import RunFolder, append_jsonl, read_jsonl

EVALS_DIR = "evals"  # runs/evals/: the evaluations of checkpoints that are not lab runs


def record_path(checkpoint: str | os.PathLike, fmt: str, runs_dir: str | os.PathLike = "runs") -> Path:
    """Where the evaluations of `checkpoint` (loaded in format `fmt`) are appended."""
    path = Path(checkpoint)
    if fmt == "lab" and RunFolder(path).is_run():
        return RunFolder(path).evals_path
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name.removesuffix(".gguf")).strip("._") or "model"
    return Path(runs_dir) / EVALS_DIR / f"{name}.jsonl"


def make_record(checkpoint: str, fmt: str, suite: str, settings: dict, results: dict[str, dict],
                elapsed_s: float) -> dict:
    return {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "checkpoint": str(checkpoint), "label": Path(checkpoint).name, "format": fmt, "suite": suite,
            **settings, "elapsed_s": round(elapsed_s, 1), "results": results}


def save(record: dict, runs_dir: str | os.PathLike = "runs") -> Path:
    """Append `record` to its checkpoint's evaluation file; returns the file."""
    path = record_path(record["checkpoint"], record["format"], runs_dir)
    append_jsonl(path, record)
    return path


def stored(runs_dir: str | os.PathLike = "runs") -> list[dict]:
    """Every stored evaluation under `runs_dir` (runs' own and runs/evals/), oldest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    own = [RunFolder(folder).evals_path for folder in runs_dir.iterdir()]
    files = [*(f for f in own if f.is_file()), *(runs_dir / EVALS_DIR).glob("*.jsonl")]
    rows = [dict(r, file=str(f)) for f in files for r in read_jsonl(f) if isinstance(r.get("results"), dict)]
    return sorted(rows, key=lambda r: r.get("time", ""))
