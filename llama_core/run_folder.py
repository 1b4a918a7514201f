"""The lab's run folder on disk: the one module that knows its file names and layout.

    runs/NAME/
        config.json          the run record: spec, model and train configs, tokenizer, hardware, status
        metrics.jsonl        a line per logged step (a line cut by a crash is skipped when read)
        evals.jsonl          a line per `lab eval --suite` of the run (lines written by lab/evals/records.py)
        tokenizer.model      the run's SentencePiece tokenizer, or
        tokenizer.json       a finetune's byte-level BPE one (its base's: SmolLM2, a Hugging Face model);
                             config.json's `tokenizer` names which, with its bos/eos ids and fingerprint
        checkpoints/step_0000200/
            model.safetensors    weights (a tied output matrix stored once)
            optimizer.pt         optimizer and RNG states (torch.load(weights_only=True))
            dcp/                 a sharded model and optimizer instead (llama_core/distributed.py)
            state.json           step, tokens, data position, tokenizer fingerprint, checksums
    runs/bench/KIND.jsonl    benchmark records, a line per measurement

A checkpoint is written into a hidden temporary folder and renamed into place (`seal`), so a
folder named step_* is always complete; its checksums catch files damaged afterwards. Every
weights file, whatever its format, is checked against its config by `check_weights_fit`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import platform
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from llama_core.atomic import atomic_write_json, atomic_write_text, fsync_dir, write_synced
from llama_core.config import ModelConfig

log = logging.getLogger(__name__)

CONFIG, METRICS, TOKENIZER, CHECKPOINTS = "config.json", "metrics.jsonl", "tokenizer.model", "checkpoints"
EVALS = "evals.jsonl"
TOKENIZER_JSON = "tokenizer.json"
WEIGHTS, OPTIMIZER, STATE, DCP_DIR = "model.safetensors", "optimizer.pt", "state.json", "dcp"
# torch.distributed.checkpoint reads this file with a plain pickle.load, which would run any code
# in it: `verify` vets it first.
DCP_METADATA = f"{DCP_DIR}/.metadata"
BENCH_DIR = "bench"
# A damaged or hostile header must not make a loader allocate more than the weights themselves:
# rotary tables are built for the whole context, and the expected weights are listed per layer.
MAX_SEQ_LEN = 1 << 20


class CheckpointError(ValueError):
    """A run, checkpoint or weights file that cannot be used; the message names the file and what to do."""


class RunFolder:
    """runs/NAME/: the run record, its metrics and its checkpoints."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config_path = self.path / CONFIG
        self.metrics_path = self.path / METRICS
        self.tokenizer_path = self.path / TOKENIZER
        self.tokenizer_json_path = self.path / TOKENIZER_JSON
        self.checkpoints_path = self.path / CHECKPOINTS
        self.evals_path = self.path / EVALS

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def is_run(self) -> bool:
        """Whether the folder holds a run record (it may have no checkpoint yet)."""
        return self.config_path.is_file()

    # ------------------------------------------------------------------------------ the record

    def read_config(self) -> dict:
        """config.json; FileNotFoundError when the folder is not a run, CheckpointError when damaged."""
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.config_path} does not exist: {self.path} is not a lab run")
        return read_json(self.config_path)

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, config)

    def update_config(self, **fields) -> None:
        self.write_config({**self.read_config(), **fields})

    def model_config(self) -> ModelConfig:
        try:
            return ModelConfig.from_dict(self.read_config()["model"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"{self.config_path} does not describe a model "
                                  f"({type(err).__name__}: {err})") from None

    # ------------------------------------------------------------------------------- metrics

    def append(self, metrics: dict) -> None:
        """Log one step's metrics (the training loop's sink)."""
        append_jsonl(self.metrics_path, metrics)

    def read_metrics(self) -> list[dict]:
        """Every complete metrics line ([] when there are none yet)."""
        return read_jsonl(self.metrics_path)

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step` (they belong to a future the resume will redo)."""
        kept = [m for m in self.read_metrics() if m["step"] <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(m, sort_keys=True) + "\n" for m in kept))

    # --------------------------------------------------------------------------- checkpoints

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_path / f"step_{step:07d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.checkpoints_path.is_dir():
            return []
        return sorted(p for p in self.checkpoints_path.glob("step_*") if p.is_dir() and (p / STATE).exists())

    def latest_valid_checkpoint(self) -> Path | None:
        """The newest checkpoint whose files verify; damaged newer ones are reported and skipped."""
        for ckpt in reversed(self.checkpoints()):
            try:
                verify(ckpt)
                return ckpt
            except CheckpointError as err:
                log.warning("skipping damaged checkpoint: %s", err)
        return None

    def staging_dir(self, step: int, create: bool = True) -> Path:
        """The hidden folder checkpoint `step` is written into before `seal` renames it into place;
        `create` empties it first (in a sharded save, rank 0 alone does)."""
        final = self.checkpoint_dir(step)
        tmp = final.parent / f".{final.name}.tmp"
        if create:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        return tmp

    def seal(self, tmp: Path, step: int, state: dict) -> Path:
        """Checksum and fsync every file in `tmp`, write state.json, and rename it to checkpoint `step`."""
        final = self.checkpoint_dir(step)
        files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != STATE)
        state = dict(state, step=step, checksums={p.relative_to(tmp).as_posix(): sha256(p, sync=True)
                                                  for p in files})
        write_synced(tmp / STATE, json.dumps(state, indent=2, sort_keys=True).encode())
        if final.exists():  # a re-save of the same step (after a resume): replace it whole
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        return final

    def prune(self, keep: int) -> None:
        """Delete all but the newest `keep` checkpoints."""
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------ checkpoint folders

def read_state(ckpt: Path) -> dict:
    return read_json(Path(ckpt) / STATE, f"is missing: {ckpt} is not a complete checkpoint")


def verify(ckpt: Path) -> dict:
    """Check every file against the checksums in state.json; return the state."""
    state = read_state(ckpt)
    for name, expected in state.get("checksums", {}).items():
        path = Path(ckpt) / name
        if not path.exists():
            raise CheckpointError(f"{path} is missing; use an earlier checkpoint")
        if sha256(path) != expected:
            raise CheckpointError(f"{path} is damaged (its checksum does not match state.json); "
                                  "use an earlier checkpoint")
    if (Path(ckpt) / DCP_METADATA).is_file():
        _vet_dcp_metadata(Path(ckpt) / DCP_METADATA)
    return state


def sha256(path: Path, sync: bool = False) -> str:
    """The file's SHA-256 (read in 1 MiB blocks); with `sync`, its data is also flushed to disk."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        if sync:
            os.fsync(f.fileno())
    return h.hexdigest()


def read_json(path: Path, missing: str | None = None) -> dict:
    """A JSON object from a file, with errors that name it: FileNotFoundError when absent (or a
    CheckpointError ending in `missing`), CheckpointError when it is not a JSON object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        if missing is None:
            raise FileNotFoundError(f"{path} does not exist") from None
        raise CheckpointError(f"{path} {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


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


# ---------------------------------------------------------------------- weights against config

def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of a Transformer with this config and its shape (the tied output included)."""
    d, hd, kv = cfg.dim, cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "tok_embeddings.weight": (cfg.vocab_size, d), "norm.weight": (d,), "output.weight": (cfg.vocab_size, d)}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        shapes.update({
            p + "attention.wq.weight": (cfg.n_heads * hd, d), p + "attention.wk.weight": (kv, d),
            p + "attention.wv.weight": (kv, d), p + "attention.wo.weight": (d, cfg.n_heads * hd),
            p + "feed_forward.w1.weight": (cfg.hidden_dim, d), p + "feed_forward.w2.weight": (d, cfg.hidden_dim),
            p + "feed_forward.w3.weight": (cfg.hidden_dim, d),
            p + "attention_norm.weight": (d,), p + "ffn_norm.weight": (d,),
        })
    return shapes


def check_weights_fit(shapes: Mapping[str, Sequence[int]], cfg: ModelConfig, source: str) -> None:
    """The weights (name -> shape, Meta names) are exactly those `cfg` implies; else CheckpointError.

    Called before a model is built, so a damaged config cannot make a loader allocate more memory
    than the weights themselves take. With tied embeddings, `output.weight` may be absent.
    """
    if cfg.max_seq_len > MAX_SEQ_LEN:
        raise CheckpointError(f"{source}: a context of {cfg.max_seq_len:,} tokens is beyond the {MAX_SEQ_LEN:,} "
                              "this lab builds rotary tables for; the file is damaged or not meant for this lab")
    if cfg.n_layers > len(shapes):  # every layer has 9 weights
        raise CheckpointError(f"{source}: the config has {cfg.n_layers:,} layers but the file holds only "
                              f"{len(shapes)} weights; the config is damaged or describes a different model")
    expected = expected_shapes(cfg)
    found = {name: tuple(shape) for name, shape in shapes.items()}
    if cfg.tie_embeddings:
        expected.pop("output.weight")
        found.pop("output.weight", None)
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"{source}: weights missing for {missing[:5]}{more}; the checkpoint is incomplete "
                              "or its config describes a different model")
    if extra:
        raise CheckpointError(f"{source}: unexpected weights {extra[:5]}; the config (n_layers="
                              f"{cfg.n_layers}) describes a different model")
    for name, shape in expected.items():
        if found[name] != shape:
            raise CheckpointError(f"{source}: {name} has shape {list(found[name])} but the config implies "
                                  f"{list(shape)} (a shard missing, or a config that disagrees with the weights)")


# ------------------------------------------------------------------------------- JSON lines

def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line and fsync it (a crash leaves at most one partial last line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON line of a file ([] if it does not exist); a line cut by a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
    return rows


def bench_path(runs_dir: str | os.PathLike, kind: str) -> Path:
    """runs/bench/KIND.jsonl: where `python -m lab bench KIND` appends and the app reads."""
    return Path(runs_dir) / BENCH_DIR / f"{kind}.jsonl"


def bench_record(kind: str, fields: dict, hardware: dict) -> dict:
    """One benchmark measurement in the shared envelope: kind, hardware, host and UTC time."""
    return {"bench": kind, **fields, "hardware": hardware, "host": platform.node(),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
