"""`python -m lab bench eval [--vs hf]`: evaluation items/s on a fixed slice of a benchmark.

The lab's batched scorer (each context once, its KV cache shared by the choices) scores the first
`--limit` documents of `--task`; with `--vs hf`, transformers' LlamaForCausalLM scores the same
token requests (those the metric needs) one forward pass each, as common harnesses do. The two are
interleaved round by round so that load on a shared machine hits both alike; each reports its best
round, and the record gives their ratio and how often they chose the same answer. One JSON line on
stdout, also appended to runs/bench/eval.jsonl.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lab.cli.options import add_threads
from lab.evals.harness import evaluate_task
from lab.evals.prompts import load_questions
from lab.evals.registry import tasks_of
from llama_core.devices import machine_record, resolve_device, synchronize
from llama_core.formats import load_model
from llama_core.run_folder import append_jsonl, bench_path, bench_record

DEFAULT_OUT = bench_path("runs", "eval")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="smollm2", help="a .gguf file, a Hugging Face folder, or smollm2")
    parser.add_argument("--task", default="hellaswag", help="a benchmark of the registry (lab eval --suite paper)")
    parser.add_argument("--limit", type=int, default=40, help="documents in the slice (the first N)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per side")
    parser.add_argument("--vs", choices=["hf"], default=None, help="also time transformers on the same requests")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL file the line is appended to")
    add_threads(parser, default=2)


def run(args) -> int:
    if args.limit < 1 or args.rounds < 1:
        raise ValueError("--limit and --rounds must be positive")
    tasks = {t.name: t for t in tasks_of("paper") if not t.generative}  # `bench generate` times the others
    if args.task not in tasks:
        raise ValueError(f"unknown likelihood task {args.task!r}; choose one of {', '.join(tasks)} "
                         "(generation tasks: lab bench generate)")
    task = tasks[args.task]
    device = resolve_device(args.device)
    loaded = load_model(args.checkpoint, device=device)
    questions = load_questions(task, limit=args.limit)
    sides = {"lab": None}
    if args.vs == "hf":
        from lab.evals.hf_reference import hf_scorer, load_hf_model

        sides["hf"] = hf_scorer(load_hf_model(loaded.source, loaded.format).to(device))
    best: dict[str, float] = {}
    predictions: dict[str, list[int]] = {}
    requests = 0
    for _ in range(args.rounds):
        for name, scorer in sides.items():
            synchronize(device)
            start = time.perf_counter()
            result = evaluate_task(loaded.model, loaded.tokenizer, task, loaded.add_bos, questions=questions,
                                   scorer=scorer)
            synchronize(device)
            best[name] = max(best.get(name, 0.0), len(questions) / (time.perf_counter() - start))
            predictions[name], requests = result["predictions"], result["requests"]
    fields = {"checkpoint": str(loaded.source), "task": task.name, "documents": len(questions),
              "requests": requests, "rounds": args.rounds, "items_per_s": round(best["lab"], 3),
              "accuracy": result["accuracy"]}
    if "hf" in best:
        same = sum(a == b for a, b in zip(predictions["lab"], predictions["hf"]))
        fields.update(hf_items_per_s=round(best["hf"], 3), speedup_vs_hf=round(best["lab"] / best["hf"], 2),
                      same_choices_as_hf=round(same / len(questions), 4))
    record = bench_record("eval", fields, machine_record(device, torch.float32))
    print(json.dumps(record, sort_keys=True), flush=True)
    append_jsonl(args.out, record)
    return 0
