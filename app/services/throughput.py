"""The Throughput page's measurements: training and decoding speed here, the paper's runs projected here."""

from __future__ import annotations

import time

import torch

from lab.benchmarks.train import measure_train
from llama_core.config import PRESETS, get_preset
from llama_core.devices import device_name, peak_flops, resolve_device
from llama_core.generate import Sampling, generate
from llama_core.model import Transformer
from llama_core.paper import PAPER_THROUGHPUT, project_paper_runs

__all__ = ["PAPER_THROUGHPUT", "lab_presets", "machine_peak", "measure_decoding", "measure_training",
           "paper_projection"]


def lab_presets() -> dict[str, int]:
    """The CPU-sized presets (name -> context length) a user can measure here."""
    return {name: cfg.max_seq_len for name, cfg in PRESETS.items() if name.startswith("lab-")}


def measure_training(preset: str, batch: int, seq: int, on_round=None) -> dict:
    """Best training tokens/s and MFU of `preset` at this shape (`lab bench train`, two short rounds)."""
    return measure_train(preset, batch, seq, steps=2, rounds=2, on_round=on_round)


def measure_decoding(preset: str, new_tokens: int = 64, on_round=None, rounds: int = 2) -> dict:
    """Greedy decode tokens/s of a random-weight model of `preset` at batch 1."""
    device = resolve_device("auto")
    torch.manual_seed(0)
    model = Transformer(get_preset(preset)).to(device).eval()
    prompt = list(range(1, 17))
    settings = Sampling(max_new_tokens=new_tokens, temperature=0.0)
    generate(model, prompt, Sampling(max_new_tokens=4, temperature=0.0))  # warm-up
    best = 0.0
    for r in range(rounds):
        start = time.perf_counter()
        with torch.no_grad():
            out = generate(model, prompt, settings)
        best = max(best, len(out) / (time.perf_counter() - start))
        if on_round:
            on_round(r + 1, rounds)
    return {"bench": "decode", "preset": preset, "tokens_per_s": round(best, 1), "device": device_name(device)}


def paper_projection(tokens_per_s: float, preset: str, seq: int) -> list[dict]:
    """How long each paper model's training would take here at the FLOP rate measured on `preset`,
    and on the paper's 2048 GPUs at its section 2.4 rate (`llama_core.paper.project_paper_runs`)."""
    return [{"model": p.preset, "training tokens": p.training_tokens, "training FLOPs": p.flops,
             "this machine (years)": p.years, f"{PAPER_THROUGHPUT.gpus} A100 at the paper's rate (days)": p.paper_days}
            for p in project_paper_runs(tokens_per_s, get_preset(preset), seq)]


def machine_peak() -> tuple[float, str]:
    """This machine's peak FLOP/s in the dtype training uses here, and where the figure comes from."""
    device = resolve_device("auto")
    return peak_flops(device, torch.float32 if device.type != "cuda" else torch.bfloat16)
