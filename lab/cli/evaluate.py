"""`python -m lab eval`: perplexity / bits per byte on a text, zero-shot multiple choice (the paper's way),
and with `--suite` the paper's benchmarks (Table 3, MMLU) beside its printed rows.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lab.cli.options import add_threads
from lab.evals import records
from lab.evals.harness import evaluate_suite, paper_table
from lab.evals.prompts import check_shots
from lab.evals.registry import suite_names, tasks_of, user_task
from lab.tasks import SHAKESPEARE_TASK
from llama_core.devices import resolve_device
from llama_core.evaluate import evaluate_task, load_task, perplexity
from llama_core.formats import load_model


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="smollm2", help="a run name, a folder, a .gguf file, or smollm2")
    parser.add_argument("--task", default=None, action="append",
                        help="a JSONL multiple-choice task (default: the shipped Shakespeare next-line task); "
                             "repeat to add several to a --suite")
    parser.add_argument("--limit", type=int, default=None,
                        help="score only the first N items (with --suite: documents per benchmark, per MMLU subject)")
    parser.add_argument("--suite", default=None, choices=suite_names(),
                        help="the paper's benchmarks: commonsense (Table 3), mmlu (Table 9), paper (all); "
                             "--task files join the suite as user tasks")
    parser.add_argument("--shots", type=int, default=None, help="with --suite: shots for MMLU (default 5)")
    parser.add_argument("--split", default=None, choices=["test", "validation"],
                        help="with --suite: documents of this split where a benchmark has it (default: test "
                             "where the package holds one, else validation)")
    parser.add_argument("--runs-dir", default="runs", help="with --suite: where results of non-lab checkpoints go")
    parser.add_argument("--text", default=None, help="also report perplexity and bits per byte on this text file")
    parser.add_argument("--device", default="auto")
    add_threads(parser)


def run(args) -> int:
    if args.suite:
        return run_suite(args)
    if args.task and len(args.task) > 1:
        raise ValueError("give one --task without --suite (or several with --suite)")
    args.task = args.task[0] if args.task else str(SHAKESPEARE_TASK)
    ckpt = load_model(args.checkpoint, device=resolve_device(args.device))
    result = {"checkpoint": str(ckpt.source), "format": ckpt.format}
    if args.text:
        text = Path(args.text).read_text(encoding="utf-8")
        result["text"] = {"file": args.text, **perplexity(ckpt.model, ckpt.tokenizer, text, add_bos=ckpt.add_bos)}
    items = load_task(args.task)[:args.limit]
    scored = evaluate_task(ckpt.model, ckpt.tokenizer, items, ckpt.add_bos,
                           progress=lambda i, n: print(f"\r{i}/{n} items", end="", file=sys.stderr, flush=True))
    print(file=sys.stderr)
    scored.pop("predictions")
    result["task"] = {"file": args.task, **scored}
    print(json.dumps(result))
    return 0


def run_suite(args) -> int:
    """The suite's benchmarks: a table beside the paper's rows on stderr, the record as stdout's last line."""
    extra = [user_task(t) for t in args.task or ()]
    for t in extra:  # a bad task file or --shots fails before the model loads
        load_task(t.files["file"])
    for t in tasks_of(args.suite):
        if args.shots is not None and t.max_shots:
            check_shots(t, args.shots)
    start = time.perf_counter()
    ckpt = load_model(args.checkpoint, device=resolve_device(args.device))

    def progress(task: str, done: int, total: int) -> None:
        print(f"\r{task}: {done}/{total} requests", end="" if done < total else "\n", file=sys.stderr, flush=True)

    results = evaluate_suite(ckpt.model, ckpt.tokenizer, args.suite, ckpt.add_bos, split=args.split,
                             limit=args.limit, shots=args.shots, extra_tasks=extra, progress=progress)
    settings = {"split": args.split, "limit": args.limit, "shots": args.shots}
    record = records.make_record(str(ckpt.source), ckpt.format, args.suite, settings, results,
                                 time.perf_counter() - start)
    path = records.save(record, args.runs_dir)
    print(format_table(paper_table(args.suite, results, f"this model ({Path(ckpt.source).name})")), file=sys.stderr)
    for name, r in results.items():
        notes = [f"{r[k]} {k}" for k in ("truncated", "unscorable") if r.get(k)]
        print(f"{name}: n={r['n']}, accuracy {_pct(r['accuracy'])} ± {_pct(r['stderr'])}"
              + (f" ({', '.join(notes)})" if notes else ""), file=sys.stderr)
    print(f"stored in {path}", file=sys.stderr)
    print(json.dumps(record))
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_table(rows: list[dict]) -> str:
    """Each suite's rows as a fixed-width text table (scores in percent, '-' where none)."""
    out = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        part = [r for r in rows if r["suite"] == suite]
        columns = [c for c in part[0] if c not in ("suite", "model")]
        width = max(len(r["model"]) for r in part)
        out.append(f"{'':{width}}  " + "  ".join(f"{c:>10.10}" for c in columns))
        for r in part:
            cells = ("-" if r[c] is None else f"{r[c]:.1f}" for c in columns)
            out.append(f"{r['model']:{width}}  " + "  ".join(f"{c:>10}" for c in cells))
        out.append("")
    return "\n".join(out)
