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
# # 07 · The demo's recipe, chosen by sweeps
#
# The demo (`python -m lab demo`, run by `make run`) trains a small model on Shakespeare for a few
# minutes of CPU. Its training settings are not guessed: each one was chosen by a sweep that varied
# it alone around a base recipe, and every run was scored the same way, in bits per byte over all the
# text of the held-out works (the four plays no run trains on; `llama_core.split`). Bits per byte,
# not loss per token, so that runs with different vocabularies compare.
#
# The sweeps' results ship with the package (`lab/laws/shakespeare_recipe.json`, written by
# `python -m lab.recipes`), with the commands that ran them: this notebook reads them and trains
# nothing. Rerun any sweep with its command to check a point on your machine (the losses do not
# depend on the machine's speed; the times do).

# %% tags=["parameters"]
corpus = "shakespeare"

# %%
import pandas as pd
import plotly.express as px

from lab.laws import METRIC, load_law
from lab.recipes import load_recipe

recipe = load_recipe(corpus)
points = pd.DataFrame(recipe["points"])
print(recipe["note"])
for command in recipe["commands"]:
    print(" ", command)
columns = ["sweep", "run", "shape", "vocab_size", "tokens", "batch_size", "lr", "warmup_steps", "steps", METRIC]
points[columns].sort_values(["tokens", METRIC]).reset_index(drop=True)

# %% [markdown]
# ## One setting at a time
#
# The base is the recipe the demo trains with (its law's recipe, below). For each setting, the runs
# that differ from the base in that setting alone, at every token budget where there are several:
# lower is better. Warm-up is shown as its share of the optimizer steps.

# %%
law = load_law(corpus)
points["warmup_share"] = (points["warmup_steps"] / points["steps"]).round(2)
base = {"lr": law.train["lr"], "batch_size": law.train["batch_size"], "vocab_size": law.vocab_size,
        "shape": "d128xL3", "warmup_share": round(law.train.get("warmup_fraction", 0.05), 2)}
labels = {"lr": "peak learning rate", "batch_size": "batch (sequences of 128)", "vocab_size": "vocabulary",
          "shape": "width x depth", "warmup_share": "warm-up (share of the steps)"}
for factor, label in labels.items():
    others = {k: v for k, v in base.items() if k != factor}
    same = points[[all(p[k] == v for k, v in others.items()) for _, p in points.iterrows()]]
    same = same.drop_duplicates(subset=[factor, "tokens"]).sort_values(factor)
    if same[factor].nunique() < 2:
        continue
    fig = px.line(same, x=factor, y=METRIC, color=same["tokens"].map("{:,} tokens".format), markers=True,
                  log_x=factor == "lr", labels={METRIC: "held-out bits/byte", factor: label, "color": "budget"},
                  title=f"{label}: the others at the base recipe")
    if factor == "shape":
        fig.update_xaxes(type="category")
    fig.show()

# %% [markdown]
# ## The learning rate depends on the batch
#
# At a fixed number of training tokens a smaller batch is more optimizer steps: each line is one
# batch size, at the base shape, vocabulary and the 5% warm-up the first sweeps used.

# %%
lr_batch = points[(points["shape"] == base["shape"]) & (points["vocab_size"] == base["vocab_size"])
                  & (points["warmup_share"] <= 0.05)].drop_duplicates(subset=["lr", "batch_size", "tokens"])
fig = px.line(lr_batch.sort_values("lr"), x="lr", y=METRIC, color="batch_size", facet_col="tokens", markers=True,
              log_x=True, labels={METRIC: "held-out bits/byte", "lr": "peak learning rate", "batch_size": "batch"},
              title="Held-out bits/byte against the peak learning rate, one line per batch size")
fig.show()

# %% [markdown]
# ## The recipe the demo trains with
#
# The best settings above are the recipe of the scaling law the demo chooses its model with
# (`lab/laws/shakespeare.json`): the law is fitted on runs trained with exactly this recipe, so its
# predictions are about the run the demo then trains.

# %%
best = points.loc[points[METRIC].idxmin()]
print(f"best run of the sweeps: {best['run']} ({best['sweep']}): {best[METRIC]:.3f} bits/byte on "
      f"{best['tokens']:,} tokens")
print("the law's recipe:", base)
