"""Faults during training: kills inside checkpoint writes, SIGTERM/Ctrl-C, a full disk, a file-size limit,
non-finite steps.

Kills land where the test says: the run is held at a named point of a checkpoint write
(llama_core/hold.py) and killed there, never at a moment raced against the clock.
"""

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys

import pytest
import torch

from conftest import held_env, resume_curve, stop_while_held, wait_until_held
from lab.experiment import RunSpec, run_training
from llama_core.config import TrainConfig
from llama_core.data import shakespeare_files
from llama_core.formats.lab import load_lab
from llama_core.hold import POINTS
from llama_core.run_folder import WEIGHTS, CheckpointError, RunFolder, read_state, verify

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


def _assert_readable(run: RunFolder):
    json.loads(run.config_path.read_text())
    run.read_metrics()
    for c in run.checkpoints():
        read_state(c)


def test_sigkills_inside_checkpoint_writes_never_lose_work(tmp_path, hamlet):
    """SIGKILL at every stage of a checkpoint write and between steps, in a seeded order at seeded steps
    (a checkpoint every step); resume each time, and the finished run equals one never killed."""
    env = dict(os.environ, LLAMA_LAB_CACHE=str(tmp_path / "cache"))
    steps = 24
    subprocess.run(_cmd(tmp_path, hamlet, "reference", steps, 1), env=env, check=True, timeout=300)
    run = RunFolder(tmp_path / "runs" / "victim")
    rng = random.Random(1234)
    plan = list(POINTS)
    rng.shuffle(plan)
    saved, mid_write = 0, 0  # the newest complete checkpoint's step; kills inside an unfinished write
    for life, point in enumerate(plan):
        step = max(2, saved + rng.randint(1, 3))  # >= 2: a complete checkpoint exists before the first kill
        marker = tmp_path / f"held-{life}"
        proc = subprocess.Popen(_cmd(tmp_path, hamlet, "victim", steps, 1, resume=life > 0),
                                env=held_env(env, point, step, marker),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_held(proc, marker)
            staging = run.staging_dir(step, create=False)
            if point == "checkpoint-sealed":
                assert not staging.exists() and (run.checkpoint_dir(step) / WEIGHTS).exists()
            elif point == "step-done":  # the step is trained, its checkpoint not yet begun (a hidden folder
                assert not run.checkpoint_dir(step).exists()  # may be left from an earlier life's kill)
            else:  # the kill lands inside the write: its hidden folder holds some of the files
                assert (staging / WEIGHTS).exists() and not run.checkpoint_dir(step).exists()
                mid_write += 1
        finally:
            proc.send_signal(signal.SIGKILL)  # the fault under test (and the clean-up if an assertion failed)
            proc.wait()
        _assert_readable(run)
        saved = step if point == "checkpoint-sealed" else step - 1
        assert read_state(run.latest_valid_checkpoint())["step"] == saved
    subprocess.run(_cmd(tmp_path, hamlet, "victim", steps, 1, resume=True), env=env, check=True, timeout=300)
    print(f"\nsurvived {len(plan)} SIGKILLs, {mid_write} of them inside an unfinished checkpoint write")
    assert mid_write == 2  # checkpoint-weights and checkpoint-files
    assert not list(run.checkpoints_path.glob(".step_*"))  # every half-written folder was redone and sealed
    reference = RunFolder(tmp_path / "runs" / "reference").read_metrics()
    assert resume_curve(run.read_metrics()) == resume_curve(reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_a_checkpoint_before_exiting(tmp_path, hamlet, sig):
    env = dict(os.environ, LLAMA_LAB_CACHE=str(tmp_path / "cache"))
    marker = tmp_path / "held"
    proc = subprocess.Popen(_cmd(tmp_path, hamlet, "stopped", 400, 1000), env=held_env(env, "step-done", 6, marker),
                            stderr=subprocess.PIPE, text=True)
    run = RunFolder(tmp_path / "runs" / "stopped")
    try:
        wait_until_held(proc, marker)
        stop_while_held(proc, sig, marker)  # after step 6: the run must stop right there
        proc.communicate(timeout=120)
        assert proc.returncode == 130
    finally:
        proc.kill()
        proc.wait()
    saved = run.checkpoints()
    assert len(saved) == 1  # checkpoint_every=1000: only the stop made one
    state = verify(saved[0])
    assert state["step"] == run.read_metrics()[-1]["step"] == 6
    assert run.read_config()["status"] == "interrupted"


def _spec(name, hamlet, steps, **train):
    cfg = dict(batch_size=4, seq_len=64, eval_every=50, eval_batches=2, log_every=1, checkpoint_every=5, lr=3e-3)
    cfg.update(train)
    return RunSpec(name=name, preset="lab-1m", data=hamlet, vocab_size=512,
                   model_overrides={"dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128},
                   train=TrainConfig(tokens=steps * 4 * 64, **cfg))


def _assert_only_the_first_checkpoint_survives(run: RunFolder):
    """After a failed second write: step 5 complete and loadable, nothing half-written left."""
    assert [c.name for c in run.checkpoints()] == ["step_0000005"]
    assert not list(run.checkpoints_path.glob(".step_*"))  # the half-written one is cleaned away
    verify(run.checkpoints()[0])
    model, _ = load_lab(run.path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.fixture
def small_disk(tmp_path):
    """A real 2.5 MB tmpfs: a run's first checkpoint fits on it, its second does not."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the RLIMIT_FSIZE test below covers the same error path")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2600k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the RLIMIT_FSIZE test covers the "
                    "same error path")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)  # lazy: never leave it behind


def test_full_disk_fails_clearly_and_keeps_the_previous_checkpoint(tmp_path, hamlet, small_disk):
    spec = _spec("full", hamlet, steps=20, keep_checkpoints=3)
    with pytest.raises(CheckpointError, match="no space left on the device.*previous checkpoint .* intact"):
        run_training(spec, small_disk, progress=False, cache_dir=tmp_path / "cache")
    _assert_only_the_first_checkpoint_survives(RunFolder(small_disk / "full"))


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="resource.prlimit (Linux) sets another process's limit")
def test_a_file_size_limit_fails_clearly_and_keeps_the_previous_checkpoint(tmp_path, hamlet):
    """The kernel refuses the second checkpoint: a real RLIMIT_FSIZE put on the run once its first is sealed."""
    env = dict(os.environ, LLAMA_LAB_CACHE=str(tmp_path / "cache"))
    marker = tmp_path / "held"
    proc = subprocess.Popen(_cmd(tmp_path, hamlet, "limited", 20, 5),
                            env=held_env(env, "checkpoint-sealed", 5, marker), stderr=subprocess.PIPE, text=True)
    try:
        wait_until_held(proc, marker)
        limit = 64 * 1024  # metrics lines stay under it; a checkpoint's weights (about 0.7 MB) do not
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
        marker.unlink()  # let it go on
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 2, err
    assert re.search(r"could not write checkpoint \S+step_0000010 \(.*File too large.*\); the previous "
                     r"checkpoint \S+step_0000005 is intact", err), err
    _assert_only_the_first_checkpoint_survives(RunFolder(tmp_path / "runs" / "limited"))


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
    rows = RunFolder(tmp_path / "runs" / "nan").read_metrics()
    skipped = [r["step"] for r in rows if r.get("skipped")]
    assert skipped == [7, 8, 13, 14, 15, 16]
    good = [r for r in rows if not r.get("skipped")]
    assert all(r["train_loss"] == r["train_loss"] for r in good)  # no NaN reached the record
    last = RunFolder(tmp_path / "runs" / "nan").checkpoints()[-1]
    assert read_state(last)["step"] == 16
    model, _ = load_lab(tmp_path / "runs" / "nan")
    assert all(torch.isfinite(p).all() for p in model.parameters())
