"""Carbon: the paper's formula, Table 15 reproduced, and the same estimate for your own runs."""

import plotly.express as px
import streamlit as st

from app.services import carbon, runs
from app.views.widgets import DECIMAL1, SIGNIFICANT3, table

st.title("Carbon")
st.latex(r"\text{MWh} = \text{GPU-hours} \times \text{GPU power} \times \text{PUE}\qquad"
         r"\text{tCO}_2\text{eq} = \text{MWh} \times \text{grid intensity}")
with st.sidebar:
    gpus = list(carbon.GPU_POWER_WATTS)
    gpu = st.selectbox("GPU preset", gpus, index=gpus.index(carbon.DEFAULT_GPU))
    # keyed by preset: choosing a preset resets the power to its figure, which stays editable
    power = st.number_input("GPU power (W)", 1.0, 2000.0, float(carbon.GPU_POWER_WATTS[gpu]), 10.0, key=f"power-{gpu}")
    pue = st.number_input("PUE", 1.0, 3.0, carbon.PAPER_PUE, 0.05)
    grid = st.selectbox("Grid", list(carbon.GRID_KG_PER_KWH))
    intensity = st.number_input("Grid intensity (kg CO2eq/kWh)", 0.0, 2.0, carbon.GRID_KG_PER_KWH[grid], 0.005,
                                format="%.3f", key=f"grid-{grid}")

st.subheader("Table 15, by the formula")
frame = table(carbon.table15(pue, intensity, power), {"power (W)": "%,.0f", "MWh (formula)": DECIMAL1,
                                                      "tCO2eq (formula)": DECIMAL1})
st.caption(carbon.paper_defaults_note())
st.plotly_chart(px.bar(frame, x="model", y="tCO2eq (formula)", title="Emissions by the formula"), width="stretch")

st.subheader("Your runs")
mine = [r for r in runs.run_table(pue=pue, kg_per_kwh=intensity) if "energy (Wh)" in r]
if not mine:
    st.info("No runs with records yet.")
else:
    table(mine, {"elapsed (s)": DECIMAL1, "power (W)": DECIMAL1, "energy (Wh)": SIGNIFICANT3,
                 "CO2eq (g)": SIGNIFICANT3},
          ["run", "elapsed (s)", "power (W)", "power source", "energy (Wh)", "CO2eq (g)"])
    st.caption("Power is the mean of the joules a hardware counter (RAPL, NVML) measured over the run where it "
               "recorded any, else the device's datasheet board power, else an assumed figure (labelled so); "
               "energy is that power over the whole recorded time, times the PUE.")
