"""Widgets shared by several pages."""

import streamlit as st

from app import services


def checkpoint_picker(key: str) -> str | None:
    """A checkpoint chooser: trained runs, the bundled model, or a typed path. None if nothing usable."""
    choices = services.checkpoint_choices()
    options = [*choices, "A path to a checkpoint..."]
    label = st.selectbox("Checkpoint", options, key=f"{key}-choice",
                         help="Runs under runs/, the bundled SmolLM2-135M GGUF, or a Meta/HF/GGUF checkpoint")
    if label in choices:
        return choices[label]
    text = st.text_input("Checkpoint path (a folder or .gguf file inside runs/ or models/)", key=f"{key}-path")
    if not text:
        st.info("Type the path of a Meta, Hugging Face or GGUF checkpoint.")
        return None
    try:
        return str(services.safe_checkpoint_path(text))
    except ValueError as err:
        st.error(str(err))
        return None


def load(spec: str):
    """The cached model, or None with the reason shown on the page."""
    try:
        with st.spinner("Loading the model..."):
            return services.load_model(spec)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
        st.error(f"Could not load this checkpoint: {err}")
        return None
