"""`python -m lab eval`: perplexity / bits per byte on a text, zero-shot multiple choice (the paper's way),
and with `--suite` the paper's benchmarks (Tables 3-5, 7-9) beside its printed rows.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lab.cli.options import add_threads
from lab.evals import records
from lab.evals.harness import evaluate_suite, paper_table, select
from lab.evals.prompts import check_shots
from lab.evals.registry import suite_names, user_task
from lab.evals.sandbox import require_sandbox
from lab.tasks import SHAKESPEARE_TASK
from llama_core.devices import resolve_device
from llama_core.evaluate import evaluate_task, load_task, perplexity
from llama_core.formats import load_model
from llama_core.quantize import MODES, for_decoding


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="smollm2", help="a run name, a folder, a .gguf file, or smollm2")
    parser.add_argument("--task", default=None, action="append",
                        help="a JSONL multiple-choice task (default: the shipped Shakespeare next-line task); "
                             "repeat to add several to a --suite")
    parser.add_argument("--limit", type=int, default=None,
                        help="score only the first N items (with --suite: documents per benchmark, per MMLU subject)")
    parser.add_argument("--suite", default=None, choices=suite_names(),
                        help="the paper's benchmarks: commonsense (Table 3), qa (Tables 4-5), math (Table 7), "
                             "code (Table 8), mmlu (Table 9), paper (all); --task files join the suite as user tasks")
    parser.add_argument("--only", default=None, help="with --suite: only these of its benchmarks, comma-separated "
                        "(e.g. humaneval, or hellaswag,piqa)")
    parser.add_argument("--shots", type=int, default=None,
                        help="with --suite: shots for the benchmarks that take them (default: the paper's, "
                             "MMLU 5, QA 5, GSM8k 8, MATH 4, MBPP 3)")
    parser.add_argument("--samples", type=int, default=None,
                        help="generations per problem: maj@k votes over them (math, default 1: greedy), "
                             "pass@k estimates from them (code, default 5)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature of the generation benchmarks (default: 0, greedy; code 0.1; "
                             "0.6 when --samples > 1 asks for maj@k)")
    parser.add_argument("--allow-unsafe-code", action="store_true",
                        help="run the code benchmarks even where no sandbox is available (no privilege drop "
                             "and no namespaces): generated code then runs with resource limits only. See SECURITY.md")
    parser.add_argument("--split", default=None, choices=["test", "validation"],
                        help="with --suite: documents of this split where a benchmark has it (default: test "
                             "where the package holds one, else validation)")
    parser.add_argument("--runs-dir", default="runs", help="with --suite: where results of non-lab checkpoints go")
    parser.add_argument("--text", default=None, help="also report perplexity and bits per byte on this text file")
    parser.add_argument("--quant", choices=MODES, default=None,
                        help="with --suite: score and generate with int8 or int4 weights, or none (float32 in the "
                             "packed decoding layout); default: the weights as loaded")
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
    only = args.only.split(",") if args.only else None
    by_name = {t.name: t for t in [*select(args.suite, only), *extra]}
    for t in select(args.suite, only):
        if args.shots is not None and t.max_shots:
            check_shots(t, args.shots)
    if any(t.metric == "pass@k" for t in by_name.values()):  # no sandbox, no --allow-unsafe-code: refused here
        print(f"generated code runs in: {require_sandbox(args.allow_unsafe_code).description}", file=sys.stderr)
    start = time.perf_counter()
    ckpt = load_model(args.checkpoint, device=resolve_device(args.device))
    if args.quant is not None:
        for_decoding(ckpt.model, args.quant)

    def progress(task: str, done: int, total: int) -> None:
        unit = "generations" if by_name[task].generative else "requests"
        print(f"\r{task}: {done}/{total} {unit}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    results = evaluate_suite(ckpt.model, ckpt.tokenizer, args.suite, ckpt.add_bos, split=args.split,
                             limit=args.limit, shots=args.shots, extra_tasks=extra, progress=progress,
                             samples=args.samples, temperature=args.temperature,
                             allow_unsafe_code=args.allow_unsafe_code, only=only)
    settings = {"split": args.split, "limit": args.limit, "shots": args.shots, "only": only, "samples": args.samples,
                "temperature": args.temperature, "quant": args.quant}
    record = records.make_record(str(ckpt.source), ckpt.format, args.suite, settings, results,
                                 time.perf_counter() - start)
    path = records.save(record, args.runs_dir)
    print(format_table(paper_table(args.suite, results, f"this model ({Path(ckpt.source).name})")), file=sys.stderr)
    for name, r in results.items():
        notes = [f"{r[k]} {k}" for k in ("truncated", "unscorable") if r.get(k)]
        print(f"{name}: n={r['n']}, {r['metric']} {_pct(r['accuracy'])} ± {_pct(r['stderr'])}"
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
