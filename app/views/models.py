"""The model ladder: every preset's shape, parameters and FLOPs, beside the paper's Table 2."""

import pandas as pd
import streamlit as st

from lab.cli.presets import preset_rows

st.title("Models")
st.caption("Every preset, counted exactly; the paper's Table 2 prints sizes truncated to one decimal.")
table = pd.DataFrame(preset_rows())
st.dataframe(table, hide_index=True, width="stretch")
