"""Lab checkpoints: safetensors weights + a weights-only torch file + JSON, written atomically.

    runs/NAME/checkpoints/step_0000200/
        model.safetensors   weights (a tied output matrix stored once)
        optimizer.pt        optimizer state and RNG states (torch.load(weights_only=True))
        state.json          step, tokens, data position, tokenizer fingerprint, checksums

A checkpoint is written into a hidden temporary folder and renamed into place, so a folder named
step_* is always complete; its checksums catch files damaged afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from llama_core.atomic import fsync_dir
from llama_core.config import ModelConfig
from llama_core.model import Transformer

log = logging.getLogger(__name__)

WEIGHTS, OPTIMIZER, STATE = "model.safetensors", "optimizer.pt", "state.json"
# torch.distributed.checkpoint reads this file of a sharded checkpoint (llama_core/distributed.py)
# with a plain pickle.load, which would run any code in it: `verify` vets it first.
DCP_METADATA = "dcp/.metadata"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*") if p.is_dir() and (p / STATE).exists())


def weights_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's tensors for saving: contiguous, CPU, a tied output matrix left out."""
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        sd.pop("output.weight", None)
    return sd


def save_checkpoint(run_dir: Path, step: int, model: Transformer, optimizer: torch.optim.Optimizer,
                    state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically and delete all but the newest `keep`."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # serialise in memory, then write: a full disk then surfaces as OSError(ENOSPC) from write()
        optimizer_blob = io.BytesIO()
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, optimizer_blob)
        write_synced(tmp / WEIGHTS, save_safetensors(weights_state_dict(model)))
        write_synced(tmp / OPTIMIZER, optimizer_blob.getvalue())
        state = dict(state, step=step, checksums={name: _sha256(tmp / name) for name in (WEIGHTS, OPTIMIZER)})
        write_synced(tmp / STATE, json.dumps(state, indent=2, sort_keys=True).encode())
        if final.exists():  # a re-save of the same step (after a resume): replace it whole
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(final.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = list_checkpoints(run_dir)
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        if err.errno == errno.ENOSPC:
            raise CheckpointError(f"no space left on the device while writing checkpoint {final}: free some space "
                                  f"and resume; {kept}") from None
        raise CheckpointError(f"could not write checkpoint {final} ({err}); {kept}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_synced(path: Path, data: bytes) -> None:
    """Write bytes and fsync them (the checkpoint folder is renamed into place only afterwards)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_json(path: Path, missing: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None


def read_state(ckpt: Path) -> dict:
    return _read_json(Path(ckpt) / STATE, f"is missing: {ckpt} is not a complete checkpoint")


def verify(ckpt: Path) -> dict:
    """Check every file against the checksums in state.json; return the state."""
    state = read_state(ckpt)
    for name, expected in state.get("checksums", {}).items():
        path = Path(ckpt) / name
        if not path.exists():
            raise CheckpointError(f"{path} is missing; use an earlier checkpoint")
        if _sha256(path) != expected:
            raise CheckpointError(f"{path} is damaged (its checksum does not match state.json); "
                                  "use an earlier checkpoint")
    if (Path(ckpt) / DCP_METADATA).is_file():
        _vet_dcp_metadata(Path(ckpt) / DCP_METADATA)
    return state


def load_weights(ckpt: Path, model: Transformer) -> None:
    """Load a checkpoint's weights into `model` (same config), with clear errors."""
    path = Path(ckpt) / WEIGHTS
    try:
        sd = load_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); "
                              "it may be truncated: use an earlier checkpoint") from None
    load_state_dict_checked(model, sd, str(path))


