"""Data-parallel training over torchrun with FSDP2, and checkpoints that change rank count on resume.

Launch: `torchrun --nproc_per_node=N -m lab train ...`. torchrun sets RANK, WORLD_SIZE and
LOCAL_RANK; `process_group()` reads them (gloo for CPU tensors, NCCL for CUDA ones, CUDA device
LOCAL_RANK). Without them every function here is a no-op for one process.

Data parallelism: `TrainConfig.batch_size` is the *global* micro-batch. BatchSampler.batch_at(n)
is a pure function of (seed, n), so every rank draws batch n and keeps rows rank::world
(`RankRows`). Each rank's loss is the mean over its rows (all the same length), FSDP2 averages
gradients over ranks, so N ranks follow the one-process run with the same batch up to float
rounding. Logged losses are all-reduced means; only rank 0 writes records.

Sharding: `shard_model` applies `fully_shard` to each TransformerBlock, then to the root (the
embeddings, final norm and output, a tied matrix once). Every rank builds the same full model from
the same seed first, so the shards are the single-process initialisation cut in pieces.

2-D: with a ParallelConfig of tp > 1, `device_mesh` is a (dp, tp) mesh; llama_core.tensor_parallel
splits the model over the "tp" axis first, then FSDP2 shards those slices over the "dp" axis, and
`rank_rows` gives the tp ranks of one data-parallel group the same rows.

Checkpoints of a sharded model keep the lab's step folders, with these files:

    runs/NAME/checkpoints/step_0000200/
        dcp/                torch.distributed.checkpoint: model + optimizer, sharded by FQN
        model.safetensors   the full weights, gathered to rank 0 (sample, chat, export read it)
        state.json          step, tokens, data position, "format": "dcp", world_size, checksums

Saving is collective (every rank writes its shards); rank 0 writes the rest into the same hidden
temporary folder and renames it into place, so a step_* folder is complete. DCP reshards on load,
so a checkpoint resumes with any number of ranks in any dp x tp layout, or in one plain process
(DCP without a process group). A single-process checkpoint loads into a sharded model through a
plain CPU twin. The run folder must be on a filesystem that every node sees.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from llama_core import checkpoint as ckpt
from llama_core.config import ParallelConfig
from llama_core.model import Transformer
from llama_core.optim import param_groups
from llama_core.run_folder import DCP_DIR, WEIGHTS, RunFolder, verify

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

# torch.distributed's FSDP, DTensor and checkpoint modules take seconds to import (sympy): they are
# imported where used, so that one-process training and the tools that import train.py stay quick.

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


# ------------------------------------------------------------------------------ process group

def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARS)


@contextlib.contextmanager
def process_group(timeout_s: float = 1800):
    """Join torchrun's process group for the duration of the block (nothing without torchrun)."""
    if not launched_by_torchrun() or is_distributed():
        yield
        return
    backend = "gloo"
    if torch.cuda.is_available():
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} CUDA "
                             "devices; lower --nproc_per_node")
        torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"  # the model may still run on the CPU (--train.device=cpu)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes records and prints."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (filling caches: tokenizer, token files), the others after it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def local_device(device: torch.device) -> torch.device:
    """A CUDA device becomes this rank's own (cuda:LOCAL_RANK); other devices are unchanged."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def mean_over_ranks(value: float) -> float:
    """The mean of a number over ranks (itself in one process)."""
    if not is_distributed():
        return value
    # float64 on the CPU: gloo serves CPU tensors even beside NCCL, and no precision is lost
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return total.item() / world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any: ranks must agree on when to stop."""
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def as_local(value: torch.Tensor) -> torch.Tensor:
    """A replicated DTensor (clip_grad_norm_'s global norm of sharded grads) as a plain tensor."""
    if not is_distributed():
        return value
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


# -------------------------------------------------------------------------------------- data

