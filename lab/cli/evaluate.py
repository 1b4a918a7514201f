"""`python -m lab eval`: perplexity / bits per byte on a text, and zero-shot multiple choice (the paper's way)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lab.cli.options import add_threads
from lab.tasks import SHAKESPEARE_TASK
from llama_core.devices import resolve_device
from llama_core.evaluate import evaluate_task, load_task, perplexity
from llama_core.formats import load_model


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="smollm2", help="a run name, a folder, a .gguf file, or smollm2")
    parser.add_argument("--task", default=str(SHAKESPEARE_TASK),
                        help="a JSONL multiple-choice task (default: the shipped Shakespeare next-line task)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N items")
    parser.add_argument("--text", default=None, help="also report perplexity and bits per byte on this text file")
    parser.add_argument("--device", default="auto")
    add_threads(parser)


def run(args) -> int:
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
