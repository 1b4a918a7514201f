"""`python -m lab finetune --checkpoint BASE --data FILE.jsonl --name RUN [--lora-rank R ...] [--epochs E]`.

Supervised instruction finetuning (lab.finetune); `--data shakespeare-instructions` uses the
offline set built from the corpus (lab.instructions) and reports the base and the finetuned model
on its held-out questions; `--eval-suite` scores both on one of the lab's evaluation suites.
`--train.FIELD=VALUE` overrides the training config.
"""

from __future__ import annotations

from pathlib import Path

from lab.cli.options import add_threads
from lab.evals.registry import suite_names
from lab.experiment import parse_overrides
from lab.finetune import FinetuneSpec, lora_spec, run_finetune
from llama_core.chat import TEMPLATES
from llama_core.lora import DEFAULT_TARGETS, TARGETABLE
from llama_core.sft import DEFAULT_LAYOUT, LAYOUTS

ACCEPTS_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="the base: a lab run, a Hugging Face or Meta folder, "
                        "a .gguf file, or smollm2")
    parser.add_argument("--data", required=True, help="chat-format or instruction/input/output JSONL, or "
                        "shakespeare-instructions")
    parser.add_argument("--val-data", default=None, help="held-out JSONL (default: every 10th conversation)")
    parser.add_argument("--name", required=True, help="run name (folder under --runs-dir)")
    parser.add_argument("--template", default=None, choices=sorted(TEMPLATES),
                        help="chat template (default: the checkpoint's own; turns where it has none)")
    parser.add_argument("--lora-rank", type=int, default=None, help="train LoRA adapters of this rank "
                        "(default: full finetuning)")
    parser.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator (default 2 x rank)")
    parser.add_argument("--lora-targets", default=None, help=f"comma-separated layers among {','.join(TARGETABLE)} "
                        f"(default {','.join(DEFAULT_TARGETS)})")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=None, help="longest example in tokens (default: the context)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-4 full, 1e-3 LoRA)")
    parser.add_argument("--layout", default=DEFAULT_LAYOUT, choices=LAYOUTS, help="pack: examples end to end in "
                        "rows of the context, kept apart by the attention mask; pad: a row each, padded "
                        f"(default {DEFAULT_LAYOUT}, the faster where measured: llama_core/sft.py)")
    parser.add_argument("--skip-bad-lines", action="store_true", help="leave malformed lines out (reported) "
                        "instead of stopping at the first")
    parser.add_argument("--compare", type=int, default=200, help="held-out questions to score the base and the "
                        "finetuned model on (shakespeare-instructions; 0: none)")
    parser.add_argument("--eval-suite", default=None, choices=suite_names(), help="after training, score the base "
                        "and the finetuned model on this evaluation suite (as lab eval --suite) and print both")
    parser.add_argument("--eval-limit", type=int, default=100, help="documents per benchmark (per MMLU subject) "
                        "for --eval-suite")
    parser.add_argument("--eval-only", default=None, help="with --eval-suite: only these of its benchmarks, "
                        "comma-separated (e.g. hellaswag,piqa)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads(parser)


def run(args) -> int:
    overrides = parse_overrides(args.overrides)
    bad = [k for k in overrides if not k.startswith("train.")]
    if bad:
        raise ValueError(f"--{bad[0]}: a finetune keeps its base's model; only --train.FIELD=VALUE may be given")
    spec = FinetuneSpec(name=args.name, checkpoint=args.checkpoint, data=args.data, val_data=args.val_data,
                        template=args.template, lora=lora_spec(args.lora_rank, args.lora_alpha, args.lora_targets),
                        epochs=args.epochs, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                        skip_bad_lines=args.skip_bad_lines, layout=args.layout,
                        train_overrides=tuple((k.removeprefix("train."), v) for k, v in overrides.items()))
    only = check_suite(args)  # a bad --eval-* request fails before training, not after it
    result = run_finetune(spec, Path(args.runs_dir), resume=args.resume, progress=not args.quiet)
    run_dir = Path(args.runs_dir) / args.name
    print(f"run {args.name}: {result.status} at step {result.step}"
          + (f", held-out assistant loss {result.last['val_loss']:.3f}" if "val_loss" in result.last else "")
          + f". Records in {run_dir}")
    if result.status == "finished" and args.compare and args.data == "shakespeare-instructions":
        from lab.finetune import record_comparison

        table = record_comparison(spec, Path(args.runs_dir), args.compare)
        keys = sorted({k for row in table.values() for k in row})
        print(f"{'':8}" + "".join(f"{k:>20}" for k in keys))
        for label, row in table.items():
            print(f"{label:8}" + "".join(f"{row.get(k, float('nan')):>20.3f}" for k in keys))
    if result.status == "finished" and args.eval_suite:
        print_suite(args, only)
    return 0 if result.status != "interrupted" else 130


def check_suite(args) -> list[str] | None:
    """The --eval-only names, validated against --eval-suite (and a sandbox for code benchmarks)."""
    if not args.eval_suite:
        if args.eval_only:
            raise ValueError("--eval-only needs --eval-suite")
        return None
    from lab.evals.harness import select
    from lab.evals.sandbox import require_sandbox

    if args.eval_limit is not None and args.eval_limit < 1:
        raise ValueError(f"--eval-limit must be a positive number of documents, got {args.eval_limit}")
    only = [t.strip() for t in args.eval_only.split(",") if t.strip()] if args.eval_only else None
    if any(t.metric == "pass@k" for t in select(args.eval_suite, only)):
        require_sandbox()
    return only


def print_suite(args, only: list[str] | None) -> None:
    from lab.instruction_eval import suite_before_after, suite_table

    pair = suite_before_after(Path(args.runs_dir) / args.name, args.eval_suite, args.eval_limit, only, args.runs_dir)
    print(f"{args.eval_suite} before and after (first {args.eval_limit} documents per benchmark, per subject "
          "for MMLU):")
    print(f"{'task':24}{'base %':>10}{'finetuned %':>13}{'change':>9}{'n':>7}")
    for row in suite_table(pair["before"], pair["after"]):
        cells = [f"{row[k]:.1f}" if row[k] is not None else "-" for k in ("base %", "finetuned %")]
        change = f"{row['change']:+.1f}" if row["change"] is not None else "-"
        print(f"{row['task']:24}{cells[0]:>10}{cells[1]:>13}{change:>9}{row['n']:>7}")
