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
# # 03 · Scaling laws: predict, then look
#
# Chinchilla's approach 3 (Hoffmann et al. 2022) models the final loss of a model with N
# parameters trained on D tokens as L(N, D) = E + A/N^α + B/D^β, fitted with a Huber loss on
# log-loss by L-BFGS from a grid of starts (`lab.scaling.fit_law`). A law is worth having if it
# predicts: we fit it on the smaller runs of a sweep, predict the largest run's held-out bits per
# byte (all the text of the works no run trained on) with a bootstrap interval *before* reading
# it, and only then compare. Bits per byte, not loss per token, so that laws of different
# vocabularies compare (`lab demo` chooses its model with such a law, `lab/laws/`). Then the law gives
# the compute-optimal frontier, beside Hoffmann et al.'s and Epoch AI's refit.
#
# The sweep is the one of notebook 02 (same parameters: trained if missing, loaded otherwise). To
# use the default CLI sweep, `python -m lab sweep --name default`, set `sweep_name = "default"`.

# %% tags=["parameters"]
runs_dir = "runs"
sweep_name = "tokens-vs-loss"
presets = ["sweep-d64", "sweep-d96", "sweep-d128", "sweep-d192"]
tokens = [250_000, 500_000, 1_000_000]
data = "shakespeare"
vocab_size = 2048
train = None  # None: lab.sweep.DEFAULT_TRAIN
threads = None
progress = True
n_boot = 200  # bootstrap refits for the intervals
confidence = 0.9

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
from IPython.display import display

from lab.laws import sweep_points
from lab.scaling import (
    COEFFICIENT_PRESETS,
    Prediction,
    bootstrap_fit,
    compute_optimal,
    predict_final_loss,
    predict_loss,
)
from lab.sweep import DEFAULT_TRAIN, Sweep, load_sweep, plan_sweep, read_manifest, run_sweep

if threads:
    torch.set_num_threads(threads)

# %% [markdown]
# ## The runs
# A recorded sweep is loaded as it is (an unfinished one is finished first, on its recorded grid);
# otherwise the grid above is trained. Do not run this while `python -m lab sweep` trains the same
# sweep: both would train the same run.

# %%
root = Path(runs_dir) / sweep_name
manifest = read_manifest(root)
if manifest is None:
    run_sweep(Sweep(name=sweep_name, presets=tuple(presets), tokens=tuple(tokens), data=data,
                    vocab_size=vocab_size, train=dict(train or DEFAULT_TRAIN)), Path(runs_dir), progress=progress)
elif manifest["status"] != "finished":  # finish the recorded grid, whatever the parameters above say
    run_sweep(plan_sweep(sweep_name, Path(runs_dir)), Path(runs_dir), progress=progress)
_, rows = load_sweep(root)
heldout = {p["run"]: p["heldout_bpb"] for p in sweep_points(root)[1]}
runs = pd.DataFrame([dict(r, heldout_bpb=heldout.get(r["run"])) for r in rows]).dropna(subset=["heldout_bpb"])
held_out = runs.loc[runs["compute"].idxmax()]
fit_runs = runs.drop(index=held_out.name)
print(f"{len(runs)} finished runs; fitting on {len(fit_runs)}, holding out the largest: {held_out['run']} "
      f"(N = {held_out['n_params']:,}, D = {held_out['tokens']:,}, C = {held_out['compute']:.2e} FLOPs)")
display(fit_runs[["run", "n_params", "tokens", "compute", "heldout_bpb"]])

# %% [markdown]
# ## Fit on the smaller runs, predict the largest
# N is `n_params` (the parameters that multiply: blocks and output head), D the training tokens,
# L the held-out bits per byte at the end of the run. The interval is a residual-bootstrap prediction interval
# (`lab.scaling.predict_final_loss`): it covers both the coefficients' and the runs' noise.

# %%
boot, prediction = None, None
try:
    boot = bootstrap_fit(fit_runs["n_params"], fit_runs["tokens"], fit_runs["heldout_bpb"], n_boot=n_boot,
                         confidence=confidence)
except ValueError as err:  # fewer runs than coefficients
    print(f"No fit: {err}. Train a larger grid (more presets or token budgets) and rerun.")
