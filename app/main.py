"""LLaMA Lab in the browser: `streamlit run app/main.py` (binds to 127.0.0.1, see .streamlit/config.toml)."""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

st.set_page_config(page_title="LLaMA Lab", page_icon="🦙", layout="wide")
PAGES = Path(__file__).parent / "pages"
pages = [
    st.Page(str(PAGES / "chat.py"), title="Chat", icon="💬", default=True),
    st.Page(str(PAGES / "attention.py"), title="Attention", icon="🔍"),
    st.Page(str(PAGES / "runs.py"), title="Runs", icon="📉"),
    st.Page(str(PAGES / "throughput.py"), title="Throughput", icon="⚡"),
    st.Page(str(PAGES / "carbon.py"), title="Carbon", icon="🌍"),
    st.Page(str(PAGES / "models.py"), title="Models", icon="🧮"),
]
st.navigation(pages).run()
