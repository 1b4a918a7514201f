"""Every page of the Streamlit app under AppTest, with a real tiny trained run and real records."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from llama_core.carbon import TABLE15, energy_mwh, tco2eq

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


@pytest.fixture
def app(tiny_runs_dir, monkeypatch):
    monkeypatch.setenv("LLAMA_LAB_RUNS_DIR", str(tiny_runs_dir))
    monkeypatch.setenv("LLAMA_LAB_MODEL_DIRS", str(tiny_runs_dir.parent))

    def open_page(page: str, checkpoint: str | None = None) -> AppTest:
        """`page` as a new browser session opens it; `checkpoint` picks a label in the sidebar's chooser."""
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        at.switch_page(f"views/{page}.py").run()
        if checkpoint is not None:
            at.sidebar.selectbox[0].set_value(checkpoint).run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return open_page


RUN = "run: tiny-hamlet"  # the trained tiny run: fast replies


def _formats(at, index: int = 0) -> dict[str, str]:
    """Column -> the number format a table is shown with."""
    columns = json.loads(at.dataframe[index].proto.columns or "{}")
    return {name: spec.get("type_config", {}).get("format") for name, spec in columns.items()}


def _figures(at):
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _array(value):
    """Plotly stores numpy arrays as base64 typed arrays: decode them back."""
    if isinstance(value, dict) and "bdata" in value:
        import base64

        import numpy as np

        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).tolist()
    return value


def test_chat_streams_a_reply(app):
    at = app("chat", RUN)
    at.chat_input[0].set_value("ROMEO:").run()
    assert not at.exception
    roles = [m.name for m in at.chat_message]
    assert roles == ["user", "assistant"]
    reply = at.chat_message[1].markdown[0].value
    assert len(reply) > 10
    assert any("tokens/s" in c.value and "float weights" in c.value for c in at.chat_message[1].caption)
    # a float run starts unquantized; int8 is served as its own copy and named under the next reply
    quant = next(s for s in at.sidebar.selectbox if s.label == "Quantization")
    assert quant.value == "none"
    quant.set_value("int8").run()
    at.chat_input[0].set_value("JULIET:").run()
    assert not at.exception
    assert any("tokens/s" in c.value and "int8" in c.value for c in at.chat_message[3].caption)
    assert any("float weights" in c.value for c in at.chat_message[1].caption)  # earlier replies keep theirs


def test_chat_opens_on_the_instruction_tuned_model_and_explains_the_runs(app):
    from app.services.checkpoints import BUNDLED
    from llama_core.formats import smollm2_path

    try:
        smollm2_path()
    except FileNotFoundError as err:
        pytest.skip(f"the bundled model is not installed: {err}")
    at = app("chat")
    assert at.sidebar.selectbox[0].value == BUNDLED
    assert any("instruction-tuned" in c.value for c in at.caption)
    at.sidebar.slider[2].set_value(16).run()  # max new tokens: a short answer is enough here
    at.chat_input[0].set_value("What is the capital of France?").run()
    assert not at.exception
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert at.chat_message[1].markdown[0].value.strip()
    at.sidebar.selectbox[0].set_value(RUN).run()
    assert any("trained here from scratch on Shakespeare" in i.value for i in at.info)


def test_two_sessions_keep_their_own_conversations(app):
    first, second = app("chat", RUN), app("chat", RUN)
    first.chat_input[0].set_value("Alas, poor Yorick").run()
    second.chat_input[0].set_value("Good night, sweet prince").run()
    first_texts = [m.markdown[0].value for m in first.chat_message]
    second_texts = [m.markdown[0].value for m in second.chat_message]
    assert first_texts[0] == "Alas, poor Yorick" and second_texts[0] == "Good night, sweet prince"
    assert "Good night, sweet prince" not in first_texts and "Alas, poor Yorick" not in second_texts


def test_chat_bad_input_gives_messages_not_tracebacks(app):
    at = app("chat", RUN)
    at.chat_input[0].set_value("x" * 20_000).run()
    assert not at.exception
    assert any("20,000 characters" in w.value for w in at.warning)
    at.chat_input[0].set_value("   ").run()
    assert any("empty" in w.value for w in at.warning)
    at.chat_input[0].set_value("What light through yonder window breaks?").run()  # still usable
    assert [m.name for m in at.chat_message] == ["user", "assistant"]


