"""Continuations of a prompt by a trained run: what `lab sample` and `lab demo` print."""

from __future__ import annotations

from pathlib import Path

import torch

from llama_core.compiled import compile_decoding
from llama_core.devices import resolve_device
from llama_core.formats.lab import load_lab
from llama_core.generate import Sampling, generate_text
from llama_core.quantize import for_decoding
from llama_core.run_folder import RunFolder


def run_dir_of(run: str, runs_dir: str | Path) -> Path:
    """A run given as a folder, or by its name under `runs_dir`."""
    return Path(run) if RunFolder(run).is_run() else Path(runs_dir) / run


def samples(run_dir: Path, prompt: str, num: int = 1, max_new_tokens: int = 200, temperature: float = 0.8,
            top_k: int | None = None, top_p: float | None = 0.95, seed: int = 0, device: str = "auto",
            quant: str = "none", compile: bool = False) -> list[str]:
    """`num` continuations of `prompt` (each with the prompt in front) by the run's latest checkpoint,
    decoded in the packed float layout or with int8/int4 weights (`quant`, llama_core.quantize), with
    the decode step compiled when `compile` (llama_core.compiled)."""
    model, tokenizer = load_lab(run_dir, device=resolve_device(device))
    for_decoding(model, quant)  # the decode-time layout: same function, faster generation
    if compile:
        compile_decoding(model)
    ids = tokenizer.encode(prompt, bos=True)
    out = []
    for i in range(num):
        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            stop_tokens=(tokenizer.eos_id,) if tokenizer.eos_id is not None else (),
                            seed=seed + i)
        with torch.inference_mode():
            out.append(prompt + generate_text(model, tokenizer, ids, sampling))
    return out
