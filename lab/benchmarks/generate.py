"""`python -m lab bench generate`: generated tokens/s on a fixed slice of a generation benchmark.

Three ways over the same greedy requests, interleaved round by round so that load on a shared
machine hits each alike: one prompt at a time (as a plain `generate` loop does), left-padded batches,
and the lab's engine (batches whose shared few-shot prefix runs once into every row's KV cache,
rows leaving the batch as they finish). Each reports its best round; the record gives the ratios
and how many texts equal the one-at-a-time ones. One JSON line on stdout, also appended to
runs/bench/generate.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from lab.cli.options import add_threads
from lab.evals.generative import MAX_BATCH, encode_prompts
from lab.evals.problems import load_problems
from lab.evals.prompts import check_shots, resolve_split
from lab.evals.registry import tasks_of
from llama_core.devices import machine_record, resolve_device, synchronize
from llama_core.formats import load_model
from llama_core.generate import Sampling, generate_texts
from llama_core.quantize import MODES, for_decoding
from llama_core.run_folder import append_jsonl, bench_path, bench_record

DEFAULT_OUT = bench_path("runs", "generate")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="smollm2", help="a .gguf file, an HF folder, a run, or smollm2")
    parser.add_argument("--task", default="gsm8k", help="a generation benchmark (lab eval --suite qa|math|code)")
    parser.add_argument("--limit", type=int, default=16, help="documents in the slice (the first N)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds per way")
    parser.add_argument("--quant", choices=MODES, default=None, help="decode with int8/int4 weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL file the line is appended to")
    add_threads(parser, default=2)


def run(args) -> int:
    if args.limit < 1 or args.rounds < 1 or args.max_new_tokens < 1:
        raise ValueError("--limit, --rounds and --max-new-tokens must be positive")
    tasks = {t.name: t for t in tasks_of("paper") if t.generative}
    if args.task not in tasks:
        raise ValueError(f"unknown generation task {args.task!r}; choose one of {', '.join(tasks)}")
    task = dataclasses.replace(tasks[args.task], max_new_tokens=args.max_new_tokens)
    device = resolve_device(args.device)
    loaded = load_model(args.checkpoint, device=device)
    if args.quant is not None:
        for_decoding(loaded.model, args.quant)
    problems = load_problems(task, resolve_split(task, None), args.limit, check_shots(task, None))
    prompts, _ = encode_prompts(loaded.tokenizer, problems, loaded.add_bos,
                                loaded.model.config.max_seq_len - args.max_new_tokens)
    eos = () if loaded.tokenizer.eos_id is None else (loaded.tokenizer.eos_id,)
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=0.0, stop_tokens=eos)

    def batched(shared: bool) -> list[str]:
        return [t for i in range(0, len(prompts), MAX_BATCH)
                for t in generate_texts(loaded.model, loaded.tokenizer, prompts[i:i + MAX_BATCH], sampling,
                                        task.stop, shared_prefix=shared)]

    ways = {"one_at_a_time": lambda: [generate_texts(loaded.model, loaded.tokenizer, [p], sampling, task.stop)[0]
                                      for p in prompts],
            "batched": lambda: batched(False), "lab": lambda: batched(True)}
    best: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name, way in ways.items():
            synchronize(device)
            start = time.perf_counter()
            texts[name] = way()
            synchronize(device)
            tokens = sum(len(loaded.tokenizer.encode(t)) for t in texts[name])
            best[name] = max(best.get(name, 0.0), tokens / (time.perf_counter() - start))
    alone = texts["one_at_a_time"]
    fields = {"checkpoint": str(loaded.source), "task": task.name, "documents": len(prompts),
              "max_new_tokens": args.max_new_tokens, "quant": args.quant or "as loaded", "rounds": args.rounds,
              "prompt_tokens_mean": round(sum(map(len, prompts)) / len(prompts), 1),
              **{f"{name}_tokens_per_s": round(v, 2) for name, v in best.items()},
              "lab_vs_one_at_a_time": round(best["lab"] / best["one_at_a_time"], 2),
              "lab_vs_batched": round(best["lab"] / best["batched"], 2),
              **{f"{name}_same_texts": round(sum(a == b for a, b in zip(texts[name], alone)) / len(alone), 4)
                 for name in ("batched", "lab")}}
    record = bench_record("generate", fields, machine_record(device, torch.float32))
    print(json.dumps(record, sort_keys=True), flush=True)
    append_jsonl(args.out, record)
    return 0
