# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Carbon and throughput
#
# Touvron et al. (2023), section 6.4, estimate the energy and emissions of training with one
# formula: energy = GPU-hours × GPU power × PUE (1.1), and tCO2eq = MWh × 0.385 (the US average
# grid, kg CO2eq/kWh). This notebook reproduces their Table 15 with `llama_core.carbon`, then applies
# the same formula to your own runs' records: tokens/s, MFU, energy and CO2eq.

# %% tags=["parameters"]
runs_dir = "runs"  # where `python -m lab train` writes runs/NAME/config.json + metrics.jsonl
power_watts = None  # None: measured joules where recorded, else datasheet power or an assumed CPU figure
pue = 1.1  # the paper's; a laptop or desktop is closer to 1.0
grid = "US average (paper)"  # a key of llama_core.carbon.GRID_KG_PER_KWH

# %%
from pathlib import Path

import pandas as pd
import plotly.express as px
from IPython.display import display

from lab.footprint import run_energy
from lab.records import list_runs, read_metrics
from llama_core.carbon import GRID_KG_PER_KWH, PAPER_DEVELOPMENT, reproduce_table15, tco2eq

# %% [markdown]
# ## Table 15, recomputed
# Each row by the formula, beside the printed value. The paper prints whole numbers, so a row
# matches when the formula lands within one unit of the print (LLaMA-65B's 449.84 MWh is printed
# 449: truncated, not rounded). BLOOM-175B is the exception: 1,082,880 GPU-hours at 400 W and
# PUE 1.1 give 476.5 MWh, not the printed 475; its emissions (183.4 t) still match the print.

# %%
table = pd.DataFrame([{
    "model": c.row.model, "GPU": c.row.gpu, "power (W)": c.row.power_watts, "GPU-hours": c.row.gpu_hours,
    "MWh (formula)": round(c.mwh, 2), "MWh (printed)": c.row.printed_mwh,
    "tCO2eq (formula)": round(c.tco2eq, 2), "tCO2eq (printed)": c.row.printed_tco2eq, "matches": c.matches,
} for c in reproduce_table15()])
for c in reproduce_table15():
    if not c.matches:
        print(f"{c.row.model}: the formula gives {c.mwh:.1f} MWh, the paper prints {c.row.printed_mwh:g} "
              f"(gap {c.mwh_gap:+.1f} MWh); tCO2eq {c.tco2eq:.1f} vs printed {c.row.printed_tco2eq:g}")
table

# %%
bars = table.melt(id_vars="model", value_vars=["MWh (formula)", "MWh (printed)"], var_name="source",
                  value_name="MWh")
px.bar(bars, x="model", y="MWh", color="source", barmode="group",
       title="Table 15: training energy by the paper's formula and as printed")

# %% [markdown]
# ## The whole project
# The paper puts developing all its models at about 2,638 MWh and 1,015 tCO2eq, from 2048 A100-80GB
# GPUs over about 5 months. Inverting the formula shows what that energy means in GPU time.

# %%
dev = PAPER_DEVELOPMENT
print(f"printed: {dev.printed_mwh:,} MWh -> {tco2eq(dev.printed_mwh):,.1f} tCO2eq by the formula "
      f"(printed {dev.printed_tco2eq:,})")
print(f"implied: {dev.implied_gpu_hours:,.0f} GPU-hours = {dev.implied_days:.0f} days of all {dev.gpus} GPUs "
      f"at 400 W, i.e. about {dev.implied_days / 30.4:.1f} of the '{dev.months:g} months' at full power")

# %% [markdown]
# ## The same training on other grids
# Where the electricity comes from changes the emissions more than any engineering in this list.

# %%
llama65 = next(c for c in reproduce_table15() if c.row.model == "LLaMA-65B")
grids = pd.DataFrame([{"grid": name, "kg CO2eq/kWh": kg, "LLaMA-65B tCO2eq": tco2eq(llama65.mwh, kg)}
                      for name, kg in GRID_KG_PER_KWH.items()])
px.bar(grids, x="grid", y="LLaMA-65B tCO2eq", hover_data=["kg CO2eq/kWh"],
       title=f"LLaMA-65B's {llama65.mwh:.0f} MWh on different grids")

# %% [markdown]
# ## Your runs
# Read from the run records (`config.json` and `metrics.jsonl`), never from logs. Energy uses the
# recorded wall time and the joules a hardware counter (RAPL, NVML) measured where the run recorded
# any, else the device's datasheet power; a CPU's power is then an assumption, and is labelled so.
# The app's Runs and Carbon pages compute the same rows with the same function, `run_energy`.

# %%
kg_per_kwh = GRID_KG_PER_KWH[grid]
rows, curves = [], []
for run in list_runs(Path(runs_dir)):
    metrics = [m for m in read_metrics(run) if "tokens_per_s" in m]
    if not metrics:
        print(f"{run.name}: no metrics yet, skipped")
        continue
    energy = run_energy(run, pue=pue, kg_per_kwh=kg_per_kwh, power_watts=power_watts)
    footprint, last = energy.footprint, metrics[-1]
    rows.append({"run": run.name, "device": energy.device_name, "tokens": last["tokens"],
                 "tokens/s (mean)": sum(m["tokens_per_s"] for m in metrics) / len(metrics),
                 "MFU (last)": last.get("mfu"), "elapsed (s)": footprint.elapsed_s,
                 "power (W)": footprint.power_watts, "power source": energy.power_source,
                 "Wh": footprint.kwh * 1000, "g CO2eq": footprint.kg_co2eq * 1000})
    curves += [{"run": run.name, "tokens": m["tokens"], "tokens/s": m["tokens_per_s"]} for m in metrics]

if rows:
    print(f"{len(rows)} run(s) in {runs_dir}; PUE {pue}, grid '{grid}' ({kg_per_kwh} kg CO2eq/kWh)")
    display(pd.DataFrame(rows))
else:
    print(f"No run records with metrics in {runs_dir!r} yet: train one with `python -m lab train` "
          "and run this notebook again.")

# %%
if curves:
    px.line(pd.DataFrame(curves), x="tokens", y="tokens/s", color="run",
            title="Training throughput over each run").show()
