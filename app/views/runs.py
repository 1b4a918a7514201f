"""Runs: training and validation loss against tokens (the paper's Figure 1 shape), and a table."""

import plotly.graph_objects as go
import streamlit as st

from app.services import carbon, runs
from app.views.widgets import COUNT, DECIMAL1, DECIMAL3, SIGNIFICANT3, table

st.title("Runs")
rows = runs.run_table()
if not rows:
    st.info(f"No runs under {runs.runs_dir()}/ yet. Train one: `python -m lab train --preset lab-4m --tokens 2M`")
    st.stop()
names = [r["run"] for r in rows]
chosen = st.multiselect("Runs", names, default=names[-4:])
log_x = st.toggle("Log-scale tokens", value=True)

fig = go.Figure()
for name in chosen:
    metrics = runs.run_metrics(name)
    if not metrics:
        st.warning(f"{name} has no metrics yet (metrics.jsonl missing or empty).")
        continue
    fig.add_scatter(x=[m["tokens"] for m in metrics], y=[m["train_loss"] for m in metrics], mode="lines",
                    name=f"{name} train")
    evals = [m for m in metrics if "val_loss" in m]
    if evals:
        fig.add_scatter(x=[m["tokens"] for m in evals], y=[m["val_loss"] for m in evals], mode="markers+lines",
                        name=f"{name} validation", line={"dash": "dot"})
fig.update_layout(xaxis_title="training tokens", yaxis_title="loss (nats/token)", height=520,
                  xaxis_type="log" if log_x else "linear")
st.plotly_chart(fig, width="stretch")

table(rows, {"params": COUNT, "steps": COUNT, "tokens": COUNT, "train loss": DECIMAL3, "val loss": DECIMAL3,
             "val bits/byte": DECIMAL3, "tokens/s": "%,.0f", "elapsed (s)": DECIMAL1, "energy (Wh)": SIGNIFICANT3,
             "CO2eq (g)": SIGNIFICANT3},
      ["run", "preset", "params", "steps", "tokens", "train loss", "val loss", "val bits/byte", "tokens/s",
       "elapsed (s)", "energy (Wh)", "CO2eq (g)", "power source", "status"])
st.caption(f"Energy and CO2eq by the paper's formula (PUE {carbon.PAPER_PUE}, {carbon.US_AVERAGE_KG_PER_KWH} kg/kWh) "
           "over each run's recorded time, from measured joules where a hardware counter saw the run; "
           "see the Carbon page.")
