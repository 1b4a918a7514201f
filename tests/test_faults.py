"""Faults during training: kills at random moments, SIGTERM/Ctrl-C, a full disk, non-finite steps."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from lab.experiment import RunSpec, run_training
from lab.records import read_metrics
from llama_core import checkpoint as ckpt
from llama_core.config import TrainConfig
from llama_core.data import shakespeare_files

TIMING_KEYS = {"tokens_per_s", "mfu", "elapsed_s"}
TINY_FLAGS = ["--preset", "lab-1m", "--vocab", "512", "--model.dim=64", "--model.n_layers=2", "--model.n_heads=4",
              "--model.max_seq_len=128", "--train.batch_size=4", "--train.seq_len=64", "--train.log_every=2",
              "--train.eval_every=10", "--train.eval_batches=2", "--train.lr=3e-3", "--quiet"]


@pytest.fixture(scope="module")
def hamlet():
    return str(next(f for f in shakespeare_files() if "hamlet" in f.name))


def _cmd(tmp_path, hamlet, name, steps, checkpoint_every, resume=False):
    cmd = [sys.executable, "-m", "lab", "train", "--data", hamlet, "--tokens", str(steps * 4 * 64), "--name", name,
           "--runs-dir", str(tmp_path / "runs"), f"--train.checkpoint_every={checkpoint_every}", *TINY_FLAGS]
    return cmd + (["--resume"] if resume else [])


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _assert_readable(run_dir):
    json.loads((run_dir / "config.json").read_text())
    read_metrics(run_dir)
    for c in ckpt.list_checkpoints(run_dir):
        ckpt.read_state(c)


def test_random_sigkills_never_lose_work(tmp_path, hamlet):
    """SIGKILL at random moments, many during checkpoint writes (one every step); resume each time."""
    env = dict(os.environ, LLAMA_LAB_CACHE=str(tmp_path / "cache"))
    steps = 24
    subprocess.run(_cmd(tmp_path, hamlet, "reference", steps, 1), env=env, check=True, timeout=300)
    run_dir = tmp_path / "runs" / "victim"
    rng = random.Random(1234)
    kills, during_write, resumed = 0, 0, False
    while kills < 4:
        proc = subprocess.Popen(_cmd(tmp_path, hamlet, "victim", steps, 1, resume=resumed), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start_step = read_metrics(run_dir)[-1]["step"] if resumed and read_metrics(run_dir) else 0
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # wait until this life has made progress
            rows = read_metrics(run_dir) if run_dir.exists() else []
            if rows and rows[-1]["step"] > start_step:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:
            break  # it finished first
        during_write += any(p.name.endswith(".tmp") for p in (run_dir / "checkpoints").glob(".step_*"))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        _assert_readable(run_dir)
        assert ckpt.latest_valid_checkpoint(run_dir) is not None
        resumed = True
    subprocess.run(_cmd(tmp_path, hamlet, "victim", steps, 1, resume=True), env=env, check=True, timeout=300)
    print(f"\nsurvived {kills} SIGKILLs, {during_write} of them with a checkpoint write in flight")
    assert kills >= 2
    assert _strip(read_metrics(run_dir)) == _strip(read_metrics(tmp_path / "runs" / "reference"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_a_checkpoint_before_exiting(tmp_path, hamlet, sig):
    env = dict(os.environ, LLAMA_LAB_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen(_cmd(tmp_path, hamlet, "stopped", 400, 1000), env=env)
    run_dir = tmp_path / "runs" / "stopped"
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = read_metrics(run_dir) if run_dir.exists() else []
        if rows and rows[-1]["step"] >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130
    saved = ckpt.list_checkpoints(run_dir)
    assert len(saved) == 1  # checkpoint_every=1000: only the stop made one
    state = ckpt.verify(saved[0])
    assert state["step"] == read_metrics(run_dir)[-1]["step"] >= 6
    assert json.loads((run_dir / "config.json").read_text())["status"] == "interrupted"


def _spec(name, hamlet, steps, **train):
    cfg = dict(batch_size=4, seq_len=64, eval_every=50, eval_batches=2, log_every=1, checkpoint_every=5, lr=3e-3)
    cfg.update(train)
    return RunSpec(name=name, preset="lab-1m", data=hamlet, vocab_size=512,
                   model_overrides={"dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128},
                   train=TrainConfig(tokens=steps * 4 * 64, **cfg))


@pytest.fixture
def small_disk(tmp_path):
    """A 2.5 MB tmpfs where the machine allows mounting one (root); otherwise None."""
    mount = tmp_path / "disk"
    mount.mkdir()
    ok = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2600k", "tmpfs", str(mount)],
                                              capture_output=True).returncode == 0
    yield mount if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # lazy: never leave it behind


def test_full_disk_fails_clearly_and_keeps_the_previous_checkpoint(tmp_path, hamlet, small_disk, monkeypatch):
    if small_disk is None:  # no real small filesystem here: inject the error the kernel would give
        real_write = ckpt.write_synced
        calls = {"n": 0}

        def write_synced(path, data):
            calls["n"] += 1
            if calls["n"] > 3:  # the first checkpoint's three files fit, the second's do not
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(path, data)

        monkeypatch.setattr(ckpt, "write_synced", write_synced)
    runs = small_disk or tmp_path / "runs"
    spec = _spec("full", hamlet, steps=20, keep_checkpoints=3)
    with pytest.raises(ckpt.CheckpointError, match="no space left on the device.*previous checkpoint .* intact"):
        run_training(spec, runs, progress=False, cache_dir=tmp_path / "cache")
    run_dir = runs / "full"
    saved = ckpt.list_checkpoints(run_dir)
    assert [c.name for c in saved] == ["step_0000005"]
    assert not list((run_dir / "checkpoints").glob(".step_*"))  # the half-written one is cleaned away
    ckpt.verify(saved[0])
    model, _ = ckpt.load_run(run_dir)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_steps_are_skipped_then_the_run_stops(tmp_path, hamlet, monkeypatch):
    import llama_core.train as train_module

    poisoned = set(range(6, 8)) | set(range(12, 100))  # a two-step blip, then a blow-up that lasts
    real_step = train_module.train_step

    def train_step(state, cfg, device, dtype=torch.float32):
        if state.step in poisoned:  # a numerical fault: the forward pass produces NaN
            handle = state.model.norm.register_forward_hook(lambda m, i, o: o * float("nan"))
            try:
                return real_step(state, cfg, device, dtype)
            finally:
                handle.remove()
        return real_step(state, cfg, device, dtype)

    monkeypatch.setattr(train_module, "train_step", train_step)
    spec = _spec("nan", hamlet, steps=40, max_bad_steps=4, checkpoint_every=10)
    with pytest.raises(RuntimeError, match="4 steps in a row had a non-finite loss"):
        run_training(spec, tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache")
    rows = read_metrics(tmp_path / "runs" / "nan")
    skipped = [r["step"] for r in rows if r.get("skipped")]
    assert skipped == [7, 8, 13, 14, 15, 16]
    good = [r for r in rows if not r.get("skipped")]
    assert all(r["train_loss"] == r["train_loss"] for r in good)  # no NaN reached the record
    last = ckpt.list_checkpoints(tmp_path / "runs" / "nan")[-1]
    assert ckpt.read_state(last)["step"] == 16
    model, _ = ckpt.load_run(tmp_path / "runs" / "nan")
    assert all(torch.isfinite(p).all() for p in model.parameters())
