"""Training on real Shakespeare: the loss falls, accumulation is exact, resume is bit-identical."""

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import TINY, held_env, resume_curve, wait_until_held
from lab.experiment import RunSpec, apply_overrides, run_training
from lab.records import read_metrics
from llama_core import checkpoint as ckpt
from llama_core import run_folder
from llama_core.config import TrainConfig
from llama_core.data import BatchSampler, Mixture, shakespeare_files
from llama_core.formats.lab import load_lab
from llama_core.model import Transformer
from llama_core.run_folder import RunFolder
from llama_core.train import build_state, train_step

TINY_MODEL = {"dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128}


@pytest.fixture(scope="module")
def hamlet():
    return str(next(f for f in shakespeare_files() if "hamlet" in f.name))


def _spec(name, data, tokens, **train):
    cfg = dict(batch_size=8, seq_len=64, eval_every=50, eval_batches=4, log_every=10,
               checkpoint_every=50, lr=3e-3)
    cfg.update(train)
    return RunSpec(name=name, preset="lab-1m", data=data, vocab_size=512, model_overrides=TINY_MODEL,
                   train=TrainConfig(tokens=tokens, **cfg))


def test_loss_falls_on_real_shakespeare(tmp_path, hamlet):
    spec = _spec("falls", hamlet, tokens=150 * 8 * 64)
    result = run_training(spec, tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache")
    metrics = read_metrics(tmp_path / "runs" / "falls")
    assert result.status == "finished" and result.step == 150
    first, last = metrics[0]["train_loss"], metrics[-1]["train_loss"]
    assert first - last > 1.0, (first, last)  # nats; ln(512) = 6.2 at the start
    evals = [m for m in metrics if "val_loss" in m]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.2
    assert evals[-1]["val_loss"] < math.log(512) - 1.5  # far below the uniform guess on held-out text
    assert 0 < evals[-1]["val_bpb"] < 8
    config = json.loads((tmp_path / "runs" / "falls" / "config.json").read_text())
    assert config["status"] == "finished" and config["params"] > 0
    assert config["tokenizer"]["vocab_size"] == 512 and config["hardware"]["device"] == "cpu"


class Rows:
    """Feeds fixed rows `batch` at a time."""

    def __init__(self, x, y, batch):
        self.x, self.y, self.batch, self.position = x, y, batch, 0

    def __next__(self):
        i, b = self.position, self.batch
        self.position += 1
        return self.x[i * b:(i + 1) * b], self.y[i * b:(i + 1) * b]


def test_accumulated_microbatches_equal_one_big_batch(tmp_path, hamlet, sp_tokenizer):
    mixture = Mixture.build(hamlet, sp_tokenizer, tmp_path / "cache", progress=False)
    cfg = TINY.replace(vocab_size=sp_tokenizer.vocab_size)
    params = {}
    for batch, accum in ((8, 1), (2, 4)):
        torch.manual_seed(0)
        model = Transformer(cfg)
        train_cfg = TrainConfig(tokens=8 * 32 * 10, batch_size=batch, seq_len=32, tokens_per_step=8 * 32)
        big = BatchSampler(mixture, 8, 32, seed=1)
        x, y = big.batch_at(0)

        state = build_state(model, train_cfg, Rows(x, y, batch))  # the same 8 rows, as 1 x 8 or 4 x 2
        assert train_cfg.grad_accum == accum
        train_step(state, train_cfg, torch.device("cpu"))
        params[accum] = [p.grad.clone() for p in model.parameters()]
    # The gradients are the invariant: the same sum in another order, so equal to float32 rounding
    # relative to each tensor's scale. Parameters after AdamW's first step are not: there the update is
    # about lr * sign(g), and a gradient that is zero but for rounding may take either sign.
    for a, b in zip(params[1], params[4]):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max() + 1e-12


def _train_cmd(tmp_path, hamlet, name, resume=False):
    cmd = [sys.executable, "-m", "lab", "train", "--preset", "lab-1m", "--data", hamlet, "--vocab", "512",
           "--tokens", str(60 * 4 * 64), "--name", name, "--runs-dir", str(tmp_path / "runs"), "--quiet",
           "--model.dim=64", "--model.n_layers=2", "--model.n_heads=4", "--model.max_seq_len=128",
           "--train.batch_size=4", "--train.seq_len=64", "--train.log_every=5", "--train.eval_every=20",
           "--train.eval_batches=2", "--train.checkpoint_every=10", "--train.lr=3e-3"]
    return cmd + (["--resume"] if resume else [])


def test_killed_run_resumes_bit_identically(tmp_path, hamlet):
    env = dict(os.environ, LLAMA_LAB_CACHE=str(tmp_path / "cache"))
    subprocess.run(_train_cmd(tmp_path, hamlet, "reference"), env=env, check=True, timeout=300)
    # held after step 27 (between the checkpoints of steps 20 and 30, after the log line of step 25)
    # and killed there, whatever the machine's speed
    marker = tmp_path / "held"
    victim = subprocess.Popen(_train_cmd(tmp_path, hamlet, "victim"), env=held_env(env, "step-done", 27, marker))
    metrics = tmp_path / "runs" / "victim" / "metrics.jsonl"
    wait_until_held(victim, marker)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = read_metrics(metrics.parent)[-1]["step"]
    assert 25 <= killed_at < 60
    assert RunFolder(metrics.parent).latest_valid_checkpoint() is not None
    subprocess.run(_train_cmd(tmp_path, hamlet, "victim", resume=True), env=env, check=True, timeout=300)
    reference = resume_curve(read_metrics(tmp_path / "runs" / "reference"))
    resumed = resume_curve(read_metrics(metrics.parent))
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    assert resumed == reference  # bit-identical losses, lr, tokens and gradient norms


def test_corrupt_checkpoint_is_named_and_the_previous_one_loads(tmp_path, hamlet):
    spec = _spec("ck", hamlet, tokens=40 * 8 * 64, checkpoint_every=20, keep_checkpoints=3)
    run_training(spec, tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache")
    run_dir = tmp_path / "runs" / "ck"
    older, newest = RunFolder(run_dir).checkpoints()
    weights = newest / run_folder.WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncate it
    with pytest.raises(run_folder.CheckpointError, match=str(weights)):
        run_folder.verify(newest)
    with pytest.raises(run_folder.CheckpointError, match="model.safetensors"):
        ckpt.load_weights(newest, Transformer(spec.model_config(512)))
    assert RunFolder(run_dir).latest_valid_checkpoint() == older
    model, tokenizer = load_lab(run_dir)
    assert model.config.vocab_size == tokenizer.vocab_size == 512


@pytest.mark.parametrize("change, message", [
    (dict(preset="llama-8b"), "unknown preset"),
    (dict(data="no-such-corpus"), "neither a built-in source"),
    (dict(train=TrainConfig(tokens=8192, batch_size=2, seq_len=4096)), "exceeds the model's context"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, hamlet, change, message):
    import dataclasses

    spec = dataclasses.replace(_spec("bad", hamlet, tokens=8192), **change)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_training(spec, tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "runs" / "bad").exists()


def test_empty_corpus_and_bad_overrides(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    spec = _spec("empty", str(tmp_path / "empty.txt"), tokens=8192)
    with pytest.raises(ValueError, match="empty"):
        run_training(spec, tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "runs" / "empty").exists()
    with pytest.raises(ValueError, match="has no field 'lrr'"):
        apply_overrides(spec, {"train.lrr": "1"})
    with pytest.raises(ValueError, match="expected float"):
        apply_overrides(spec, {"train.lr": "fast"})
    assert apply_overrides(spec, {"train.lr": "1e-3", "model.dim": "96"}).train.lr == 1e-3
