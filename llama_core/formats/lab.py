"""The lab's own run folder as a checkpoint format: a trained run's model and tokenizer, for inference."""

from __future__ import annotations

import os

import torch

from llama_core.checkpoint import load_weights, weight_shapes
from llama_core.model import Transformer
from llama_core.run_folder import WEIGHTS, CheckpointError, RunFolder, check_weights_fit, verify
from llama_core.tokenizer import SentencePieceTokenizer


def load_lab(run_dir: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
             step: int | None = None) -> tuple[Transformer, SentencePieceTokenizer]:
    """(model, tokenizer) of a lab run at its latest valid checkpoint (or `step`), in eval mode."""
    run = RunFolder(run_dir)
    cfg = run.model_config()
    ckpt = run.checkpoint_dir(step) if step is not None else run.latest_valid_checkpoint()
    if ckpt is None:
        if run.checkpoints():  # all damaged: say what is wrong with the newest
            verify(run.checkpoints()[-1])
        raise CheckpointError(f"{run.path} has no complete checkpoint yet; train it first")
    tokenizer = SentencePieceTokenizer.load(run.tokenizer_path)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise CheckpointError(f"{run.tokenizer_path} has {tokenizer.vocab_size} pieces but the "
                              f"model's vocabulary is {cfg.vocab_size}")
    verify(ckpt)
    # the header alone, before a model of that config is built
    check_weights_fit(weight_shapes(ckpt), cfg, f"{ckpt / WEIGHTS} (with {run.config_path})")
    model = Transformer(cfg)
    load_weights(ckpt, model)
    model = model.to(device).eval()
    return (model if dtype is None else model.to(dtype)), tokenizer

