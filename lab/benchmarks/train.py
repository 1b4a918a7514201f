"""`python -m lab bench train`: training tokens/s, MFU and peak memory, optionally beside Hugging Face.

One JSON line on stdout, also appended to runs/bench/train.jsonl (the app's throughput page reads
it). The lab side runs the real `train_step` (forward, backward, clipping, AdamW) on random token
ids, since speed does not depend on the text. With `--vs hf`, transformers' LlamaForCausalLM with
the same weights runs the same step (forward with labels, backward, clipping, AdamW), the two
interleaved round by round so that load on a shared machine hits both alike; each side reports its
best round. MFU is measured against this machine's matmul peak (CPU) or the datasheet (GPU).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch

from lab.cli.options import add_threads
from lab.experiment import hardware_record
from llama_core.config import TrainConfig, get_preset
from llama_core.devices import peak_flops, resolve_device, resolve_dtype, synchronize
from llama_core.flops import mfu, train_flops_per_token
from llama_core.formats.hf import config_to_hf, state_dict_to_hf
from llama_core.model import Transformer
from llama_core.run_folder import append_jsonl, bench_path, bench_record
from llama_core.train import autocast_context, build_state, train_step

DEFAULT_OUT = bench_path("runs", "train")


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="lab-15m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (after a warm-up)")
    parser.add_argument("--vs", choices=["hf"], default=None, help="also time transformers' LlamaForCausalLM")
    add_threads(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--checkpointing", default="none", help="activation checkpointing policy")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)


class RandomTokens:
    """An endless stream of (x, y) batches of random ids: the data a speed test needs."""

    def __init__(self, vocab: int, batch: int, seq: int, device: torch.device):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
        self.y = torch.randint(0, vocab, (batch, seq), generator=g).to(device)

    def __next__(self):
        return self.x, self.y


def _hf_step(model: Transformer, cfg: TrainConfig, device, dtype):
    import transformers

    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in config_to_hf(model.config).items()
                                         if k not in ("architectures", "torch_dtype")})
    hf = transformers.LlamaForCausalLM(hf_cfg).to(device)
    hf.load_state_dict(state_dict_to_hf(model.state_dict(), model.config), strict=False)
    if model.config.tie_embeddings:
        hf.tie_weights()
    hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, foreach=True)
    data = RandomTokens(model.config.vocab_size, cfg.batch_size, cfg.seq_len, device)

    def step():
        opt.zero_grad(set_to_none=True)
        x, y = next(data)
        with autocast_context(device, dtype):
            # HF shifts labels itself: give it the inputs as labels on the same tokens
            loss = hf(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), cfg.grad_clip)
        opt.step()
        return loss.item()

    return step


def measure_train(preset: str, batch: int, seq: int, steps: int = 3, rounds: int = 3, vs_hf: bool = False,
                  device: str = "auto", dtype: str = "auto", checkpointing: str = "none", compile: bool = False,
                  on_round=None) -> dict:
    """Best-of-`rounds` training tokens/s and MFU of `preset` (and of HF's model with `vs_hf`).

    `on_round(done, total)` is called after each timed round (for progress bars).
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    model_cfg = get_preset(preset)
    if seq > model_cfg.max_seq_len:
        raise ValueError(f"sequence length {seq} exceeds {preset}'s context {model_cfg.max_seq_len}")
    cfg = TrainConfig(tokens=batch * seq * 10**6, batch_size=batch, seq_len=seq,
                      activation_checkpointing=checkpointing, compile=compile)
    torch.manual_seed(0)
    model = Transformer(model_cfg).to(device)
    state = build_state(model, cfg, RandomTokens(model_cfg.vocab_size, batch, seq, device))
    sides = {"lab": lambda: train_step(state, cfg, device, dtype).loss}
    if vs_hf:
        sides["hf"] = _hf_step(model, cfg, device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for fn in sides.values():  # warm-up: allocator, packed weights, optimizer state
        fn()
    best: dict[str, float] = {}
    tokens_per_round = steps * batch * seq
    for r in range(rounds):
        for name, fn in sides.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            synchronize(device)
            best[name] = max(best.get(name, 0.0), tokens_per_round / (time.perf_counter() - start))
        if on_round:
            on_round(r + 1, rounds)
    peak, peak_source = peak_flops(device, dtype)
    flops_per_token = train_flops_per_token(model_cfg, seq)
    record = bench_record("train", {
        "preset": preset, "batch": batch, "seq": seq, "checkpointing": checkpointing,
        "compile": compile, "tokens_per_s": round(best["lab"], 1),
        "mfu": round(mfu(best["lab"], flops_per_token, peak), 4), "flops_per_token": flops_per_token,
        "peak_flops": peak, "peak_source": peak_source, **_memory(device),
    }, hardware_record(device, dtype))
    if "hf" in best:
        record.update(hf_tokens_per_s=round(best["hf"], 1), ratio_vs_hf=round(best["lab"] / best["hf"], 3))
    return record


def run(args) -> int:
    record = measure_train(args.preset, args.batch, args.seq, args.steps, args.rounds, args.vs == "hf",
                           args.device, args.dtype, args.checkpointing, args.compile)
    print(json.dumps(record, sort_keys=True))
    append_jsonl(args.out, record)
    return 0


def _memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "memory_source": "cuda allocator"}
    # the process's resident high-water mark (Linux reports KiB); with --vs hf it includes both models
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "memory_source": "process max RSS"}