def load_state_dict_checked(model: Transformer, sd: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with messages that name the file, the tensor and both shapes."""
    if model.config.tie_embeddings and "output.weight" not in sd and "tok_embeddings.weight" in sd:
        sd = dict(sd, **{"output.weight": sd["tok_embeddings.weight"]})
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}; is it the right config?")
    for name, tensor in sd.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensor.shape)} but the model "
                                  f"expects {tuple(expected[name].shape)}; the config does not match")
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


class _DcpMetadataUnpickler(pickle.Unpickler):
    """Only the classes torch.distributed.checkpoint's metadata is made of; anything else is refused."""

    def find_class(self, module: str, name: str):
        allowed = "." not in name and (  # a dotted name would walk attributes to anything reachable
            module == "torch.distributed.checkpoint.metadata"
            or (module, name) in {("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
                                  ("torch", "Size"), ("torch.serialization", "_get_layout"),
                                  ("collections", "OrderedDict")}
            or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))
            or (module == "pathlib" and name in ("Path", "PosixPath", "PurePosixPath", "WindowsPath")))
        obj = super().find_class(module, name) if allowed else None
        if obj is None or (module == "torch.distributed.checkpoint.metadata" and not isinstance(obj, type)):
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")
        return obj


def _vet_dcp_metadata(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            _DcpMetadataUnpickler(f).load()
    except Exception as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"it pickles {found.group(1)}" if found else f"{type(err).__name__}: {err}"
        raise CheckpointError(f"{path} was refused: it is not plain distributed-checkpoint metadata ({what}); "
                              "a checkpoint from elsewhere may hold pickled code") from None


def latest_valid_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files verify; damaged newer ones are reported and skipped."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            verify(ckpt)
            return ckpt
        except CheckpointError as err:
            log.warning("skipping damaged checkpoint: %s", err)
    return None


def read_run_config(run_dir: Path) -> dict:
    return _read_json(Path(run_dir) / "config.json", f"does not exist: {run_dir} is not a lab run")


def load_run(run_dir: Path, device: str | torch.device = "cpu", step: int | None = None):
    """(model, tokenizer) of a lab run at its latest valid checkpoint (or `step`), in eval mode."""
    from llama_core.tokenizer import SentencePieceTokenizer

    run_dir = Path(run_dir)
    try:
        cfg = ModelConfig.from_dict(read_run_config(run_dir)["model"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        raise CheckpointError(f"{run_dir / 'config.json'} does not describe a model "
                              f"({type(err).__name__}: {err})") from None
    ckpt = checkpoint_dir(run_dir, step) if step is not None else latest_valid_checkpoint(run_dir)
    if ckpt is None:
        if list_checkpoints(run_dir):  # all damaged: say what is wrong with the newest
            verify(list_checkpoints(run_dir)[-1])
        raise CheckpointError(f"{run_dir} has no complete checkpoint yet; train it first")
    tokenizer = SentencePieceTokenizer.load(run_dir / "tokenizer.model")
    if tokenizer.vocab_size != cfg.vocab_size:
        raise CheckpointError(f"{run_dir / 'tokenizer.model'} has {tokenizer.vocab_size} pieces but the "
                              f"model's vocabulary is {cfg.vocab_size}")
    verify(ckpt)
    _check_weights_fit(ckpt / WEIGHTS, cfg, run_dir / "config.json")
    model = Transformer(cfg)
    load_weights(ckpt, model)
    return model.to(device).eval(), tokenizer


def _check_weights_fit(path: Path, cfg: ModelConfig, config_path: Path) -> None:
    """The weights file's header agrees with the config, read before a model of that config is built:
    a damaged config then cannot make the loader allocate more memory than the weights themselves take."""
    from safetensors import safe_open

    from llama_core.formats.common import check_plausible, expected_shapes

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); "
                              "it may be truncated: use an earlier checkpoint") from None
    check_plausible(cfg, len(shapes), str(config_path))
    for name, shape in expected_shapes(cfg).items():
        if name == "output.weight" and cfg.tie_embeddings:
            continue
        if shapes.get(name) != shape:
            found = "is missing" if name not in shapes else f"has shape {list(shapes[name])}"
            raise CheckpointError(f"{path}: {name} {found} but {config_path} implies {list(shape)}; "
                                  "the config does not match the weights")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
