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
# # 02 · Training tokens against loss
#
# Touvron et al. (2023) train smaller models on far more tokens than Chinchilla's compute-optimal
# recipe would, because what users pay for is inference: "the preferred model is not the fastest
# to train but the fastest at inference". Their Figure 1 shows the training loss of 7B...65B still
# falling after 1T tokens. This notebook reproduces that at lab scale: a family of small models
# (`lab.sweep`'s presets) trained on Shakespeare for several token budgets, with one shared
# tokenizer, and scored at the end of each run on all the text of works it never saw (the
# held-out works of `llama_core.data.Split`: 4 of the 42). Runs already recorded are loaded, not
# retrained; the rest are trained now (the default grid takes about 20 minutes on 2 idle CPU
# cores, `python -m lab sweep --dry-run` prints the estimate).

# %% tags=["parameters"]
runs_dir = "runs"  # the sweep's records go to runs_dir/sweep_name/PRESET-TOKENS
sweep_name = "tokens-vs-loss"
presets = ["sweep-d64", "sweep-d96", "sweep-d128", "sweep-d192"]  # lab.sweep.SWEEP_PRESETS
tokens = [250_000, 500_000, 1_000_000]
data = "shakespeare"
vocab_size = 2048
train = None  # None: lab.sweep.DEFAULT_TRAIN (batch 16 x 128, lr 2e-3); else a dict of TrainConfig fields
threads = None  # torch CPU threads; 1 is often faster on a busy machine
progress = True

# %%
from pathlib import Path

import pandas as pd
import plotly.express as px
import torch
from IPython.display import display

from lab.laws import sweep_points
from lab.records import read_metrics
from lab.sweep import DEFAULT_TRAIN, Sweep, estimate_seconds, load_sweep, run_sweep, smaller_beats_larger
from llama_core.flops import format_count

if threads:
    torch.set_num_threads(threads)

# %% [markdown]
# ## Train or load the family
# Each run is a normal run record; a finished run is skipped, an interrupted one resumes.

# %%
sweep = Sweep(name=sweep_name, presets=tuple(presets), tokens=tuple(tokens), data=data,
              vocab_size=vocab_size, train=dict(train or DEFAULT_TRAIN))
root = Path(runs_dir) / sweep.name
print(f"{len(sweep.runs())} runs in {root}; about {estimate_seconds(sweep) / 60:.1f} min on 2 idle CPU cores "
      "if none is recorded yet")
result = run_sweep(sweep, Path(runs_dir), progress=progress)
print(f"trained {len(result.trained)}, loaded {len(result.skipped)}, failed {len(result.failed)}")
_, rows = load_sweep(root)
# the whole held-out text's loss (nats/token) and bits/byte, measured at the end of each run; the
# sampled validation loss logged during training is replaced by it
heldout = {p["run"]: p for p in sweep_points(root)[1]}
rows = [dict(r, val_loss=heldout[r["run"]]["heldout_loss"] if r["run"] in heldout else None,
             heldout_bpb=heldout[r["run"]]["heldout_bpb"] if r["run"] in heldout else None) for r in rows]
table = pd.DataFrame(rows)
table["size"] = table["params"].map(format_count)
display(table[["run", "size", "tokens", "compute", "train_loss", "val_loss", "heldout_bpb", "elapsed_s", "status"]])

# %% [markdown]
# ## Figure 1 at lab scale
# Training loss against training tokens, the longest run of each model. As in the paper, every
# curve is still falling at the end of its budget, and the larger models sit lower at equal tokens.

# %%
longest = table.loc[table.groupby("preset")["tokens"].idxmax()]
curves = [{"model": f"{r.preset} ({r.size})", "tokens": m["tokens"], "train loss": m["train_loss"]}
          for r in longest.itertuples() for m in read_metrics(root / r.run) if m.get("train_loss") is not None]
px.line(pd.DataFrame(curves), x="tokens", y="train loss", color="model", log_x=True,
        title="Training loss vs. training tokens (cf. the paper's Figure 1)").show()

# %% [markdown]
# ## Smaller models, more tokens
# Held-out bits per byte (all the held-out works' text) against training compute (C = 6ND), one
# line per model size. At a fixed
# compute the larger model may win; but a smaller model trained on more tokens can end below a
# larger one trained on fewer, and it costs less at every generated token for ever after.

# %%
done = table.dropna(subset=["heldout_bpb"])
px.line(done, x="compute", y="heldout_bpb", color="preset", markers=True, log_x=True,
        hover_data=["run", "tokens", "size"],
        title="Held-out bits per byte vs. training compute, by model size").show()

pairs = smaller_beats_larger(rows)
if pairs:
    best = pairs[0]
    print(f"{best['smaller']} (val loss {best['smaller val loss']:.3f}) beats {best['larger']} "
          f"({best['larger val loss']:.3f}) at {best['inference saving (x)']:.1f}x lower inference cost, "
          f"for {best['training compute (x)']:.2f}x its training compute.")
    display(pd.DataFrame(pairs).round(3))
else:
    print("In this grid no smaller model trained longer beats a larger one trained shorter: "
          "widen the token budgets (--tokens) to see the crossing.")
