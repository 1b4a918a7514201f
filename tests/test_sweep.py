"""Sweeps: the grid and manifest are right, bad input is refused early, a killed sweep resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lab.__main__ import main
from lab.experiment import finished
from lab.records import read_metrics
from lab.sweep import Sweep, estimate_seconds, load_sweep, parse_budgets, plan_sweep
from llama_core.data import shakespeare_files
from llama_core.run_folder import RunFolder

TINY_TRAIN = ["--train.batch_size=4", "--train.seq_len=32", "--train.log_every=5", "--train.eval_every=10",
              "--train.eval_batches=2", "--train.checkpoint_every=5", "--train.lr=3e-3"]


@pytest.fixture(scope="module")
def hamlet():
    return str(next(f for f in shakespeare_files() if "hamlet" in f.name))


def test_grid_names_order_and_defaults():
    sweep = Sweep("s", presets=("sweep-d96", "sweep-d64"), tokens=(500_000, 250_000), lrs=(1e-3, 3e-3))
    names = [r.name for r in sweep.runs()]
    assert names[:4] == ["sweep-d96-250k-lr0.001", "sweep-d96-250k-lr0.003", "sweep-d96-500k-lr0.001",
                         "sweep-d96-500k-lr0.003"]
    assert len(names) == 8 and len(set(names)) == 8
    assert sweep.spec(sweep.runs()[1], "tok.model").train.lr == 3e-3
    default = Sweep("d")
    assert [r.name for r in default.runs()][-1] == "sweep-d192-1M"  # the largest run comes last
    assert 10 * 60 < estimate_seconds(default) < 30 * 60  # sized for ~20 minutes on 2 idle cores
    assert parse_budgets("250k, 1M,2.5e6") == (250_000, 1_000_000, 2_500_000)


@pytest.mark.parametrize("argv, message", [
    (["--presets", "sweep-d64,nope"], "unknown preset 'nope'"),
    (["--tokens", "1M,lots"], "bad token budget 'lots'"),
    (["--tokens=-5k"], "bad token budget '-5k'"),
    (["--tokens", "100"], "token budget 100: TrainConfig.tokens"),
    (["--tokens", "1M,1M"], "lists a value twice"),
    (["--lrs", "fast"], "bad learning rates"),
    (["--train.tokens=5"], "token budgets come from --tokens"),
    (["--model.dim=8"], "--train.FIELD=VALUE overrides only"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, argv, message):
    assert main(["sweep", "--name", "bad", "--runs-dir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_dry_run_prints_the_grid_and_an_estimate(tmp_path, capsys):
    assert main(["sweep", "--name", "dry", "--runs-dir", str(tmp_path), "--tokens", "250k,1M", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 runs" in out and "sweep-d192-1M" in out and "estimated" in out
    assert not (tmp_path / "dry").exists()


def _sweep_cmd(tmp_path, hamlet, *extra):
    return [sys.executable, "-m", "lab", "sweep", "--name", "kill", "--runs-dir", str(tmp_path / "runs"),
            "--quiet", "--threads", "1", *extra]


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path, hamlet, capsys):
    env = dict(os.environ, LLAMA_LAB_CACHE=str(tmp_path / "cache"))
    grid = ["--presets", "sweep-d64", "--tokens", "2560,7680", "--data", hamlet, "--vocab", "512", *TINY_TRAIN]
    root = tmp_path / "runs" / "kill"
    first, second = root / "sweep-d64-2560", root / "sweep-d64-7680"  # 20 and 60 steps of 128 tokens
    victim = subprocess.Popen(_sweep_cmd(tmp_path, hamlet, *grid), env=env)
    deadline = time.time() + 240
    while time.time() < deadline and victim.poll() is None:
        if finished(first) and RunFolder(second).latest_valid_checkpoint() is not None:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the sweep ended before it could be killed"
    assert main(["sweep", "--name", "kill", "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 2
    assert "being trained by another process" in capsys.readouterr().err  # one trainer at a time
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not finished(second)
    manifest = json.loads((root / "sweep.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == [first.name, second.name]
    assert manifest["grid"]["tokens"] == [2560, 7680] and manifest["grid"]["vocab_size"] == 512
    untouched = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (first / "metrics.jsonl", first / "config.json")}
    killed_at = read_metrics(second)[-1]["step"] if read_metrics(second) else 0
    assert killed_at < 60

    # another grid under the same name is refused; only --name continues the recorded one
    assert main(["sweep", "--name", "kill", "--runs-dir", str(tmp_path / "runs"), "--tokens", "5k"]) == 2
    done = subprocess.run(_sweep_cmd(tmp_path, hamlet), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming sweep-d64-7680" in done.stdout and "already finished 1" in done.stdout
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in untouched} == untouched
    steps = [m["step"] for m in read_metrics(second)]
    assert finished(second) and steps[-1] == 60 and steps == sorted(set(steps))
    _, rows = load_sweep(root)
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert all(r["val_loss"] is not None and r["compute"] == 6 * r["n_params"] * r["tokens"] for r in rows)
    assert json.loads((root / "sweep.json").read_text())["status"] == "finished"
    assert plan_sweep("kill", tmp_path / "runs").tokens == (2560, 7680)