if boot is not None:
    coef = boot.fit.coef
    print(f"fit: E = {coef.E:.3f}, A = {coef.A:.4g}, B = {coef.B:.4g}, alpha = {coef.alpha:.3f}, "
          f"beta = {coef.beta:.3f} ({'converged' if boot.fit.converged else 'NOT converged'})")
    if len(boot.samples):
        prediction = predict_final_loss(boot, held_out["n_params"], held_out["tokens"])
        print(f"PREDICTED held-out bits/byte of {held_out['run']}: {prediction.loss:.3f} "
              f"({confidence:.0%} interval {prediction.low:.3f} .. {prediction.high:.3f})")
    else:  # every resample had fewer distinct runs than coefficients
        point = float(predict_loss(coef, held_out["n_params"], held_out["tokens"]))
        prediction = Prediction(held_out["n_params"], held_out["tokens"], point, -np.inf, np.inf, confidence)
        print(f"PREDICTED held-out bits/byte of {held_out['run']}: {point:.3f} (no interval: too few runs "
              "for a bootstrap)")

# %% [markdown]
# ## Now the measurement

# %%
measured = held_out["heldout_bpb"]
print(f"MEASURED held-out bits/byte of {held_out['run']}: {measured:.3f}")
if prediction is not None:
    rel = (prediction.loss - measured) / measured
    inside = prediction.low <= measured <= prediction.high
    print(f"relative error {rel:+.1%}; the measurement is {'inside' if inside else 'OUTSIDE'} the interval")
    problems = [text for bad, text in [
        (not inside, "the measurement falls outside the prediction interval"),
        (abs(rel) > 0.05, f"the point prediction is off by {abs(rel):.0%}"),
        (not boot.fit.converged, "L-BFGS did not converge"),
        (coef.E < 0.05 * runs["heldout_bpb"].min(), f"E = {coef.E:.3g}: the runs are too short to show the "
         "irreducible loss, so the law cannot separate it from the N and D terms"),
        (min(coef.alpha, coef.beta) < 0.02 or max(coef.alpha, coef.beta) > 2,
         "an exponent sits at the edge of plausibility"),
    ] if bad]
    if problems:
        print("The fit is poor here: " + "; ".join(problems) + ". Few, small, short runs make a loose "
              "law and a bootstrap over a dozen runs understates its spread; more presets and longer "
              "budgets tighten it.")
    else:
        print("The fit extrapolates well to the held-out run.")
    runs["fitted"] = predict_loss(coef, runs["n_params"], runs["tokens"])
    runs["role"] = np.where(runs["run"] == held_out["run"], "held out", "fitted on")
    fig = px.scatter(runs, x="fitted", y="heldout_bpb", color="role", hover_data=["run", "tokens"],
                     title="Measured vs. fitted held-out bits per byte")
    lo, hi = runs[["fitted", "heldout_bpb"]].min().min(), runs[["fitted", "heldout_bpb"]].max().max()
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line={"dash": "dot"}))
    fig.show()

# %% [markdown]
# ## The compute-optimal frontier
# For each budget C = 6ND, the N and D that minimise the law (Hoffmann et al. 2022, eq. 4). Our
# law and the published ones measure different things (bits per byte of Shakespeare against nats
# per token of MassiveText with a 32k vocabulary), so compare the *shape*: the exponents and the tokens-per-parameter
# ratio at the optimum, not the loss values. Our runs are drawn at their own (C, N).

# %%
laws = dict(COEFFICIENT_PRESETS)
if boot is not None:
    laws = {"this sweep": coef, **laws}
budgets = np.logspace(np.log10(runs["compute"].min() / 10), 24, 60)
frontier, summary = [], []
for name, law in laws.items():
    opt, at_1e21 = compute_optimal(law, budgets), compute_optimal(law, 1e21)
    frontier.append(pd.DataFrame({"law": name, "compute": budgets, "N_opt": opt.n_params}))
    summary.append({"law": name, "E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta,
                    "N_opt ~ C^": law.beta / (law.alpha + law.beta),
                    "tokens/param at 1e21 FLOPs": float(at_1e21.tokens / at_1e21.n_params)})
fig = px.line(pd.concat(frontier), x="compute", y="N_opt", color="law", log_x=True, log_y=True,
              title="Compute-optimal model size N_opt(C)")
fig.add_trace(go.Scatter(x=runs["compute"], y=runs["n_params"], mode="markers", name="our runs"))
fig.show()
display(pd.DataFrame(summary).round(4))
if prediction is not None:
    own = compute_optimal(coef, held_out["compute"])
    print(f"At the held-out run's compute ({held_out['compute']:.2e} FLOPs) this sweep's law would pick "
          f"N = {float(own.n_params):,.0f} on D = {float(own.tokens):,.0f} tokens; the run used "
          f"N = {held_out['n_params']:,} on {held_out['tokens']:,}.")
