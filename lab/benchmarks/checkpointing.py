"""`python -m lab bench checkpointing`: tokens/s, MFU and peak memory of each checkpointing policy.

One JSON line per policy on stdout, also appended to a JSONL file (runs/bench/checkpointing.jsonl)
that the app reads. Each policy trains a fresh model (same seed, same batch) for a warm-up step
and `--steps` timed steps of forward, backward and AdamW, under autocast as the training loop does.

MFU counts model FLOPs only (6N + attention, llama_core.flops): the recomputation a policy adds is
its cost, so it lowers MFU. Peak memory on CUDA is the allocator's high-water mark; on other
devices it is measured by `TensorMemory` below: parameters and optimizer state plus the peak of
the tensors a training step allocates (activations, gradients, temporaries) - the allocator's
own overhead and the process's other memory are left out.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lab.cli.options import add_model_shape
from llama_core.activation_checkpointing import POLICIES, apply_activation_checkpointing
from llama_core.config import ModelConfig, get_preset
from llama_core.devices import device_name, machine_record, peak_flops, resolve_device, resolve_dtype, synchronize
from llama_core.flops import mfu, param_count, train_flops_per_token
from llama_core.model import Transformer
from llama_core.run_folder import append_jsonl, bench_path, bench_record

DEFAULT_OUT = bench_path("runs", "checkpointing")


class TensorMemory(TorchDispatchMode):
    """Bytes of the storages that ops allocate while this mode is on: `live` now, and `peak`.

    Each storage counts once (views share it) until it is freed. Deterministic on any device, so
    tests can compare policies; tensors that existed before the mode (parameters) are not counted.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._tracked: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # in-place ops and views return their inputs' storage: not a new allocation
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self._track(t.untyped_storage())
        return out

    def _track(self, storage) -> None:
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._tracked:
            return
        self._tracked.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._tracked.discard(key)
        self.live -= size


def add_arguments(parser) -> None:
    add_model_shape(parser, "lab-110m")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--seq", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per policy (after one warm-up)")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help=f"comma-separated subset of {','.join(POLICIES)}")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="autocast dtype: auto (bf16 on CUDA), fp32, bf16")
    parser.add_argument("--attn-backend", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA speed runs)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL file the lines are appended to")


def run(args) -> int:
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise ValueError(f"unknown checkpointing policy {unknown or policies}; choose from {POLICIES}")
    if args.batch < 1 or args.seq < 1 or args.steps < 1:
        raise ValueError("--batch, --seq and --steps must be positive")
    cfg = _config(args.preset, args.model_overrides)
    if args.seq > cfg.max_seq_len:
        raise ValueError(f"--seq {args.seq} exceeds {args.preset}'s context of {cfg.max_seq_len}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    for policy in policies:
        record = measure(cfg, policy, batch=args.batch, seq=args.seq, steps=args.steps, device=device,
                         dtype=dtype, attn_backend=args.attn_backend, compile=args.compile)
        record.update(preset=args.preset, model_overrides=args.model_overrides)
        print(json.dumps(record, sort_keys=True), flush=True)
        append_jsonl(args.out, record)
    return 0


def measure(cfg: ModelConfig, policy: str, *, batch: int, seq: int, steps: int, device: torch.device,
            dtype: torch.dtype, attn_backend: str = "auto", compile: bool = False, seed: int = 0) -> dict:
    """Train a fresh model under `policy` for one warm-up and `steps` timed steps; a flat record."""
    gc.collect()  # the previous policy's model and optimizer must not count against this one
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch.manual_seed(seed)
    with device:  # initialise on the device: a 1B model's CPU initialisation takes longer than its steps
        model = apply_activation_checkpointing(Transformer(cfg, attn_backend), policy)
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    data = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
    x, y = data[:, :-1], data[:, 1:]

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            _, loss = forward(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up: kernels, compilation, optimizer state, the allocator's first pages
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        tracker, memory_source = contextlib.nullcontext(), "cuda max_memory_allocated"
    else:  # the tracker's per-op hook costs well under 1% of a step at benchmark sizes
        resident = _storage_bytes([*model.parameters(), *_optimizer_tensors(optimizer)])
        tracker = TensorMemory()
        memory_source = "tracked tensors: params + optimizer state + peak of the steps' allocations"
    synchronize(device)
    with tracker:
        start = time.perf_counter()
        losses = [step() for _ in range(steps)]
        synchronize(device)
        elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak_memory = torch.cuda.max_memory_allocated(device)
    else:
        peak_memory = resident + tracker.peak

    tokens_per_s = batch * seq * steps / elapsed
    flops_per_token = train_flops_per_token(cfg, seq)
    peak, peak_source = peak_flops(device, dtype)
    return bench_record("checkpointing", {
        "policy": policy, "params": param_count(cfg), "batch": batch,
        "seq_len": seq, "steps": steps, "step_s": elapsed / steps, "tokens_per_s": tokens_per_s,
        "train_flops_per_token": flops_per_token, "mfu": mfu(tokens_per_s, flops_per_token, peak),
        "peak_flops": peak, "peak_flops_source": peak_source,
        "peak_memory_bytes": peak_memory, "peak_memory_gib": peak_memory / 2**30,
        "memory_source": memory_source, "loss": losses[-1], "device": device.type,
        "device_name": device_name(device), "dtype": str(dtype).removeprefix("torch."),
        "attn_backend": attn_backend, "compile": compile,
    }, machine_record(device, dtype))


def _config(preset: str, overrides: list[str]) -> ModelConfig:
    changes = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    base = get_preset(preset).to_dict()
    if base["n_kv_heads"] == base["n_heads"]:
        base["n_kv_heads"] = None  # plain multi-head attention stays so when n_heads is overridden
    return ModelConfig.from_dict({**base, **changes})


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (a tied weight counts once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())
