"""Runs: training and validation loss against tokens (the paper's Figure 1 shape), a table, and benchmark
accuracy against tokens where the run recorded it (Figure 2) with its stored suite evaluations."""

import pandas as pd
import plotly.express as px
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
      ["run", "preset", "params", "steps", "tokens", "train loss", "val loss", "val bits/byte", "val measured on",
       "tokens/s", "elapsed (s)", "energy (Wh)", "CO2eq (g)", "power source", "status"])
st.caption("Val loss and bits/byte: over all held-out text at the end of a run (\"held-out text\"); a run "
           "without that result (unfinished, or older) shows its last sampled evaluation (\"sampled batches\"), "
           "which the curves above also plot. "
           f"Energy and CO2eq by the paper's formula (PUE {carbon.PAPER_PUE}, {carbon.US_AVERAGE_KG_PER_KWH} kg/kWh) "
           "over each run's recorded time, from measured joules where a hardware counter saw the run; "
           "see the Carbon page.")

curves = pd.DataFrame(runs.eval_curves(chosen))
if not curves.empty:
    st.subheader("Benchmarks recorded during training")
    st.caption("`lab train --eval-suite`: the same first documents of each task at every validation step, "
               "beside the validation loss (sampled batches) of that step.")
    axis = {"tokens": "training tokens", "val loss": "validation loss (sampled)"}
    left, right = st.columns(2)
    left.plotly_chart(px.line(curves, x="tokens", y="accuracy %", color="task", line_dash="run", markers=True,
                              log_x=log_x, labels=axis), width="stretch")
    right.plotly_chart(px.line(curves.drop_duplicates(["run", "step"]), x="tokens", y="val loss", color="run",
                               markers=True, log_x=log_x, labels=axis), width="stretch")
evaluations = runs.run_evaluations(chosen)
if evaluations:
    st.subheader("Suite evaluations")
    st.caption("`python -m lab eval --suite` or the Evaluation page on these runs, newest first (score %).")
    table(evaluations, {c: DECIMAL1 for r in evaluations for c in r if c.endswith(" %")})
