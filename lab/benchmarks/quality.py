"""`python -m lab bench quality --budget 300`: the demo's choice trained, scored on the held-out works.

Times each candidate shape here, lets the shipped Shakespeare law choose for the budget (as `lab
demo` does), trains that run into a fresh folder under --runs-dir, and prints one JSON line: the
choice, the predicted and measured held-out bits per byte (all held-out text), and wall times.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lab import demo_budget
from lab.cli.options import add_threads
from lab.experiment import run_training
from lab.laws import load_law


def add_arguments(parser) -> None:
    parser.add_argument("--budget", type=float, default=300.0, help="seconds of training (default 300)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench"),
                        help="where the trained run goes, as quality-TIMESTAMP (default runs/bench)")
    add_threads(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars or explanations")


def run(args) -> int:
    start = time.perf_counter()
    law = load_law("shakespeare")
    name = time.strftime("quality-%Y%m%d-%H%M%S")
    say = (lambda *a, **k: None) if args.quiet else print
    spec, record = demo_budget.budget_run(law, args.budget, name, progress=say)
    chosen_s = time.perf_counter() - start
    result = run_training(spec, args.runs_dir, progress=not args.quiet)
    if result.status != "finished":
        return 130
    demo_budget.write_choice(args.runs_dir / name, record)
    done = demo_budget.outcome(record, result.last["heldout_bpb"])
    line = {"bench": "quality", "budget_s": args.budget, "preset": record["preset"], "n_params": record["n_params"],
            "tokens": record["tokens"], **done, "interval": record["interval"],
            "train_s": result.last.get("elapsed_s"), "choose_s": chosen_s, "wall_s": time.perf_counter() - start,
            "threads": torch.get_num_threads(), "run": str(args.runs_dir / name)}
    print(json.dumps(line))
    return 0
