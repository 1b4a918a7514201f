"""Runs: training and validation loss against tokens (the paper's Figure 1 shape), and a table."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import services

st.title("Runs")
rows = services.run_table()
if not rows:
    st.info(f"No runs under {services.runs_dir()}/ yet. Train one: `python -m lab train --preset lab-4m --tokens 2M`")
    st.stop()
names = [r["run"] for r in rows]
chosen = st.multiselect("Runs", names, default=names[-4:])
log_x = st.toggle("Log-scale tokens", value=True)

fig = go.Figure()
for name in chosen:
    metrics = services.run_metrics(name)
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

table = pd.DataFrame(rows)
columns = [c for c in ("run", "preset", "params", "tokens", "train_loss", "val_loss", "val_bpb", "tokens_per_s",
                       "elapsed_s", "kwh", "g_co2eq", "power_source", "status") if c in table]
st.dataframe(table[columns], hide_index=True, width="stretch")
st.caption("CO2eq by the paper's formula (PUE 1.1, 0.385 kg/kWh) from each run's recorded time; see the Carbon page.")
