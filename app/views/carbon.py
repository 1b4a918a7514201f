"""Carbon: the paper's formula, Table 15 reproduced, and the same estimate for your own runs."""

import pandas as pd
import plotly.express as px
import streamlit as st

from app import services
from llama_core import carbon

st.title("Carbon")
st.latex(r"\text{MWh} = \text{GPU-hours} \times \text{GPU power} \times \text{PUE}\qquad"
         r"\text{tCO}_2\text{eq} = \text{MWh} \times \text{grid intensity}")
with st.sidebar:
    gpus = list(carbon.GPU_POWER_WATTS)
    gpu = st.selectbox("GPU preset", gpus, index=gpus.index("A100-SXM4-80GB"))
    # keyed by preset: choosing a preset resets the power to its figure, which stays editable
    power = st.number_input("GPU power (W)", 1.0, 2000.0, float(carbon.GPU_POWER_WATTS[gpu]), 10.0, key=f"power-{gpu}")
    pue = st.number_input("PUE", 1.0, 3.0, carbon.PAPER_PUE, 0.05)
    grid = st.selectbox("Grid", list(carbon.GRID_KG_PER_KWH))
    intensity = st.number_input("Grid intensity (kg CO2eq/kWh)", 0.0, 2.0, carbon.GRID_KG_PER_KWH[grid], 0.005,
                                format="%.3f", key=f"grid-{grid}")

st.subheader("Table 15, by the formula")
checks = carbon.reproduce_table15(pue=pue, kg_per_kwh=intensity, power_watts=power)
table = pd.DataFrame([{
    "model": c.row.model, "GPU": c.row.gpu, "GPU-hours": c.row.gpu_hours, "power (W)": power,
    "MWh (formula)": round(c.mwh, 1), "MWh (printed)": c.row.printed_mwh,
    "tCO2eq (formula)": round(c.tco2eq, 1), "tCO2eq (printed)": c.row.printed_tco2eq,
} for c in checks])
st.dataframe(table, hide_index=True, width="stretch")
st.caption("With the paper's defaults (400 W, PUE 1.1, 0.385 kg/kWh) the formula gives every printed row to its "
           "rounding except BLOOM-175B: 476.5 MWh against the printed 475 (its 183 t still matches).")
st.plotly_chart(px.bar(table, x="model", y="tCO2eq (formula)", title="Emissions by the formula"),
                width="stretch")

st.subheader("Your runs")
rows = [r for r in services.run_table(pue=pue, kg_per_kwh=intensity) if "kwh" in r]
if not rows:
    st.info("No runs with records yet.")
else:
    runs = pd.DataFrame(rows)[["run", "elapsed_s", "power_w", "power_source", "kwh", "g_co2eq"]]
    st.dataframe(runs, hide_index=True, width="stretch")
    st.caption("Power is the device's datasheet board power where it is known, otherwise an assumed figure "
               "(labelled so); energy assumes the device ran at that power for the whole recorded time.")
