"""Training state in and out of a lab checkpoint folder: weights, optimizer and RNG states.

The folder's layout, checksums and verification belong to llama_core/run_folder.py; this module
writes a single-process model and optimizer into it and reads them back (a sharded model goes
through llama_core/distributed.py). Nothing here unpickles code: the optimizer file is read with
torch.load(weights_only=True).
"""

from __future__ import annotations

import contextlib
import errno
import io
import pickle
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from llama_core.atomic import write_synced
from llama_core.hold import hold
from llama_core.model import Transformer
from llama_core.run_folder import OPTIMIZER, WEIGHTS, CheckpointError, RunFolder, check_weights_fit, verify


def weights_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's tensors for saving: contiguous, CPU, a tied output matrix left out."""
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        sd.pop("output.weight", None)
    return sd


def save_checkpoint(run_dir: Path, step: int, model: Transformer, optimizer: torch.optim.Optimizer,
                    state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically and delete all but the newest `keep`."""
    run = RunFolder(run_dir)
    final = run.checkpoint_dir(step)
    tmp = run.staging_dir(step)
    try:
        # serialise in memory, then write: a full disk then surfaces as OSError(ENOSPC) from write()
        optimizer_blob = io.BytesIO()
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, optimizer_blob)
        write_synced(tmp / WEIGHTS, save_safetensors(weights_state_dict(model)))
        hold("checkpoint-weights", step)  # tests/test_faults.py kills runs at these points
        write_synced(tmp / OPTIMIZER, optimizer_blob.getvalue())
        hold("checkpoint-files", step)
        run.seal(tmp, step, state)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = run.checkpoints()
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        if err.errno == errno.ENOSPC:
            raise CheckpointError(f"no space left on the device while writing checkpoint {final}: free some space "
                                  f"and resume; {kept}") from None
        raise CheckpointError(f"could not write checkpoint {final} ({err}); {kept}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    hold("checkpoint-sealed", step)
    run.prune(keep)
    return final


@contextlib.contextmanager
def _readable(path: Path):
    """safetensors' own errors do not name the file: these do, and say what to do."""
    try:
        yield
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); "
                              "it may be truncated: use an earlier checkpoint") from None


def read_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model.safetensors as tensors."""
    path = Path(ckpt) / WEIGHTS
    with _readable(path):
        return load_file(path)


def weight_shapes(ckpt: Path) -> dict[str, tuple[int, ...]]:
    """name -> shape from the weights file's header alone (no tensor is read)."""
    path = Path(ckpt) / WEIGHTS
    with _readable(path), safe_open(str(path), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def load_weights(ckpt: Path, model: Transformer) -> None:
    """Load a checkpoint's weights into `model` (same config), with clear errors."""
    sd = read_weights(ckpt)
    check_weights_fit({k: v.shape for k, v in sd.items()}, model.config, str(Path(ckpt) / WEIGHTS))
    if model.config.tie_embeddings:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    model.load_state_dict(sd)


def load_training_state(ckpt: Path) -> tuple[dict, dict]:
    """(state.json contents, {optimizer, torch_rng}) after verifying checksums."""
    state = verify(ckpt)
    blob = load_weights_only(Path(ckpt) / OPTIMIZER)
    if not isinstance(blob, dict) or not {"optimizer", "torch_rng"} <= blob.keys():
        raise CheckpointError(f"{Path(ckpt) / OPTIMIZER} does not hold the optimizer and RNG states; "
                              "use an earlier checkpoint")
    return state, blob


def load_weights_only(path: Path, mmap: bool = False):
    """torch.load(weights_only=True): tensors and plain containers only; pickled code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except pickle.UnpicklingError as err:
        # torch's own message suggests weights_only=False, which is exactly what must not be done here
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"it pickles {found.group(1)}" if found else str(err).splitlines()[0]
        raise CheckpointError(f"{path} could not be read as a weights-only checkpoint and was refused ({what}); "
                              "only files of tensors load, never pickled code") from None
    except Exception as err:
        raise CheckpointError(f"{path} could not be read as a weights-only checkpoint "
                              f"({type(err).__name__}: {err})") from None
