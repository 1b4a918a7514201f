"""`python -m lab bench parallel`: tokens/s, peak memory and bytes sent per rank for each dp x tp layout.

Runs under torchrun (without it, it starts itself under torchrun with `--procs` processes). For a
world of N ranks it measures "dp" (FSDP2 over N), "tp" (tensor + sequence parallel over N) and "2d"
(N/2 x 2), each a fresh model from the same seed trained for a warm-up and `--steps` timed steps
on the same global batch. The bytes each rank sends are counted from the collectives the step
issues (FSDP2's and DTensor's, ring volume: an all-gather sends what it receives, an all-reduce
twice (n-1)/n of the tensor) and printed beside llama_core.flops' formula for the layout. Peak
memory is CUDA's high-water mark, or on the CPU the tracked tensors of checkpointing's TensorMemory
(this rank's shards of parameters and optimizer state plus the peak a step allocates).
One JSON line per layout on rank 0's stdout, appended to runs/bench/parallel.jsonl.

`--budget PRESET` prints instead the memory per GPU of the paper's setting (2,048 GPUs, sequence
2048, one sequence per GPU) under each layout, from llama_core.flops' pure functions: no run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils._pytree import tree_leaves

from lab.benchmarks.checkpointing import TensorMemory, _config
from lab.cli.options import add_model_shape
from llama_core import distributed
from llama_core.config import ParallelConfig, get_preset
from llama_core.devices import device_name, machine_record, peak_flops, resolve_device, synchronize
from llama_core.flops import (
    fsdp_bytes_per_rank,
    mfu,
    param_count,
    tp_bytes_per_rank,
    train_flops_per_token,
    training_memory_per_gpu,
)
from llama_core.model import Transformer
from llama_core.run_folder import append_jsonl, bench_path, bench_record

DEFAULT_OUT = bench_path("runs", "parallel")
LAYOUTS = ("dp", "tp", "2d")


class StepCounter(TensorMemory):
    """TensorMemory that also adds up the bytes this rank sends in collectives; DTensor ops are
    left to DTensor (NotImplemented), so the plain ops and collectives they issue come back here."""

    def __init__(self):
        super().__init__()
        self.sent = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.distributed.tensor import DTensor

        if any(issubclass(t, DTensor) for t in types):
            return NotImplemented
        self.sent += _sent_bytes(func, args)
        out = func(*args, **(kwargs or {}))
        # as TensorMemory, but FSDP2 frees its gathered storages in place: those have no pointer
        inputs = {_pointer(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and _pointer(t) not in inputs | {None}:
                self._track(t.untyped_storage())
        return out


def _pointer(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except RuntimeError:  # a storage resized to nothing
        return None


def _sent_bytes(func, args) -> float:
    """Bytes this rank sends in one collective: c10d ops take (outputs, inputs, group, ...), the
    functional ones (input, ..., group size, group name)."""
    name = func.name()
    functional = name.startswith("_c10d_functional::")
    if not (functional or name.startswith("c10d::")):
        return 0.0
    size = lambda a: sum(t.nbytes for t in _flat([a]) if isinstance(t, torch.Tensor))  # noqa: E731
    if "gather" in name:  # everyone receives every other rank's input
        return size(args[0]) * (_group(args) - 1) if functional else size(args[0]) - size(args[1])
    if "reduce_scatter" in name:  # everyone sends all but its own share
        if functional:
            n = _group(args)
            return size(args[0]) * (n - 1) / n
        return size(args[1]) - size(args[0])
    if "all_reduce" in name or "allreduce" in name:  # a reduce-scatter, then an all-gather
        n = _group(args)
        return 2 * size(args[0]) * (n - 1) / n
    return 0.0


def _flat(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        else:
            yield a


def _group(args) -> int:
    """The number of ranks of a collective's process group (from its name or its object)."""
    from torch.distributed.distributed_c10d import _resolve_process_group

    names = [a for a in _flat(args) if isinstance(a, str)]  # the last one: a reduce op is a string too
    if names:
        return _resolve_process_group(names[-1]).size()
    for a in _flat(args):
        if hasattr(a, "size") and not isinstance(a, torch.Tensor) and callable(a.size):
            return a.size()
    return distributed.world_size()


def add_arguments(parser) -> None:
    add_model_shape(parser, "lab-4m")
    parser.add_argument("--batch", type=int, default=8, help="global sequences per step")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per layout (after one warm-up)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated subset of {LAYOUTS}")
    parser.add_argument("--procs", type=int, default=2, help="processes to start when not under torchrun")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL file the lines are appended to")
    parser.add_argument("--budget", metavar="PRESET", default=None,
                        help="print the memory per GPU of PRESET (e.g. llama-65b) at the paper's scale instead")


# the paper's run: 2,048 GPUs, 4M tokens a step = one 2,048-token sequence per GPU (section 2.4)
BUDGET_GPUS, BUDGET_SEQ = 2048, 2048
BUDGET_LAYOUTS = ((2048, 1, False), (256, 8, False), (256, 8, True))


