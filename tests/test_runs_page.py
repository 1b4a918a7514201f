"""What the runs tables and the Runs page show, from real runs: the whole-held-out bits/byte where a run has
it (else the sampled one, labelled), and the accuracy `lab train --eval-suite` recorded against tokens,
beside the run's stored `lab eval --suite` results."""

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_app import _array

from lab.__main__ import main
from lab.evals.during_training import EVAL_KEY
from lab.evals.records import stored
from lab.evals.registry import tasks_of
from lab.evals.sources import data_root
from lab.records import HELDOUT, SAMPLED, summarize
from llama_core.data import shakespeare_files
from llama_core.run_folder import RunFolder

try:
    data_root()
except FileNotFoundError as err:
    pytest.skip(str(err), allow_module_level=True)

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TINY = ["--preset", "lab-1m", "--tokens", "2048", "--vocab", "512", "--quiet", "--model.dim=64", "--model.n_layers=2",
        "--model.n_heads=4", "--model.max_seq_len=128", "--train.batch_size=4", "--train.seq_len=32",
        "--train.eval_every=8", "--train.eval_batches=1", "--train.log_every=4", "--train.checkpoint_every=16"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A run trained with `lab train --eval-suite commonsense --eval-limit 2` and evaluated once with
    `lab eval --suite commonsense --limit 1`, and a copy of it as a run from before whole-text evaluation."""
    root = tmp_path_factory.mktemp("runs-page")
    hamlet = str(next(f for f in shakespeare_files() if "hamlet" in f.name))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LLAMA_LAB_CACHE", str(root / "cache"))
        assert main(["train", "--data", hamlet, "--name", "curve", "--runs-dir", str(root / "runs"), *TINY,
                     "--eval-suite", "commonsense", "--eval-limit", "2"]) == 0
    assert main(["eval", "--suite", "commonsense", "--limit", "1", "--checkpoint", str(root / "runs" / "curve"),
                 "--runs-dir", str(root / "runs")]) == 0
    older = root / "runs" / "older"
    shutil.copytree(root / "runs" / "curve", older, ignore=shutil.ignore_patterns("evals.jsonl"))
    config = RunFolder(older).read_config()
    RunFolder(older).write_config({k: v for k, v in config.items() if k != "heldout"})
    return root / "runs"


def test_summaries_show_the_whole_heldout_figure_else_the_sampled_one(runs_dir, capsys):
    curve, older = summarize(runs_dir / "curve"), summarize(runs_dir / "older")
    heldout = RunFolder(runs_dir / "curve").read_config()["heldout"]
    sampled = [m for m in RunFolder(runs_dir / "curve").read_metrics() if "val_loss" in m][-1]
    assert (curve["bpb"], curve["loss"], curve["validated_on"]) == \
        (heldout["heldout_bpb"], heldout["heldout_loss"], HELDOUT)
    assert (curve["val_bpb"], curve["val_loss"]) == (sampled["val_bpb"], sampled["val_loss"])
    assert (older["bpb"], older["loss"], older["validated_on"]) == (sampled["val_bpb"], sampled["val_loss"], SAMPLED)
    assert older["heldout_bpb"] is None

    assert main(["runs", "--runs-dir", str(runs_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], {line.split()[0]: line for line in lines[2:4]}
    assert all(len(row) == len(header) for row in rows.values())  # columns stay aligned
    assert rows["curve"].split()[5:8] == [f"{heldout['heldout_loss']:.3f}", f"{heldout['heldout_bpb']:.3f}",
                                          "held-out"]
    assert rows["older"].split()[5:8] == [f"{sampled['val_loss']:.3f}", f"{sampled['val_bpb']:.3f}", "sampled"]


def test_runs_page_plots_recorded_accuracy_and_lists_stored_evaluations(runs_dir, monkeypatch):
    monkeypatch.setenv("LLAMA_LAB_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("LLAMA_LAB_MODEL_DIRS", str(runs_dir.parent))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.multiselect[0].set_value(["curve"]).run()
    assert not at.exception, [e.value for e in at.exception]

    table = at.dataframe[0].value.set_index("run")
    assert table.loc["curve", "val measured on"] == HELDOUT and table.loc["older", "val measured on"] == SAMPLED
    assert table.loc["curve", "val bits/byte"] == RunFolder(runs_dir / "curve").read_config()["heldout"]["heldout_bpb"]

    evaluated = [m for m in RunFolder(runs_dir / "curve").read_metrics() if EVAL_KEY in m]
    titles = {t.name: t.title for t in tasks_of("commonsense")}
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    accuracy = {trace["name"].split(",")[0]: trace for trace in figures[1]["data"]}
    assert set(accuracy) == set(titles.values())
    for task, title in titles.items():
        assert _array(accuracy[title]["x"]) == [m["tokens"] for m in evaluated]
        assert _array(accuracy[title]["y"]) == [100 * m[EVAL_KEY][task]["accuracy"] for m in evaluated]
    loss = figures[2]["data"]
    assert len(loss) == 1 and _array(loss[0]["y"]) == [m["val_loss"] for m in evaluated]

    record = stored(runs_dir)[-1]
    shown = at.dataframe[1].value
    assert shown["run"].tolist() == ["curve"] and shown["suite"].tolist() == ["commonsense"]
    assert shown["limit"].tolist() == [1]
    for task, title in titles.items():
        assert shown[f"{title} %"].iloc[0] == pytest.approx(100 * record["results"][task]["accuracy"])

    at.multiselect[0].set_value(["older"]).run()  # a copy without its evaluation file: no table of them
    assert not at.exception and len(at.dataframe) == 1