class RankRows:
    """This rank's rows (rank::world) of every global batch of a BatchSampler.

    State is the wrapped sampler's (its global position), so checkpoints do not depend on the
    number of ranks.
    """

    def __init__(self, sampler, rank: int, world: int):
        if sampler.batch_size % world:
            raise ValueError(f"--train.batch_size={sampler.batch_size} (the global batch) must be a multiple "
                             f"of the number of ranks ({world}) so that each rank gets the same rows")
        self.sampler, self.rank, self.world = sampler, rank, world
        self.batch_size = sampler.batch_size // world

    def batch_at(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.sampler.batch_at(position)
        return x[self.rank::self.world], y[self.rank::self.world]

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batch_at(self.sampler.position)
        self.sampler.position += 1
        return batch

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def rank_rows(sampler, mesh: DeviceMesh | None = None):
    """`sampler` split over the data-parallel ranks (itself in one process).

    With a 2-D mesh the tensor-parallel ranks of one data-parallel group share the same rows.
    """
    if not is_distributed():
        return sampler
    if mesh is None or "tp" not in (mesh.mesh_dim_names or ()):
        return RankRows(sampler, rank(), world_size())
    dp = mesh["dp"]
    return RankRows(sampler, dp.get_local_rank(), dp.size())


# -------------------------------------------------------------------------------------- model

def device_mesh(device: torch.device, parallel: ParallelConfig | None = None) -> DeviceMesh:
    """A 1-D mesh over all ranks (pure data parallelism), or the (dp, tp) mesh of `parallel` with tp > 1.

    Ranks dp*tp + t of a 2-D mesh are neighbours on the tensor axis, so tensor parallelism (the
    chattiest) stays within a node when tp divides the processes per node.
    """
    from torch.distributed.device_mesh import init_device_mesh

    if parallel is None or parallel.tp == 1:
        return init_device_mesh(device.type, (world_size(),), mesh_dim_names=("dp",))
    dp = parallel.data_parallel(world_size())
    return init_device_mesh(device.type, (dp, parallel.tp), mesh_dim_names=("dp", "tp"))


def shard_model(model: Transformer, mesh: DeviceMesh) -> Transformer:
    """FSDP2 in place over the mesh's data axis: each TransformerBlock is a unit, then the root.

    Apply tensor parallelism (llama_core.tensor_parallel, on the "tp" axis) and activation
    checkpointing before (it wraps the blocks' forward), torch.compile after.
    """
    from torch.distributed.fsdp import fully_shard

    if "tp" in (mesh.mesh_dim_names or ()):
        mesh = mesh["dp"]
    for block in model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    if not is_distributed():  # fully_shard needs a process group: no FSDP import for one process
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


# -------------------------------------------------------------------------------- checkpoints

def is_distributed_checkpoint(checkpoint: Path) -> bool:
    return (Path(checkpoint) / DCP_DIR).is_dir()


def save_checkpoint(run_dir: Path, step: int, model: Transformer, optimizer: torch.optim.Optimizer,
                    state: dict, keep: int = 2) -> Path:
    """Collective: write checkpoint `step` of a sharded model atomically, keep the newest `keep`.

    Same contract as llama_core.checkpoint.save_checkpoint; every rank must call it.
    """
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    run = RunFolder(run_dir)
    tmp = run.staging_dir(step, create=is_main())
    barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=tmp / DCP_DIR)
    # a collective too: every rank sends its shards, rank 0 alone receives (onto the CPU)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_main():
        tied = model.config.tie_embeddings
        try:
            save_file({k: v.contiguous() for k, v in full.items() if not (tied and k == "output.weight")},
                      tmp / WEIGHTS)
            run.seal(tmp, step, dict(state, format="dcp", world_size=world_size()))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        run.prune(keep)
    barrier()  # nobody moves on (or resumes) before the folder is in place
    return run.checkpoint_dir(step)


def restore_training_state(checkpoint: Path, model: Transformer, optimizer: torch.optim.Optimizer) -> dict:
    """Load weights and optimizer state of any lab checkpoint into `model` (sharded or plain).

    A distributed checkpoint reshards to the current ranks (or to one plain process); a
    single-process one goes into a sharded model through a plain CPU twin. Returns state.json.
    Collective when the model is sharded.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    checkpoint = Path(checkpoint)
    saved = verify(checkpoint)
    if is_distributed_checkpoint(checkpoint):
        model_sd, optim_sd = get_state_dict(model, optimizer)  # the layout to fill: this run's shards
        both = {"model": model_sd, "optimizer": optim_sd}
        with warnings.catch_warnings():  # one plain process is a supported reader here, not a mistake
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(both, checkpoint_id=checkpoint / DCP_DIR, no_dist=not is_distributed())
        set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optimizer"])
        return saved
    twin = Transformer(model.config)
    # the same parameter groups in the same order; load_state_dict restores their hyperparameters
    twin_optimizer = torch.optim.AdamW(param_groups(twin, 0.0))
    _, blob = ckpt.load_training_state(checkpoint)
    ckpt.load_weights(checkpoint, twin)
    twin_optimizer.load_state_dict(blob["optimizer"])
    model_sd, optim_sd = get_state_dict(twin, twin_optimizer)
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(full_state_dict=True))
    return saved
