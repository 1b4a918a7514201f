"""`python -m lab sweep --name NAME [--presets ...] [--tokens 250k,500k,1M] [--lrs ...] [--dry-run]`."""

from __future__ import annotations

from pathlib import Path

from lab.cli.options import add_threads
from lab.experiment import RunSpec, apply_overrides, parse_overrides
from lab.sweep import (
    DEFAULT_DATA,
    DEFAULT_PRESETS,
    DEFAULT_TOKENS,
    DEFAULT_TRAIN,
    DEFAULT_VOCAB,
    MANIFEST,
    estimate_seconds,
    format_tokens,
    model_config,
    parse_budgets,
    parse_lrs,
    plan_sweep,
    run_sweep,
)
from llama_core.flops import format_count, param_count

ACCEPTS_OVERRIDES = True  # --train.FIELD=VALUE, shared by every run


def add_arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="the sweep: runs go to RUNS_DIR/NAME/PRESET-TOKENS")
    parser.add_argument("--presets", default=None,
                        help=f"comma-separated presets (default {','.join(DEFAULT_PRESETS)}); "
                             "llama_core presets work too")
    parser.add_argument("--tokens", default=None,
                        help=f"comma-separated token budgets (default {','.join(map(format_tokens, DEFAULT_TOKENS))})")
    parser.add_argument("--lrs", default=None, help="comma-separated learning rates (default: one, "
                                                    f"{DEFAULT_TRAIN['lr']:g})")
    parser.add_argument("--data", default=None,
                        help=f"a source or mixture, as for `lab train` (default {DEFAULT_DATA})")
    parser.add_argument("--vocab", type=int, default=None, help=f"shared tokenizer's size (default {DEFAULT_VOCAB})")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--dry-run", action="store_true", help="print the grid and an estimated time; train nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads(parser)
    parser.epilog = ("Rerunning a sweep skips its finished runs and resumes a started one; with only --name "
                     "it continues the recorded grid. Training settings shared by every run: --train.FIELD=VALUE "
                     f"(defaults {DEFAULT_TRAIN}).")


def train_settings(extra: list[str]) -> dict | None:
    """['--train.lr=1e-3'] -> DEFAULT_TRAIN with lr 1e-3 (typed); None when there are no overrides."""
    overrides = parse_overrides(extra)
    if not overrides:
        return None
    for key in overrides:
        if not key.startswith("train.") or key == "train.tokens":
            raise ValueError(f"--{key}: a sweep takes --train.FIELD=VALUE overrides only, and its token "
                             "budgets come from --tokens, its models from --presets")
    typed = apply_overrides(RunSpec(name="overrides"), overrides).train  # coerced and checked
    return {**DEFAULT_TRAIN, **{key[len("train."):]: getattr(typed, key[len("train."):]) for key in overrides}}


def run(args) -> int:
    train = train_settings(args.overrides)
    sweep = plan_sweep(args.name, Path(args.runs_dir),
                       presets=tuple(p.strip() for p in args.presets.split(",")) if args.presets else None,
                       tokens=parse_budgets(args.tokens) if args.tokens else None,
                       lrs=parse_lrs(args.lrs) if args.lrs else None, data=args.data,
                       vocab_size=args.vocab, train=train)
    root = Path(args.runs_dir) / sweep.name
    if args.dry_run:
        print(f"sweep {sweep.name}: {len(sweep.runs())} runs into {root}/ (data {sweep.data}, "
              f"vocab {sweep.vocab_size}, train {sweep.train})")
        for r in sweep.runs():
            n = param_count(model_config(r.preset, sweep.vocab_size))
            print(f"  {r.name:28s} {format_count(n):>6s} params  {r.tokens:>12,} tokens"
                  + (f"  lr {r.lr:g}" if r.lr is not None else "") + f"  ~{estimate_seconds(sweep, r) / 60:.1f} min")
        print(f"estimated {estimate_seconds(sweep) / 60:.0f} min on 2 idle CPU cores "
              "(more on a busy machine; finished runs are skipped)")
        return 0
    result = run_sweep(sweep, Path(args.runs_dir), progress=not args.quiet)
    print(f"sweep {sweep.name}: {result.status}; trained {len(result.trained)}, already finished "
          f"{len(result.skipped)}, failed {len(result.failed)}. Manifest {root / MANIFEST}")
    return {"finished": 0, "interrupted": 130}.get(result.status, 1)
