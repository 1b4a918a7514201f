"""LLaMA Lab in the browser: `streamlit run app/main.py`."""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

st.set_page_config(page_title="LLaMA Lab", page_icon="🦙", layout="wide")
PAGES = Path(__file__).parent / "pages"
pages = [
    st.Page(str(PAGES / "models.py"), title="Models", icon="🧮", default=True),
]
st.navigation(pages).run()
