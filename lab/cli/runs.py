"""`python -m lab runs`: a table of the runs under runs/."""

from __future__ import annotations

from pathlib import Path

from lab.records import HELDOUT, SAMPLED, list_runs, summarize
from llama_core.flops import format_count

# the `over` column: what a row's val loss and bits/byte were measured on
OVER = {HELDOUT: "held-out", SAMPLED: "sampled", None: "-"}


def add_arguments(parser) -> None:
    parser.add_argument("--runs-dir", default="runs")


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def run(args) -> int:
    runs = list_runs(Path(args.runs_dir))
    if not runs:
        print(f"no runs under {args.runs_dir}/ yet: python -m lab train --preset lab-4m --tokens 2M")
        return 0
    header = (f"{'run':<28} {'preset':<9} {'params':>7} {'tokens':>8} {'train':>6} {'val':>6} {'bpb':>6} "
              f"{'over':<8} {'tok/s':>7} {'status':<11}")
    print(header)
    print("-" * len(header))
    for run_dir in runs:
        s = summarize(run_dir)
        print(f"{s['run'][:28]:<28} {s['preset']:<9} {format_count(s['params'] or 0):>7} "
              f"{format_count(s['tokens']):>8} {_fmt(s['train_loss'], '.3f'):>6} {_fmt(s['loss'], '.3f'):>6} "
              f"{_fmt(s['bpb'], '.3f'):>6} {OVER[s['validated_on']]:<8} {_fmt(s['tokens_per_s'], ',.0f'):>7} "
              f"{s['status']:<11}")
    print(f"\nval, bpb: loss and bits/byte over all {HELDOUT} at the end of the run (over: held-out);\n"
          f"          a run without it (unfinished, or older) shows the last of its {SAMPLED} (over: sampled)")
    return 0
