"""Run records as the pages show them: a row per run with its energy, loss and speed curves, the suites
evaluated during training and afterwards, benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

from lab.evals import records
from lab.evals.during_training import recorded_curve
from lab.evals.registry import tasks_of
from lab.footprint import run_energy
from lab.records import list_runs, read_jsonl, read_metrics, summarize
from llama_core.carbon import PAPER_PUE, US_AVERAGE_KG_PER_KWH
from llama_core.run_folder import RunFolder, bench_path

TITLES = {t.name: t.title for t in tasks_of("paper")}  # the paper's column headers


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
               "val loss": summary["loss"], "val bits/byte": summary["bpb"], "val measured on": summary["validated_on"],
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


def eval_curves(names: list[str]) -> list[dict]:
    """Accuracy recorded during training (`lab train --eval-suite`): a row per run, step and task, with
    the tokens seen, the accuracy in % and the validation loss of the same step (the paper's Figure 2)."""
    rows = []
    for name in names:
        for point in recorded_curve(read_metrics(runs_dir() / name)):
            at = {"run": name, "step": point.pop("step"), "tokens": point.pop("tokens"),
                  "val loss": point.pop("val_loss")}
            rows += [{**at, "task": TITLES.get(task, task), "accuracy %": None if acc is None else 100 * acc}
                     for task, acc in point.items()]
    return rows


def run_evaluations(names: list[str]) -> list[dict]:
    """The runs' stored suite evaluations (`lab eval --suite`, the Evaluation page), newest first: a row
    each with its time, suite, document limit and every task's score as "TITLE %"."""
    own = {RunFolder(runs_dir() / name).evals_path: name for name in names}
    return [{"run": own[Path(r["file"])], "time": r["time"], "suite": r["suite"], "limit": r.get("limit"),
             **{f"{res.get('title', task)} %": None if res.get("accuracy") is None else 100 * res["accuracy"]
                for task, res in r["results"].items()}}
            for r in reversed(records.stored(runs_dir())) if Path(r["file"]) in own]


def speed_curves() -> list[dict]:
    """A point per logged step of every run: training tokens against tokens/s."""
    return [{"run": run_dir.name, "tokens": m["tokens"], "tokens/s": m["tokens_per_s"]}
            for run_dir in list_runs(runs_dir()) for m in read_metrics(run_dir) if "tokens_per_s" in m]


def bench_records(*kinds: str) -> list[dict]:
    """Lines of runs/bench/KIND.jsonl written by `python -m lab bench KIND`, hardware details left out."""
    return [{k: v for k, v in row.items() if k != "hardware"}
            for kind in kinds for row in read_jsonl(bench_path(runs_dir(), kind))]
