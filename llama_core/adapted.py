"""A finetuned run's record: its base (path and content hash), its chat template, and its LoRA
adapters, which are loaded onto the base and merged, so a LoRA run loads like any other run.

The keys below are written by lab.finetune and read here and by llama_core.formats.load_model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from llama_core.run_folder import WEIGHTS, CheckpointError, RunFolder, read_state, sha256

BASE, TEMPLATE, ADD_BOS, LORA = "base", "chat_template", "add_bos", "lora"


def content_hash(path: str | os.PathLike) -> str:
    """What identifies a base's weights: a lab run's latest checkpoint weights checksum, a file's
    SHA-256, or for a folder the SHA-256 over its files' names and SHA-256s."""
    path = Path(path)
    run = RunFolder(path)
    if run.is_run() and run.checkpoints_path.is_dir():  # a Hugging Face folder has a config.json too
        ckpt = run.latest_valid_checkpoint()
        if ckpt is None:
            raise CheckpointError(f"{path} has no usable checkpoint to finetune")
        return read_state(ckpt)["checksums"][WEIGHTS]
    if path.is_file():
        return sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(f"{f.name}:{sha256(f)}\n".encode())
    return h.hexdigest()


def base_record(path: str | os.PathLike, fmt: str) -> dict:
    path = Path(path).resolve()
    return {"path": str(path), "format": fmt, "sha256": content_hash(path)}


def recorded_chat(run_dir: str | os.PathLike) -> tuple[str | None, bool]:
    """(chat template, whether prompts start with bos) a finetuned run was trained with; (None, True)
    for a pretraining run."""
    config = RunFolder(run_dir).read_config()
    return config.get(TEMPLATE), bool(config.get(ADD_BOS, True))


def is_adapted(run_dir: str | os.PathLike) -> bool:
    """Whether the run's checkpoints hold LoRA adapters rather than whole weights."""
    run = RunFolder(run_dir)
    return run.is_run() and bool(run.read_config().get(LORA))


def load_base(record: dict, device="cpu", dtype: torch.dtype | None = None):
    """The LoadedModel of a recorded base, refused if its weights changed since the run recorded them."""
    from llama_core.formats import load_model

    path = Path(record["path"])
    if not path.exists():
        raise FileNotFoundError(f"the base checkpoint {path} is gone; a LoRA run needs its base: restore it, "
                                "or load a merged export of the run")
    found = content_hash(path)
    if found != record["sha256"]:
        raise CheckpointError(f"the base checkpoint {path} has changed since the run was trained (content hash "
                              f"{found[:12]}, recorded {record['sha256'][:12]}); the adapters fit only the original")
    return load_model(path, device, dtype)


def load_adapted(run_dir: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) of a LoRA run: its base with the latest adapters merged in, in eval mode."""
    from llama_core.checkpoint import read_weights
    from llama_core.lora import LoRAConfig, LoRAModel

    run = RunFolder(run_dir)
    config = run.read_config()
    ckpt = run.latest_valid_checkpoint()
    if ckpt is None:
        raise CheckpointError(f"{run.path} has no complete checkpoint yet; train it first")
    base = load_base(config[BASE], device)
    adapted = LoRAModel(base.model.float(), LoRAConfig.from_dict(config[LORA]))
    adapted.load_adapters(read_weights(ckpt))
    model = adapted.merge().eval()
    return (model if dtype is None else model.to(dtype)), base.tokenizer
