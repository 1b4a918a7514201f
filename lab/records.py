"""The lab's view of its runs: which run folders exist under runs/, and one table row per run.

The files themselves (config.json, metrics.jsonl, checkpoints) belong to llama_core.run_folder;
notebooks and the app read them through it, never logs.
"""

from __future__ import annotations

from pathlib import Path

from llama_core.run_folder import RunFolder, read_jsonl

__all__ = ["DEFAULT_RUNS_DIR", "HELDOUT", "SAMPLED", "list_runs", "read_config", "read_jsonl", "read_metrics",
           "summarize"]

DEFAULT_RUNS_DIR = Path("runs")
# what a run's shown validation figures were measured on (`summarize`'s `validated_on`)
HELDOUT, SAMPLED = "held-out text", "sampled batches"


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
    """One row for a runs table: preset, parameters, tokens, final losses, tokens/s.

    `val_loss`/`val_bpb` are the last sampled evaluation in metrics.jsonl; `heldout_loss`/`heldout_bpb`
    the end-of-run figures over all held-out text (config.json, None before a run finishes). `loss` and
    `bpb` are the figures to show: the whole-text ones where the run has them, else the sampled ones,
    with `validated_on` saying which ("held-out text" or "sampled batches").
    """
    config = read_config(run_dir)
    metrics = [m for m in read_metrics(run_dir) if m.get("train_loss") is not None]
    last = metrics[-1] if metrics else {}
    evals = [m for m in metrics if "val_loss" in m]
    speeds = [m["tokens_per_s"] for m in metrics if "tokens_per_s" in m]
    sampled = {"val_loss": evals[-1]["val_loss"] if evals else None,
               "val_bpb": evals[-1].get("val_bpb") if evals else None}
    heldout = config.get("heldout") or {}
    heldout = {"heldout_loss": heldout.get("heldout_loss"), "heldout_bpb": heldout.get("heldout_bpb")}
    whole = heldout["heldout_bpb"] is not None
    return {
        "run": Path(run_dir).name, "preset": config.get("preset", "?"), "params": config.get("params"),
        "data": config.get("data", {}).get("mixture"), "steps": last.get("step", 0),
        "tokens": last.get("tokens", 0), "train_loss": last.get("train_loss"), **sampled, **heldout,
        "loss": heldout["heldout_loss"] if whole else sampled["val_loss"],
        "bpb": heldout["heldout_bpb"] if whole else sampled["val_bpb"],
        "validated_on": HELDOUT if whole else SAMPLED if evals else None,
        "tokens_per_s": sum(speeds) / len(speeds) if speeds else None,
        "elapsed_s": last.get("elapsed_s"), "status": config.get("status", "?"),
    }
