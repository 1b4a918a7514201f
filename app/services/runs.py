"""Run records as the pages show them: a row per run with its energy, loss and speed curves, benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

from lab.footprint import run_energy
from lab.records import list_runs, read_jsonl, read_metrics, summarize
from llama_core.carbon import PAPER_PUE, US_AVERAGE_KG_PER_KWH
from llama_core.run_folder import bench_path


def runs_dir() -> Path:
    return Path(os.environ.get("LLAMA_LAB_RUNS_DIR", "runs"))


def run_table(pue: float = PAPER_PUE, kg_per_kwh: float = US_AVERAGE_KG_PER_KWH) -> list[dict]:
    """A row per run: its summary, and its energy and CO2eq by the paper's formula (`lab.footprint`)."""
    rows = []
    for run_dir in list_runs(runs_dir()):
        try:
            summary = summarize(run_dir)
            energy = run_energy(run_dir, pue, kg_per_kwh)
        except (ValueError, OSError) as err:  # a damaged record must not take the page down
            rows.append({"run": run_dir.name, "status": f"unreadable: {err}"})
            continue
        row = {"run": summary["run"], "preset": summary["preset"], "params": summary["params"],
               "steps": summary["steps"], "tokens": summary["tokens"], "train loss": summary["train_loss"],
               "val loss": summary["val_loss"], "val bits/byte": summary["val_bpb"],
               "tokens/s": summary["tokens_per_s"], "elapsed (s)": summary["elapsed_s"], "status": summary["status"]}
        if energy is not None:
            fp = energy.footprint
            row.update({"power (W)": fp.power_watts, "power source": energy.power_source,
                        "energy (Wh)": fp.kwh * 1000, "CO2eq (g)": fp.kg_co2eq * 1000})
        rows.append(row)
    return rows


def run_metrics(name: str) -> list[dict]:
    """A run's logged training steps (those with a training loss)."""
    return [m for m in read_metrics(runs_dir() / name) if m.get("train_loss") is not None]


def speed_curves() -> list[dict]:
    """A point per logged step of every run: training tokens against tokens/s."""
    return [{"run": run_dir.name, "tokens": m["tokens"], "tokens/s": m["tokens_per_s"]}
            for run_dir in list_runs(runs_dir()) for m in read_metrics(run_dir) if "tokens_per_s" in m]


def bench_records(*kinds: str) -> list[dict]:
    """Lines of runs/bench/KIND.jsonl written by `python -m lab bench KIND`, hardware details left out."""
    return [{k: v for k, v in row.items() if k != "hardware"}
            for kind in kinds for row in read_jsonl(bench_path(runs_dir(), kind))]
