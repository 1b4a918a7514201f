"""The shipped law is the fit of its own runs; a demo with a tiny budget measures, chooses, trains, compares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab.demo_budget import CHOICE_FILE, candidates, choice_record, outcome
from lab.laws import load_law
from lab.scaling import fit_law
from lab.sweep import resolve_preset

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_law_is_the_fit_of_its_runs():
    law = load_law("shakespeare")
    assert law.commands and all("lab sweep" in c or "lab.laws" in c for c in law.commands)
    assert len(law.runs) >= 5 and all(r["heldout_bpb"] > 0 for r in law.runs)
    refit = fit_law(*law.arrays())
    predicted = [float(refit.coef.E + refit.coef.A / n**refit.coef.alpha + refit.coef.B / d**refit.coef.beta)
                 for n, d, _ in zip(*law.arrays())]
    shipped = [float(law.coef.E + law.coef.A / n**law.coef.alpha + law.coef.B / d**law.coef.beta)
               for n, d, _ in zip(*law.arrays())]
    np.testing.assert_allclose(shipped, predicted, rtol=1e-3)  # same curve through the runs
    for preset in candidates(law):
        resolve_preset(preset)  # every candidate is a shape the lab can build


def test_choice_record_and_outcome():
    law = load_law("shakespeare")
    record = choice_record(law, None, candidates(law)[0], 500_000)
    low, high = record["interval"]
    assert low <= record["predicted_bpb"] <= high and record["chosen_by"] == "override"
    done = outcome(record, record["predicted_bpb"] * 1.1)
    assert done["relative_error"] == pytest.approx(1 / 1.1 - 1)
    with pytest.raises(ValueError, match="unknown preset"):
        choice_record(law, None, "no-such-shape", 1000)


def test_demo_with_a_tiny_budget_runs_end_to_end(tmp_path):
    env = dict(os.environ, LLAMA_LAB_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "lab", "demo", "--budget", "1", "--runs-dir",
                           str(tmp_path / "runs")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Chosen:" in done.stdout and "measured" in done.stdout
    run_dir = tmp_path / "runs" / "demo-shakespeare"
    record = json.loads((run_dir / CHOICE_FILE).read_text())
    assert record["chosen_by"] == "budget" and record["budget_s"] == 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["tokens"] == record["tokens"]
    assert record["outcome"]["heldout_bpb"] == config["heldout"]["heldout_bpb"]
    assert config["data"]["table"][0]["split"]["rule"] == "documents"
