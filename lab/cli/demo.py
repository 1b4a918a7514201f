"""`make run`'s main job: the default corpus and tokenizer, the demo model trained, samples printed.

Sized to finish in about five minutes on two CPU cores. A finished demo is not retrained; an
interrupted one is resumed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lab.cli import presets
from lab.cli.sample import samples
from lab.experiment import RunSpec, finished, run_training
from llama_core.config import TrainConfig

DEMO = RunSpec(
    name="demo-shakespeare", preset="lab-1m", data="shakespeare", vocab_size=4096,
    train=TrainConfig(tokens=1_500_000, batch_size=16, seq_len=256, lr=3e-3, eval_every=50,
                      eval_batches=8, log_every=10, checkpoint_every=50),
)
PROMPTS = ("ROMEO:", "First Citizen:\n", "To be, or not to be")


def add_arguments(parser) -> None:
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--tokens", type=int, default=DEMO.train.tokens, help="training budget")


def run(args) -> int:
    presets.run(args)
    spec = dataclasses.replace(DEMO, train=DEMO.train.replace(tokens=args.tokens))
    run_dir = Path(args.runs_dir) / spec.name
    if finished(run_dir):
        print(f"\n{run_dir} is already trained (delete it to train again).")
    else:
        resume = (run_dir / "config.json").exists()
        print(f"\n{'Resuming' if resume else 'Training'} the demo model: {spec.preset} on {spec.data}, "
              f"{spec.train.tokens:,} tokens (about five minutes on two CPU cores)...")
        result = run_training(spec, Path(args.runs_dir), resume=resume)
        if result.status != "finished":
            return 130
    print("\nSamples from the demo model (temperature 0.8, top-p 0.95):")
    for seed, prompt in enumerate(PROMPTS):
        text = samples(run_dir, prompt, max_new_tokens=80, seed=seed)[0]
        print(f"\n--- {prompt!r} ---\n{text}")
    print(f"\nRecords: {run_dir}/ (python -m lab runs). Next: the app at http://127.0.0.1:8501")
    return 0
