"""`python -m lab sample --run RUN --prompt TEXT`: continue a prompt with a trained run."""

from __future__ import annotations

from pathlib import Path

import torch

from llama_core.checkpoint import load_run
from llama_core.devices import resolve_device
from llama_core.generate import Sampling, generate_text


def add_arguments(parser) -> None:
    parser.add_argument("--run", required=True, help="run name under --runs-dir, or a run folder")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--num", type=int, default=1, help="how many samples")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")


def run_dir_of(run: str, runs_dir: str) -> Path:
    path = Path(run)
    return path if (path / "config.json").exists() else Path(runs_dir) / run


def samples(run_dir: Path, prompt: str, num: int = 1, max_new_tokens: int = 200, temperature: float = 0.8,
            top_k: int | None = None, top_p: float | None = 0.95, seed: int = 0, device: str = "auto"):
    """`num` continuations of `prompt` by the run's latest checkpoint."""
    model, tokenizer = load_run(run_dir, device=resolve_device(device))
    ids = tokenizer.encode(prompt, bos=True)
    out = []
    for i in range(num):
        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            stop_tokens=(tokenizer.eos_id,) if tokenizer.eos_id is not None else (),
                            seed=seed + i)
        with torch.inference_mode():
            out.append(prompt + generate_text(model, tokenizer, ids, sampling))
    return out


def run(args) -> int:
    texts = samples(run_dir_of(args.run, args.runs_dir), args.prompt, args.num, args.max_new_tokens,
                    args.temperature, args.top_k, args.top_p, args.seed, args.device)
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} ---\n{text}\n")
    return 0
