"""The lab's view of its runs: which run folders exist under runs/, and one table row per run.

The files themselves (config.json, metrics.jsonl, checkpoints) belong to llama_core.run_folder;
notebooks and the app read them through it, never logs.
"""

from __future__ import annotations

from pathlib import Path

from llama_core.run_folder import RunFolder, read_jsonl

__all__ = ["DEFAULT_RUNS_DIR", "list_runs", "read_config", "read_jsonl", "read_metrics", "summarize"]

DEFAULT_RUNS_DIR = Path("runs")


def read_metrics(run_dir: Path) -> list[dict]:
    """Every complete metrics line of a run ([] when there are none yet)."""
    return RunFolder(run_dir).read_metrics()


def read_config(run_dir: Path) -> dict:
    return RunFolder(run_dir).read_config()


def list_runs(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[Path]:
    """Run folders (those with a config.json), oldest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    runs = [run for run in map(RunFolder, runs_dir.iterdir()) if run.is_run()]
    return [run.path for run in sorted(runs, key=lambda run: run.config_path.stat().st_mtime)]


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