def test_a_path_that_is_not_a_checkpoint_is_explained(app, tiny_runs_dir):
    at = app("chat")
    at.sidebar.selectbox[0].set_value("A path to a checkpoint...").run()
    at.sidebar.text_input[0].set_value(str(tiny_runs_dir / "tiny-hamlet" / "checkpoints")).run()
    assert not at.exception
    assert any("not a checkpoint" in e.value for e in at.error)
    at.sidebar.text_input[0].set_value("/etc").run()
    assert any("outside the folders" in e.value for e in at.error)


def test_attention_page_draws_real_weights(app):
    at = app("attention")
    figures = _figures(at)
    assert len(figures) == 3  # one head, all heads, the average
    head = figures[0]["data"][0]
    labels, z = head["x"], _array(head["z"])
    assert len(labels) == len(z) == len(z[0]) > 5
    for i, row in enumerate(z):
        assert abs(sum(row) - 1) < 1e-4  # each query's weights sum to one
        assert all(w == 0 for w in row[i + 1:])  # and never look ahead
    at.text_area[0].set_value("word " * 500).run()
    assert any("at most" in w.value for w in at.warning) and not at.exception


def test_carbon_defaults_reproduce_table15(app):
    at = app("carbon")
    table = at.dataframe[0].value
    assert list(table["model"]) == [row.model for row in TABLE15]
    for row, (_, got) in zip(TABLE15, table.iterrows()):
        mwh = energy_mwh(row.gpu_hours, row.power_watts)
        assert got["MWh (formula)"] == round(mwh, 1)
        assert got["tCO2eq (formula)"] == round(tco2eq(mwh), 1)
        assert got["MWh (printed)"] == row.printed_mwh
    assert any("except BLOOM-175B: 476.5 MWh against the printed 475" in c.value for c in at.caption)


def test_runs_page_plots_the_records(app, tiny_runs_dir):
    at = app("runs")
    names = [trace["name"] for trace in _figures(at)[0]["data"]]
    assert names == ["tiny-hamlet train", "tiny-hamlet validation"]
    table = at.dataframe[0].value
    assert table["run"].tolist() == ["tiny-hamlet"]
    assert table["energy (Wh)"].iloc[0] > 0 and table["power source"].iloc[0]
    formats = _formats(at)
    assert formats["params"] == formats["tokens"] == "%,d"  # thousands separators, not 1328256
    assert formats["tokens/s"] == "%,.0f" and formats["train loss"] == "%.3f"


def test_run_missing_its_metrics_is_reported(app, tiny_runs_dir):
    broken = tiny_runs_dir / "broken-run"
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text(json.dumps({"name": "broken-run", "preset": "lab-1m"}))
    try:
        at = app("runs")
        at.multiselect[0].set_value(["tiny-hamlet", "broken-run"]).run()
        assert not at.exception
        assert any("broken-run has no metrics" in w.value for w in at.warning)
    finally:
        (broken / "config.json").unlink()
        broken.rmdir()


def test_throughput_and_models_pages_render(app):
    at = app("throughput")
    assert any("tokens/s" in str(f) for f in _figures(at))  # the run's tokens/s over training
    at.button[0].click().run()  # a real measurement of lab-1m at batch 4, seq 128
    assert not at.exception
    assert at.dataframe[0].value["tokens/s"].iloc[0] > 0
    projection = at.dataframe[1].value  # the paper's runs at the FLOP rate just measured
    assert projection["model"].tolist() == ["llama-7b", "llama-13b", "llama-33b", "llama-65b"]
    assert projection.iloc[-1].filter(like="(days)").item() == pytest.approx(21, abs=0.5)  # section 2.4
    models = app("models")
    assert "llama-65b" in models.dataframe[0].value["preset"].tolist()
    assert _formats(models)["parameters"] == "%,d"


def test_decode_upload_rejects_non_utf8():
    from app.services.attention import decode_upload

    assert decode_upload(b"To be") == "To be"
    with pytest.raises(ValueError, match="not UTF-8.*0xff"):
        decode_upload(b"To be \xff\xfe", "play.txt")
