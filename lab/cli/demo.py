"""`make run`'s main job: the default corpus and tokenizer, the demo model trained, samples printed.

With a time budget (default five minutes of training) the demo times each candidate shape here and
lets the shipped scaling law (lab/laws/shakespeare.json) pick the model size and token count;
`--preset P --tokens N` trains a fixed choice instead. A finished demo is not retrained; an
interrupted one is resumed with its recorded choice.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lab import demo_budget
from lab.cli.options import add_threads
from lab.experiment import finished, parse_count, run_training, spec_from_record
from lab.laws import load_law
from lab.records import read_config
from lab.sampling import samples
from lab.tables import preset_table
from llama_core.run_folder import RunFolder

DEMO_NAME = "demo-shakespeare"
DEFAULT_BUDGET_S = 300.0
DEFAULT_PRESET = "sweep-d128"  # of an override that names only --tokens
DEFAULT_TOKENS = 1_000_000  # of an override that names only --preset
PROMPTS = ("ROMEO:", "First Citizen:\n", "To be, or not to be")


def add_arguments(parser) -> None:
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds of training on this machine; the shipped scaling law picks the model "
                             f"size and token count for it (default {DEFAULT_BUDGET_S:g})")
    parser.add_argument("--preset", default=None,
                        help=f"train this shape instead of the budget's choice (default {DEFAULT_PRESET} "
                             "when only --tokens is given); deterministic with --tokens")
    parser.add_argument("--tokens", type=parse_count, default=None,
                        help=f"training tokens instead of the budget's choice (default {DEFAULT_TOKENS:,} "
                             "when only --preset is given)")
    add_threads(parser)


def run(args) -> int:
    print(preset_table())
    law = load_law("shakespeare")
    run_dir = Path(args.runs_dir) / DEMO_NAME
    record = demo_budget.read_choice(run_dir)
    if finished(run_dir):
        print(f"\n{run_dir} is already trained (delete it to train again).")
        heldout = (read_config(run_dir).get("heldout") or {}).get("heldout_bpb")
    else:
        folder = RunFolder(run_dir)
        resume = folder.is_run() and folder.latest_valid_checkpoint() is not None
        if resume:
            spec = spec_from_record(run_dir)
            print(f"\nResuming the demo model: {spec.name}, {spec.train.tokens:,} tokens...")
        elif folder.is_run():  # stopped before its first checkpoint: nothing to resume, so start over
            spec = spec_from_record(run_dir)
            shutil.rmtree(run_dir)
            print(f"\n{run_dir} stopped before its first checkpoint; training it again from the start: "
                  f"{spec.name}, {spec.train.tokens:,} tokens...")
        elif args.preset or args.tokens:
            preset, tokens = args.preset or DEFAULT_PRESET, args.tokens or DEFAULT_TOKENS
            spec = demo_budget.demo_spec(law, preset, tokens, DEMO_NAME)
            record = demo_budget.choice_record(law, None, preset, tokens)
            print(f"\nTraining the demo model: {preset} on {tokens:,} tokens of {spec.data} "
                  f"(predicted held-out {record['predicted_bpb']:.3f} bits/byte)...")
        else:
            print()
            spec, record = demo_budget.budget_run(law, args.budget, DEMO_NAME)
            print(f"\nTraining the demo model for about {args.budget:g} s...")
        try:
            result = run_training(spec, Path(args.runs_dir), resume=resume)
        finally:
            if record is not None and not resume:
                demo_budget.write_choice(run_dir, record)
        if result.status != "finished":
            return 130
        heldout = result.last.get("heldout_bpb")
    if record is not None and heldout is not None:
        done = demo_budget.outcome(record, heldout)
        low, high = record["interval"]
        print(f"\nHeld-out works (never trained on), all their text: measured {heldout:.3f} bits/byte; "
              f"the law predicted {record['predicted_bpb']:.3f} ({low:.3f}-{high:.3f}), "
              f"{done['relative_error']:+.1%} off")
        demo_budget.write_choice(run_dir, dict(record, outcome=done))
    print("\nSamples from the demo model (temperature 0.8, top-p 0.95):")
    for seed, prompt in enumerate(PROMPTS):
        text = samples(run_dir, prompt, max_new_tokens=80, seed=seed)[0]
        print(f"\n--- {prompt!r} ---\n{text}")
    print(f"\nRecords: {run_dir}/ (python -m lab runs). Next: the app at http://127.0.0.1:8501")
    return 0
