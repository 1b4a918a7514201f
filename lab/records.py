"""Run records under runs/NAME/: config.json (atomic) and metrics.jsonl (a line per logged step).

Notebooks and the app read these files, never logs. A run killed mid-write leaves at most one
partial last line in metrics.jsonl, which readers skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from llama_core.atomic import atomic_write_json, atomic_write_text

DEFAULT_RUNS_DIR = Path("runs")


class RunRecord:
    """Appends metrics of one run; also its config."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.run_dir / "config.json", config)

    def append(self, metrics: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step` (they belong to a future the resume will redo)."""
        kept = [m for m in read_metrics(self.run_dir) if m["step"] <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(m, sort_keys=True) + "\n" for m in kept))


def read_metrics(run_dir: Path) -> list[dict]:
    """Every complete metrics line of a run ([] when there are none yet)."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON line of a file ([] if it does not exist); a line cut by a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
    return rows


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a lab run")
    return json.loads(path.read_text())


def list_runs(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[Path]:
    """Run folders (those with a config.json), oldest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted((p for p in runs_dir.iterdir() if (p / "config.json").is_file()),
                  key=lambda p: (p / "config.json").stat().st_mtime)


def summarize(run_dir: Path) -> dict:
    """One row for a runs table: preset, parameters, tokens, final losses, tokens/s."""
    config = read_config(run_dir)
    metrics = [m for m in read_metrics(run_dir) if m.get("train_loss") is not None]
    last = metrics[-1] if metrics else {}
    evals = [m for m in metrics if "val_loss" in m]
    speeds = [m["tokens_per_s"] for m in metrics if "tokens_per_s" in m]
    return {
        "run": Path(run_dir).name, "preset": config.get("preset", "?"), "params": config.get("params"),
        "data": config.get("data", {}).get("mixture"), "steps": last.get("step", 0),
        "tokens": last.get("tokens", 0), "train_loss": last.get("train_loss"),
        "val_loss": evals[-1]["val_loss"] if evals else None,
        "val_bpb": evals[-1]["val_bpb"] if evals else None,
        "tokens_per_s": sum(speeds) / len(speeds) if speeds else None,
        "elapsed_s": last.get("elapsed_s"), "status": config.get("status", "?"),
    }
