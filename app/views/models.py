"""The model ladder: every preset's shape, parameters and FLOPs, beside the paper's Table 2."""

import streamlit as st

from app.services import presets
from app.views.widgets import table

st.title("Models")
st.caption("Every preset, counted exactly; the paper's Table 2 prints sizes truncated to one decimal. "
           "Training FLOPs per token are 6N plus attention at the preset's full context.")
table(presets.preset_table(), {"training FLOPs/token": "compact"})
