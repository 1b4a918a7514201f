"""The Throughput page's measurements: training and decoding speed here, the paper's runs projected here."""

from __future__ import annotations

import time

import streamlit as st
import torch

from lab.benchmarks.train import measure_train
from llama_core.config import PRESETS, get_preset
from llama_core.devices import device_name, peak_flops, resolve_device
from llama_core.generate import Sampling, generate
from llama_core.model import Transformer
from llama_core.paper import PAPER_THROUGHPUT, project_paper_runs

__all__ = ["PAPER_THROUGHPUT", "lab_presets", "machine_peak", "measure_decoding", "measure_training",
           "fastest", "paper_projection", "speed_table"]

ZETTA = 1e21  # training FLOPs are shown in units of 10^21: tables cannot hold integers beyond 2^53


def lab_presets() -> dict[str, int]:
    """The CPU-sized presets (name -> context length) a user can measure here."""
    return {name: cfg.max_seq_len for name, cfg in PRESETS.items() if name.startswith("lab-")}


def measure_training(preset: str, batch: int, seq: int, on_round=None) -> dict:
    """Best training tokens/s and MFU of `preset` at this shape (`lab bench train`, two short rounds)."""
    return measure_train(preset, batch, seq, steps=2, rounds=2, on_round=on_round)


def speed_table(results: list[dict]) -> list[dict]:
    """`measure_training` results as table rows named for people."""
    return [{"preset": r["preset"], "batch": r["batch"], "seq": r["seq"], "tokens/s": r["tokens_per_s"],
             "MFU": r["mfu"], "peak FLOP/s from": r["peak_source"]} for r in results]


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


def fastest(results: list[dict]) -> dict:
    """The `measure_training` result with the highest FLOP rate: the one projections use."""
    return max(results, key=lambda r: r["tokens_per_s"] * r["flops_per_token"])


def paper_projection(result: dict) -> list[dict]:
    """How long each paper model's training would take here at the FLOP rate of a `measure_training`
    result, and on the paper's 2048 GPUs at its section 2.4 rate (`llama_core.paper.project_paper_runs`)."""
    days = f"{PAPER_THROUGHPUT.gpus} A100 at the paper's rate (days)"
    return [{"model": p.preset, "training tokens": p.training_tokens, "training FLOPs (10^21)": p.flops / ZETTA,
             "this machine (years)": p.years, days: p.paper_days}
            for p in project_paper_runs(result["tokens_per_s"], get_preset(result["preset"]), result["seq"])]


@st.cache_resource(show_spinner=False)
def machine_peak() -> tuple[float, str]:
    """This machine's peak FLOP/s in the dtype training uses here, and where the figure comes from."""
    device = resolve_device("auto")
    return peak_flops(device, torch.float32 if device.type != "cuda" else torch.bfloat16)
