"""Widgets shared by several pages: the checkpoint picker, a model load with its errors shown, tables."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.services import checkpoints

# printf formats (sprintf-js; "," groups thousands) for the kinds of number the tables show
COUNT, DECIMAL1, DECIMAL3, SIGNIFICANT3 = "%,d", "%,.1f", "%.3f", "%,.3g"


def checkpoint_picker(key: str) -> str | None:
    """A checkpoint chooser: the bundled model, trained runs, or a typed path. None if nothing usable."""
    choices = checkpoints.checkpoint_choices()
    options = [*choices, "A path to a checkpoint..."]
    label = st.selectbox("Checkpoint", options, key=f"{key}-choice",
                         help="The bundled SmolLM2-135M-Instruct GGUF, runs under runs/, or a Meta/HF/GGUF checkpoint")
    if label in choices:
        return choices[label]
    text = st.text_input("Checkpoint path (a folder or .gguf file inside runs/ or models/)", key=f"{key}-path")
    if not text:
        st.info("Type the path of a Meta, Hugging Face or GGUF checkpoint.")
        return None
    try:
        return str(checkpoints.safe_checkpoint_path(text))
    except ValueError as err:
        st.error(str(err))
        return None


def load(spec: str, quant: str = "none") -> checkpoints.ServedModel | None:
    """The cached model (with `quant` weights), or None with the reason shown on the page."""
    try:
        with st.spinner("Loading the model..."):
            return checkpoints.serve(spec, quant)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
        st.error(f"Could not load this checkpoint: {err}")
        return None


def table(rows: list[dict], formats: dict[str, str], columns: list[str] | None = None) -> pd.DataFrame:
    """`rows` as a table whose numbers stay numeric (sortable) but read as `formats` says (column ->
    a printf format or a Streamlit name such as "percent"); other whole numbers get thousands
    separators, other fractions four significant digits."""
    frame = pd.DataFrame(rows)
    if columns is not None:
        frame = frame[[c for c in columns if c in frame]]
    config = {}
    for name in frame.columns:
        kind = frame[name].dtype
        if name in formats:
            config[name] = st.column_config.NumberColumn(format=formats[name])
        elif pd.api.types.is_integer_dtype(kind):
            config[name] = st.column_config.NumberColumn(format=COUNT)
        elif pd.api.types.is_float_dtype(kind):
            config[name] = st.column_config.NumberColumn(format="%,.4g")
    st.dataframe(frame, hide_index=True, width="stretch", column_config=config)
    return frame
