"""`python -m lab train --preset P --data shakespeare --tokens 2M --name RUN [--train.lr=3e-4 ...]`.

The same command runs data-parallel under `torchrun --nproc_per_node=N -m lab train ...`.
"""

from __future__ import annotations

from pathlib import Path

from lab.experiment import RunSpec, apply_overrides, parse_count, run_training
from llama_core import distributed
from llama_core.config import PRESETS

ACCEPTS_OVERRIDES = True  # --train.FIELD=VALUE / --model.FIELD=VALUE


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="lab-4m", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--data", default="shakespeare",
                        help="a source or a mixture: shakespeare, python-stdlib, a .txt/.jsonl file, a folder; "
                             "weights like 'shakespeare:0.8,python-stdlib:0.2'")
    parser.add_argument("--tokens", default="2M", help="training budget in tokens (2M, 500k, ...)")
    parser.add_argument("--name", default=None, help="run name (folder under --runs-dir)")
    parser.add_argument("--vocab", type=int, default=4096, help="tokenizer vocabulary size")
    parser.add_argument("--tokenizer", default=None, help="an existing tokenizer.model instead of training one")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")
    parser.epilog = ("Any config field can be overridden: --train.lr=3e-4 --train.batch_size=8 "
                     "--model.n_layers=2 (see llama_core/config.py).")


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """['--train.lr=3e-4', '--model.dim', '128'] -> {'train.lr': '3e-4', 'model.dim': '128'}."""
    out, items = {}, list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or "." not in item:
            raise ValueError(f"unrecognised argument {item!r}; overrides look like --train.lr=3e-4")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if not items:
                raise ValueError(f"override {item} needs a value")
            value = items.pop(0)
        out[key] = value
    return out


def run(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with distributed.process_group():  # under torchrun: every rank runs this, rank 0 reports
        return _run(args)


def _run(args) -> int:
    spec = RunSpec(name=args.name or f"{args.preset}-{args.data.replace('/', '_')}-{args.tokens}",
                   preset=args.preset, data=args.data, vocab_size=args.vocab, tokenizer=args.tokenizer)
    spec = apply_overrides(spec, {"train.tokens": str(parse_count(args.tokens)),
                                  **parse_overrides(args.overrides)})
    if args.resume:  # continue with the recorded config; explicit overrides still apply
        from lab.experiment import spec_from_record
        recorded = spec_from_record(Path(args.runs_dir) / spec.name)
        spec = apply_overrides(recorded, parse_overrides(args.overrides))
    result = run_training(spec, Path(args.runs_dir), resume=args.resume, progress=not args.quiet)
    last = result.last
    summary = f"{result.status} at step {result.step} ({result.tokens:,} tokens)"
    if "val_loss" in last:
        summary += f": val loss {last['val_loss']:.3f}, {last['val_bpb']:.3f} bits/byte"
    if distributed.is_main():
        print(f"run {spec.name}: {summary}. Records in {Path(args.runs_dir) / spec.name}")
    return 0 if result.status != "interrupted" else 130
