"""The lab's own run folder as a checkpoint format: a trained run's model and tokenizer, for inference.

A run holds the tokenizer it was trained with: the SentencePiece `tokenizer.model` a pretraining run
trains, or, for a finetune of SmolLM2 or a Hugging Face model, the base's byte-level BPE as
`tokenizer.json`. config.json's `tokenizer` record names the file and keeps what the file itself
does not (bos and eos ids) and its fingerprint; a run without a record (an older one) holds
tokenizer.model. Neither file is ever unpickled.
"""

from __future__ import annotations

import os

import torch

from llama_core.checkpoint import load_weights, weight_shapes
from llama_core.formats.bpe import BPETokenizer
from llama_core.model import Transformer
from llama_core.run_folder import (
    TOKENIZER,
    TOKENIZER_JSON,
    WEIGHTS,
    CheckpointError,
    RunFolder,
    check_weights_fit,
    verify,
)
from llama_core.tokenizer import SentencePieceTokenizer, Tokenizer

# config.json: the Jinja chat template of a finetune's base, when it has one (exported with the run)
TEMPLATE_TEXT = "chat_template_text"


def save_run_tokenizer(run: RunFolder, tokenizer: Tokenizer) -> dict:
    """Write the run's tokenizer (SentencePiece as tokenizer.model, byte-level BPE as tokenizer.json)
    and return the record config.json keeps of it under `tokenizer`."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        path = run.tokenizer_path
    elif isinstance(tokenizer, BPETokenizer):
        path = run.tokenizer_json_path
    else:
        raise ValueError(f"a run folder holds a SentencePiece or byte-level BPE tokenizer, not a "
                         f"{type(tokenizer).__name__}")
    tokenizer.save(path)
    return {"path": path.name, "fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size,
            "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id}


def load_run_tokenizer(run: RunFolder) -> Tokenizer:
    """The tokenizer a run holds, by its config.json record, checked against the fingerprint recorded."""
    record = run.read_config().get("tokenizer") or {"path": TOKENIZER}
    name = record.get("path")
    if name is None:
        raise CheckpointError(f"{run.config_path} records no tokenizer file: a LoRA run uses its base's "
                              "tokenizer; load it with llama_core.formats.load_model")
    if name not in (TOKENIZER, TOKENIZER_JSON):
        raise CheckpointError(f"{run.config_path}: tokenizer {name!r} is neither {TOKENIZER} nor {TOKENIZER_JSON}")
    path = run.path / name
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: copy the tokenizer the run was trained with into it "
                              "(for a finetune, its base's)")
    if name == TOKENIZER:
        tokenizer: Tokenizer = SentencePieceTokenizer.load(path)
    else:
        try:
            tokenizer = BPETokenizer.from_file(path, record.get("bos_id"), record.get("eos_id"))
        except ValueError as err:
            raise CheckpointError(f"{err}: the file is damaged; copy the base's tokenizer.json into "
                                  f"{run.path}") from None
    recorded = record.get("fingerprint")
    if recorded is not None and tokenizer.fingerprint != recorded:
        raise CheckpointError(f"{path} is not the tokenizer the run was trained with (fingerprint "
                              f"{tokenizer.fingerprint}, recorded {recorded}); restore the run's own")
    return tokenizer


def recorded_template_text(run_dir: str | os.PathLike) -> str | None:
    """The Jinja chat template a finetuned run keeps from its base (None for most runs)."""
    return RunFolder(run_dir).read_config().get(TEMPLATE_TEXT)


def load_lab(run_dir: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
             step: int | None = None) -> tuple[Transformer, Tokenizer]:
    """(model, tokenizer) of a lab run at its latest valid checkpoint (or `step`), in eval mode."""
    run = RunFolder(run_dir)
    cfg = run.model_config()
    ckpt = run.checkpoint_dir(step) if step is not None else run.latest_valid_checkpoint()
    if ckpt is None:
        if run.checkpoints():  # all damaged: say what is wrong with the newest
            verify(run.checkpoints()[-1])
        raise CheckpointError(f"{run.path} has no complete checkpoint yet; train it first")
    tokenizer = load_run_tokenizer(run)
    if tokenizer.vocab_size > cfg.vocab_size:  # fewer is a padded vocabulary (a Hugging Face base's)
        raise CheckpointError(f"{tokenizer.source} has {tokenizer.vocab_size} pieces but the "
                              f"model's vocabulary is {cfg.vocab_size}")
    verify(ckpt)
    # the header alone, before a model of that config is built
    check_weights_fit(weight_shapes(ckpt), cfg, f"{ckpt / WEIGHTS} (with {run.config_path})")
    model = Transformer(cfg)
    load_weights(ckpt, model)
    model = model.to(device).eval()
    return (model if dtype is None else model.to(dtype)), tokenizer
