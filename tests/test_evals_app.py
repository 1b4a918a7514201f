"""The Evaluation page: a background evaluation of a real tiny run stored and shown beside the paper's
rows, earlier results listed, bad settings refused with a message."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lab.evals.sources import data_root

try:
    data_root()
except FileNotFoundError as err:
    pytest.skip(str(err), allow_module_level=True)

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


@pytest.fixture
def env(tiny_runs_dir, monkeypatch):
    monkeypatch.setenv("LLAMA_LAB_RUNS_DIR", str(tiny_runs_dir))
    monkeypatch.setenv("LLAMA_LAB_MODEL_DIRS", str(tiny_runs_dir.parent))
    return tiny_runs_dir


def test_a_background_evaluation_is_stored_and_shown_beside_the_paper(env):
    from app.services import evaluation

    with pytest.raises(ValueError, match="--shots 9 for mmlu"):
        evaluation.start(str(env / "tiny-hamlet"), "mmlu", 1, shots=9)
    job = evaluation.start(str(env / "tiny-hamlet"), "commonsense", 1)
    job.thread.join(timeout=600)
    assert job.error is None and job.record is not None and job.fraction == 1.0
    assert (env / "tiny-hamlet" / "evals.jsonl").is_file()  # a lab run keeps its evaluations
    assert {r["task"] for r in evaluation.result_rows(job.record)} >= {"BoolQ", "WinoGrande", "OBQA"}

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/evaluation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = at.dataframe[0].value
    assert shown["model"].tolist()[:5] == ["GPT-3 175B", "LLaMA 7B", "LLaMA 13B", "LLaMA 33B", "LLaMA 65B"]
    assert shown["model"].iloc[-1].startswith("tiny-hamlet") and shown["hellaswag"].iloc[1] == 76.1
    charts = [c for c in at.get("plotly_chart")]
    assert charts, "the comparison chart is drawn"
