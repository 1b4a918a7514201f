"""`python -m lab train --preset P --data shakespeare --tokens 2M --name RUN [--train.lr=3e-4 ...]`.

The same command runs data-parallel under `torchrun --nproc_per_node=N -m lab train ...`, and
tensor-parallel (with sequence parallelism) across `--parallel.tp` of those ranks:
`torchrun --nproc_per_node=4 -m lab train ... --parallel.dp=2 --parallel.tp=2 --train.fused_loss=false`.
`--resume` continues a run with its recorded settings; what it may change is
lab.experiment.RESUMABLE_TRAIN_FIELDS, and anything else given is refused with a message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lab.cli.options import add_threads
from lab.evals.registry import suite_names
from lab.experiment import RunSpec, apply_overrides, parse_count, parse_overrides, run_training, spec_from_record
from llama_core import distributed
from llama_core.config import PRESETS

ACCEPTS_OVERRIDES = True  # --train.FIELD=VALUE / --model.FIELD=VALUE / --parallel.FIELD=VALUE
# None in the parser means "not given": a resume then keeps the recorded value
DEFAULTS = {"preset": "lab-4m", "data": "shakespeare", "tokens": "2M", "vocab": 4096}


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)} (default lab-4m)")
    parser.add_argument("--data", default=None,
                        help="a source or a mixture: shakespeare (the default), python-stdlib, a .txt/.jsonl file, "
                             "a folder; weights like 'shakespeare:0.8,python-stdlib:0.2'")
    parser.add_argument("--tokens", default=None, help="training budget in tokens (2M, 500k, ...; default 2M)")
    parser.add_argument("--name", default=None, help="run name (folder under --runs-dir)")
    parser.add_argument("--vocab", type=int, default=None, help="tokenizer vocabulary size (default 4096)")
    parser.add_argument("--tokenizer", default=None, help="an existing tokenizer.model instead of training one")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint "
                        "(it may change the budget, evaluation, logging and checkpoint cadence, the device and the "
                        "--parallel layout)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--eval-suite", default=None, choices=suite_names(),
                        help="also score this benchmark suite at each validation step, into metrics.jsonl")
    parser.add_argument("--eval-limit", type=int, default=100, help="documents per benchmark for --eval-suite")
    add_threads(parser)
    parser.epilog = ("Any config field can be overridden: --train.lr=3e-4 --train.batch_size=8 "
                     "--model.n_layers=2, and the layout under torchrun: --parallel.tp=2 --parallel.dp=2 "
                     "--parallel.sequence_parallel=false (see llama_core/config.py).")


def run(args) -> int:
    with distributed.process_group():  # under torchrun: every rank runs this, rank 0 reports
        return _run(args)


def spec_of(args) -> RunSpec:
    """The spec the command line asks for: a new run, or (--resume) the recorded one with what was given."""
    given = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key) is not None}
    if args.tokenizer is not None:
        given["tokenizer"] = args.tokenizer
    chosen = {**DEFAULTS, **given}
    name = args.name or f"{chosen['preset']}-{chosen['data'].replace('/', '_')}-{chosen['tokens']}"
    if args.resume:
        spec = spec_from_record(Path(args.runs_dir) / name)
    else:
        spec = RunSpec(name=name)
        given = chosen
    fields = {"preset": given.get("preset"), "data": given.get("data"), "vocab_size": given.get("vocab"),
              "tokenizer": given.get("tokenizer")}
    spec = dataclasses.replace(spec, **{k: v for k, v in fields.items() if v is not None})
    tokens = {"train.tokens": str(parse_count(given["tokens"]))} if "tokens" in given else {}
    return apply_overrides(spec, {**tokens, **parse_overrides(args.overrides)})


def _run(args) -> int:
    spec = spec_of(args)
    wrap_sink = None
    if args.eval_suite:
        from lab.evals.during_training import suite_sink

        wrap_sink = suite_sink(args.eval_suite, args.eval_limit)
    result = run_training(spec, Path(args.runs_dir), resume=args.resume, progress=not args.quiet, wrap_sink=wrap_sink)
    last = result.last
    summary = f"{result.status} at step {result.step} ({result.tokens:,} tokens)"
    if last.get("heldout_bpb") is not None:  # over all the held-out text, at the end of the run
        summary += f": held-out loss {last['heldout_loss']:.3f}, {last['heldout_bpb']:.3f} bits/byte (all its text)"
    elif "val_loss" in last:
        summary += f": val loss {last['val_loss']:.3f}, {last['val_bpb']:.3f} bits/byte (sampled batches)"
    if distributed.is_main():
        print(f"run {spec.name}: {summary}. Records in {Path(args.runs_dir) / spec.name}")
    return 0 if result.status != "interrupted" else 130
