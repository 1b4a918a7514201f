"""LLaMA Lab in the browser: `streamlit run app/main.py` (binds to 127.0.0.1, see .streamlit/config.toml).

A page is a file in views/ over a module of services/, registered by one line below. The folder
is not named pages/: Streamlit would then serve a link to a page without running this script
first (its older multipage mode), and the page would miss the imports and layout set up here.
"""

import sys
from pathlib import Path

import streamlit as st

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # run from a checkout without install
    sys.path.insert(0, ROOT)

st.set_page_config(page_title="LLaMA Lab", page_icon=":material/science:", layout="wide")
VIEWS = Path(__file__).parent / "views"
pages = [
    st.Page(str(VIEWS / "chat.py"), title="Chat", icon=":material/chat:", default=True),
    st.Page(str(VIEWS / "attention.py"), title="Attention", icon=":material/grid_on:"),
    st.Page(str(VIEWS / "runs.py"), title="Runs", icon=":material/show_chart:"),
    st.Page(str(VIEWS / "evaluation.py"), title="Evaluation", icon=":material/fact_check:"),
    st.Page(str(VIEWS / "throughput.py"), title="Throughput", icon=":material/speed:"),
    st.Page(str(VIEWS / "carbon.py"), title="Carbon", icon=":material/eco:"),
    st.Page(str(VIEWS / "models.py"), title="Models", icon=":material/stacked_bar_chart:"),
]
st.navigation(pages).run()