def print_budget(preset: str) -> None:
    cfg = get_preset(preset)
    print(f"{preset}: GiB per GPU, {BUDGET_GPUS} GPUs, one sequence of {BUDGET_SEQ} each (llama_core.flops)")
    print(f"{'layout':<20} {'checkpointing':<13} {'states':>7} {'gathered':>9} {'activations':>12} {'total':>7}")
    for dp, tp, sp in BUDGET_LAYOUTS:
        for policy in ("none", "selective", "full"):
            m = {k: v / 2**30 for k, v in training_memory_per_gpu(cfg, BUDGET_SEQ, 1, dp, tp, sp, policy).items()}
            layout = f"dp={dp} tp={tp}" + (" +SP" if sp else "")
            print(f"{layout:<20} {policy:<13} {m['weights'] + m['gradients'] + m['adam']:>7.2f} "
                  f"{m['gathered']:>9.2f} {m['activations']:>12.2f} {m['total']:>7.2f}")


def run(args) -> int:
    if args.budget:
        print_budget(args.budget)
        return 0
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    if not layouts or any(x not in LAYOUTS for x in layouts):
        raise ValueError(f"--layouts {args.layouts!r}: choose from {', '.join(LAYOUTS)}")
    if not distributed.launched_by_torchrun():
        if args.procs < 2:
            raise ValueError("--procs must be at least 2: one process has nothing to split")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.procs}",
               "-m", "lab", *sys.argv[sys.argv.index("bench"):]]
        return subprocess.run(cmd).returncode
    with distributed.process_group():
        world = distributed.world_size()
        cfg = _config(args.preset, args.model_overrides)
        device = distributed.local_device(resolve_device(args.device))
        for layout in layouts:
            if layout == "2d" and (world < 4 or world % 2):
                if distributed.is_main():
                    print(f"2d skipped: {world} ranks make no dp x 2 layout other than tp (needs an even 4 or more)")
                continue
            dp, tp = {"dp": (world, 1), "tp": (1, world), "2d": (world // 2, 2)}[layout]
            parallel = ParallelConfig(dp=dp, tp=tp)
            parallel.check(cfg, world)
            record = measure(cfg, parallel, batch=args.batch, seq=args.seq, steps=args.steps, device=device)
            record.update(layout=layout, preset=args.preset, model_overrides=args.model_overrides)
            if distributed.is_main():
                print(json.dumps(record, sort_keys=True), flush=True)
                append_jsonl(args.out, record)
    return 0


def measure(cfg, parallel: ParallelConfig, *, batch: int, seq: int, steps: int, device: torch.device) -> dict:
    """Train a fresh model split by `parallel` for a warm-up and `steps` timed fp32 steps; a flat record."""
    from llama_core.tensor_parallel import parallelize

    world = distributed.world_size()
    dp = parallel.data_parallel(world)
    if batch % dp:
        raise ValueError(f"--batch {batch} must be a multiple of dp={dp}")
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    mesh = distributed.device_mesh(device, parallel)
    if parallel.tp > 1:
        parallelize(model, mesh["tp"], parallel)
    distributed.shard_model(model, mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=torch.Generator().manual_seed(0))
    dp_rank = mesh["dp"].get_local_rank() if parallel.tp > 1 else distributed.rank()
    x, y = (data[dp_rank::dp, :-1].to(device), data[dp_rank::dp, 1:].to(device))

    def step() -> None:
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    resident = _local_bytes([*model.parameters(), *(v for s in optimizer.state.values() for v in s.values()
                                                  if isinstance(v, torch.Tensor))])
    counter = StepCounter()
    distributed.barrier()
    with counter:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        elapsed = time.perf_counter() - start
    elapsed = max(distributed.mean_over_ranks(elapsed), 1e-9)
    peak_memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resident + counter.peak
    formula = fsdp_bytes_per_rank(cfg, dp, parallel.tp) + (
        tp_bytes_per_rank(cfg, seq, batch // dp, parallel.tp, parallel.sequence_parallel) if parallel.tp > 1 else 0)
    tokens_per_s = batch * seq * steps / elapsed
    flops_per_token = train_flops_per_token(cfg, seq)
    peak, peak_source = peak_flops(device, torch.float32)
    return bench_record("parallel", {
        "dp": dp, "tp": parallel.tp, "sequence_parallel": parallel.sequence_parallel, "ranks": world,
        "params": param_count(cfg), "batch": batch, "seq_len": seq, "steps": steps, "step_s": elapsed / steps,
        "tokens_per_s": tokens_per_s, "mfu": mfu(tokens_per_s, flops_per_token, peak * world),
        "peak_flops_source": peak_source, "peak_memory_bytes_rank0": peak_memory,
        "memory_source": "cuda max_memory_allocated" if device.type == "cuda" else
        "tracked tensors: this rank's params + optimizer state + peak of the steps' allocations",
        "sent_bytes_per_rank_step": distributed.mean_over_ranks(counter.sent / steps),
        "formula_bytes_per_rank_step": formula, "device": device.type, "device_name": device_name(device),
    }, machine_record(device, torch.float32))


def _local_bytes(tensors) -> int:
    """Bytes of this rank's own pieces of `tensors` (a DTensor's local shard; shared storage once)."""
    from torch.distributed.tensor import DTensor

    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in local}.values())
