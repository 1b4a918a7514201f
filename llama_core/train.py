"""The training loop: `train_step()` over an explicit `TrainState`, and `train()` around it.

Everything a resume needs lives in the state: model, optimizer, data position, step, tokens,
elapsed time, the running loss of the current logging interval. On CPU a resumed run continues
bit for bit where the uninterrupted one would have been.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from tqdm.auto import tqdm

from llama_core import checkpoint as ckpt
from llama_core import distributed
from llama_core.config import TrainConfig
from llama_core.data import BatchSampler
from llama_core.devices import peak_flops, synchronize
from llama_core.energy import EnergyMeter
from llama_core.flops import bits_per_byte, mfu, train_flops_per_token
from llama_core.hold import hold
from llama_core.loss import use_fused_loss
from llama_core.model import Transformer
from llama_core.optim import build_optimizer, lr_at
from llama_core.run_folder import RunFolder

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

log = logging.getLogger(__name__)


class MetricsSink(Protocol):
    def append(self, metrics: dict) -> None: ...


class NullSink:
    def append(self, metrics: dict) -> None:
        pass


@dataclass
class TrainState:
    model: Transformer  # the plain model: what is saved and loaded
    optimizer: torch.optim.Optimizer
    sampler: BatchSampler
    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    energy_j: float | None = None  # measured by a hardware counter, where the machine has one
    loss_sum: float = 0.0  # train losses since the last metrics line
    loss_count: int = 0
    bad_steps: int = 0  # non-finite steps in a row
    forward: torch.nn.Module | None = None  # what runs the forward pass (compiled/wrapped model)

    def __post_init__(self):
        self.forward = self.forward or self.model

    def resumable(self, tokenizer_fingerprint: str) -> dict:
        return {"tokens": self.tokens, "elapsed_s": self.elapsed_s, "energy_j": self.energy_j,
                "data": self.sampler.state_dict(),
                "loss_sum": self.loss_sum, "loss_count": self.loss_count,
                "tokenizer": tokenizer_fingerprint}


@dataclass
class StepResult:
    loss: float
    lr: float
    grad_norm: float
    skipped: bool = False


def autocast_context(device: torch.device, dtype: torch.dtype):
    """bf16/fp16 autocast where asked (CUDA, MPS); a no-op in float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def on_device(batch: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(x, y, forward's keyword tensors) on `device`; a packed batch adds its positions and segments
    (llama_core.sft), any other batch is (x, y)."""
    x, y, *extra = batch
    moved = {k: v.to(device, non_blocking=True) for k, v in (extra[0] if extra else {}).items()}
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True), moved


def train_step(state: TrainState, cfg: TrainConfig, device: torch.device,
               dtype: torch.dtype = torch.float32) -> StepResult:
    """One optimizer step: `cfg.grad_accum` micro-batches, clipping, AdamW at lr_at(step).

    A step whose loss or gradient norm is not finite is skipped (no update) and reported.
    """
    lr = lr_at(state.step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for _ in range(cfg.grad_accum):
        x, y, extra = on_device(next(state.sampler), device)
        with autocast_context(device, dtype):
            _, loss = state.forward(x, y, **extra)
        (loss / cfg.grad_accum).backward()
        total += loss.detach() / cfg.grad_accum
    # sharded (DTensor) gradients give the global norm, so every rank clips by the same factor
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    # every rank sees the same mean loss, so all of them skip (or take) a step together
    loss_value = distributed.mean_over_ranks(total.item())
    norm_value = distributed.as_local(grad_norm).item()
    state.tokens += cfg.grad_accum * cfg.batch_size * cfg.seq_len
    state.step += 1
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        state.optimizer.zero_grad(set_to_none=True)
        state.bad_steps += 1
        return StepResult(loss_value, lr, norm_value, skipped=True)
    state.optimizer.step()
    state.bad_steps = 0
    return StepResult(loss_value, lr, norm_value)


@torch.no_grad()
def evaluate(model: torch.nn.Module, sampler: BatchSampler, n_batches: int, device: torch.device,
             dtype: torch.dtype = torch.float32) -> float:
    """Mean validation loss over the first `n_batches` batches of a fixed validation stream.

    Collective when distributed: each rank evaluates its rows, the mean is over all ranks.
    """
    was_training = model.training
    model.eval()
    losses = []
    for i in range(n_batches):
        x, y, extra = on_device(sampler.batch_at(i), device)
        with autocast_context(device, dtype):
            _, loss = model(x, y, **extra)
        losses.append(loss.item())
    model.train(was_training)
    return distributed.mean_over_ranks(sum(losses) / len(losses))


@dataclass
class TrainResult:
    status: str  # "finished", "interrupted" or "diverged"
    step: int
    tokens: int
    last: dict = field(default_factory=dict)


class _StopFlag:
    """Turns SIGTERM and Ctrl-C into a request to checkpoint and stop after the current step."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True
        log.warning("signal %s: saving a checkpoint after this step, then stopping", signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def restore(state: TrainState, checkpoint: Path, load_weights=ckpt.load_weights) -> None:
    """Load model, optimizer, data position, counters and RNG from a checkpoint into `state`
    (`load_weights(checkpoint, model)`: a LoRA finetune's checkpoints hold only its adapters).

    Distributed checkpoints and sharded models go through llama_core.distributed, which reshards
    to any number of ranks (training has no randomness to restore there).
    """
    if distributed.is_sharded(state.model) or distributed.is_distributed_checkpoint(checkpoint):
        saved = distributed.restore_training_state(checkpoint, state.model, state.optimizer)
    else:
        saved, blob = ckpt.load_training_state(checkpoint)
        load_weights(checkpoint, state.model)
        state.optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["torch_rng"])
    state.sampler.load_state_dict(saved["data"])
    state.step, state.tokens, state.elapsed_s = saved["step"], saved["tokens"], saved["elapsed_s"]
    state.energy_j = saved.get("energy_j")
    state.loss_sum, state.loss_count = saved["loss_sum"], saved["loss_count"]


def build_state(model: Transformer, cfg: TrainConfig, sampler: BatchSampler,
                mesh: DeviceMesh | None = None) -> TrainState:
    """Wrap `model` for training from outside: checkpointing, then FSDP2 over `mesh`, then compile."""
    from llama_core.activation_checkpointing import POLICIES, apply_activation_checkpointing

    if cfg.activation_checkpointing not in POLICIES:
        raise ValueError(f"TrainConfig.activation_checkpointing: unknown policy {cfg.activation_checkpointing!r}; "
                         f"choose one of {', '.join(POLICIES)}")
    forward = model
    use_fused_loss(model, cfg.fused_loss)
    if cfg.activation_checkpointing != "none":
        apply_activation_checkpointing(model, cfg.activation_checkpointing)
    if mesh is not None:
        distributed.shard_model(model, mesh)
    if cfg.compile:
        forward = torch.compile(model)
    return TrainState(model, build_optimizer(model, cfg), sampler, forward=forward)


def train(state: TrainState, cfg: TrainConfig, *, run_dir: Path, val_sampler: BatchSampler,
          bytes_per_token: float, tokenizer_fingerprint: str, device: torch.device,
          dtype: torch.dtype = torch.float32, sink: MetricsSink | None = None,
          progress: bool = True) -> TrainResult:
    """Train from `state.step` to `cfg.steps`, logging to `sink` and checkpointing into `run_dir`."""
    sink = sink or NullSink()
    flops_per_token = train_flops_per_token(state.model.config, cfg.seq_len)
    peak, _ = peak_flops(device, dtype)
    peak *= distributed.world_size()  # tokens/s below is the whole job's
    step_tokens = cfg.grad_accum * cfg.batch_size * cfg.seq_len
    state.model.train()
    bar = tqdm(total=cfg.steps, initial=state.step, unit="step", desc="training", disable=not progress,
               dynamic_ncols=True)
    interval_time, last = 0.0, {}
    wall_start = time.perf_counter() - state.elapsed_s
    meter, energy_base = EnergyMeter(device.type), state.energy_j or 0.0

    def save():
        state.elapsed_s = time.perf_counter() - wall_start
        measured = meter.joules()
        state.energy_j = None if measured is None else energy_base + measured
        saver = distributed.save_checkpoint if distributed.is_sharded(state.model) else ckpt.save_checkpoint
        saver(run_dir, state.step, state.model, state.optimizer, state.resumable(tokenizer_fingerprint),
              keep=cfg.keep_checkpoints)

    status = "finished"
    with _StopFlag() as stop:
        while state.step < cfg.steps:
            t0 = time.perf_counter()
            result = train_step(state, cfg, device, dtype)
            synchronize(device)
            interval_time += time.perf_counter() - t0
            if result.skipped:
                log.warning("step %d: non-finite loss %.4g or gradient norm %.4g; update skipped",
                            state.step, result.loss, result.grad_norm)
                sink.append({"step": state.step, "tokens": state.tokens, "skipped": True,
                             "train_loss": None, "lr": result.lr})
                if state.bad_steps >= cfg.max_bad_steps:
                    save()  # skipped steps never updated the weights: this is the last good state
                    status = "diverged"
                    break
            else:
                state.loss_sum += result.loss
                state.loss_count += 1
            bar.update(1)
            hold("step-done", state.step)  # tests signal a run at a known step here
            stopping = distributed.any_rank(stop.requested)  # ranks save and stop at the same step
            final = state.step == cfg.steps
            evaluate_now = state.step % cfg.eval_every == 0 or final
            if (state.step % cfg.log_every == 0 or evaluate_now or stopping) and state.loss_count:
                interval_steps = state.loss_count
                tokens_per_s = interval_steps * step_tokens / max(interval_time, 1e-9)
                last = {"step": state.step, "tokens": state.tokens,
                        "train_loss": state.loss_sum / state.loss_count, "lr": result.lr,
                        "grad_norm": result.grad_norm, "tokens_per_s": tokens_per_s,
                        "mfu": mfu(tokens_per_s, flops_per_token, peak),
                        "elapsed_s": time.perf_counter() - wall_start}
                measured = meter.joules()
                if measured is not None:
                    last.update(energy_j=energy_base + measured, energy_source=meter.source)
                if evaluate_now:
                    val = evaluate(state.forward, val_sampler, cfg.eval_batches, device, dtype)
                    last.update(val_loss=val, val_bpb=bits_per_byte(val, bytes_per_token))
                sink.append(last)
                bar.set_postfix(loss=f"{last['train_loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}",
                                mfu=f"{last['mfu']:.1%}")
                state.loss_sum, state.loss_count, interval_time = 0.0, 0, 0.0
            if state.step % cfg.checkpoint_every == 0 or final or stopping:
                save()
            if stopping:
                status = "interrupted"
                break
    bar.close()
    if status == "diverged":
        raise RuntimeError(f"training stopped: {cfg.max_bad_steps} steps in a row had a non-finite loss "
                           f"or gradient (up to step {state.step}); the weights of the last good step are "
                           f"saved in {RunFolder(run_dir).checkpoint_dir(state.step)}. Lower --train.lr or raise "
                           "--train.warmup_steps, then resume")
    return TrainResult(status, state.step, state.tokens, last)
