"""What a resume may change (budget, cadence, where it runs) and what it refuses (model, data, recipe)."""

import dataclasses
import re

import pytest

from lab.__main__ import main
from lab.experiment import RESUMABLE_TRAIN_FIELDS, RunSpec, check_resumable, run_training
from llama_core.config import TrainConfig
from llama_core.data import shakespeare_files
from llama_core.formats.lab import load_lab
from llama_core.run_folder import RunFolder

TINY_FLAGS = ["--model.dim=64", "--model.n_layers=2", "--model.n_heads=4", "--model.max_seq_len=128"]


@pytest.fixture(scope="module")
def hamlet():
    return str(next(f for f in shakespeare_files() if "hamlet" in f.name))


def _spec(hamlet, **train):
    cfg = dict(tokens=20 * 4 * 64, batch_size=4, seq_len=64, eval_every=10, eval_batches=2, log_every=5,
               checkpoint_every=10, lr=3e-3)
    return RunSpec(name="r", preset="lab-1m", data=hamlet, vocab_size=512,
                   model_overrides={"dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128},
                   train=TrainConfig(**{**cfg, **train}))


def test_budget_cadence_and_device_may_change_the_rest_is_refused(hamlet):
    recorded = _spec(hamlet)
    check_resumable(recorded, _spec(hamlet, tokens=40 * 4 * 64, eval_every=7, log_every=1, checkpoint_every=3,
                                    keep_checkpoints=5, device="cpu", compile=True, fused_loss=False))
    refused = {
        "--model.n_layers=3 (recorded 2)": dataclasses.replace(recorded, model_overrides={
            **recorded.model_overrides, "n_layers": 3}),
        "--preset='lab-4m'": dataclasses.replace(recorded, preset="lab-4m"),
        "--data='shakespeare'": dataclasses.replace(recorded, data="shakespeare"),
        "--vocab=4096 (recorded 512)": dataclasses.replace(recorded, vocab_size=4096),
        "--train.lr=0.01 (recorded 0.003)": _spec(hamlet, lr=1e-2),
        "--train.seq_len=32 (recorded 64)": _spec(hamlet, seq_len=32),
        "--train.seed=1 (recorded 1337)": _spec(hamlet, seed=1),
    }
    for message, requested in refused.items():
        with pytest.raises(ValueError, match=rf"cannot resume r with .*{re.escape(message)}.*Start a new run"):
            check_resumable(recorded, requested)
    assert "tokens" in RESUMABLE_TRAIN_FIELDS and "lr" not in RESUMABLE_TRAIN_FIELDS


def test_another_tokenizer_file_is_refused(tmp_path, hamlet, sp_tokenizer):
    path = tmp_path / "other.model"
    sp_tokenizer.save(path)
    given = dataclasses.replace(_spec(hamlet), tokenizer=str(path))
    check_resumable(_spec(hamlet), given, sp_tokenizer.fingerprint)  # the same tokenizer: accepted
    with pytest.raises(ValueError, match=rf"--tokenizer={re.escape(str(path))} \(fingerprint"):
        check_resumable(_spec(hamlet), given, "0123456789abcdef")


def test_resume_from_the_command_line_keeps_the_record_and_refuses_model_changes(tmp_path, hamlet, capsys,
                                                                                 monkeypatch):
    monkeypatch.setenv("LLAMA_LAB_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    run_training(_spec(hamlet), runs, progress=False, cache_dir=tmp_path / "cache")
    run = RunFolder(runs / "r")
    before = run.read_metrics()
    base = ["train", "--name", "r", "--runs-dir", str(runs), "--quiet", "--resume"]

    # a model override on resume used to be dropped without a word: it is refused, nothing is written
    assert main([*base, "--model.n_layers=3"]) == 2
    assert "--model.n_layers=3 (recorded 2)" in capsys.readouterr().err
    assert main([*base, "--train.lr=1e-2"]) == 2
    assert "--train.lr=0.01 (recorded 0.003)" in capsys.readouterr().err
    assert run.read_metrics() == before

    # a larger budget and another cadence continue the run: the recorded model, data and recipe stay
    assert main([*base, "--tokens", str(30 * 4 * 64), "--train.log_every=2"]) == 0
    config = run.read_config()
    assert config["train"]["tokens"] == 30 * 4 * 64 and config["train"]["log_every"] == 2
    assert config["train"]["lr"] == 3e-3 and config["model"]["n_layers"] == 2
    rows = [m for m in run.read_metrics() if "train_loss" in m]
    assert rows[-1]["step"] == 30 and [m["step"] for m in rows if m["step"] > 20] == [22, 24, 26, 28, 30]
    model, _ = load_lab(run.path)
    assert model.config.n_layers == 2
