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
from lab.recipes import compare, load_recipe

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
# The sweeps varied one setting at a time around one centre: sweep-d128 (d128 x 3 layers), 4,096
# pieces, batch 8 x 128, peak learning rate 4e-3, warm-up 5% of the steps. For each setting, the
# runs that differ from the centre in that setting alone, at each token budget: lower is better.
# Warm-up is shown as its share of the optimizer steps.

# %%
points["budget"] = points["tokens"].round(-4)  # whole optimizer steps of it: batch sizes round the budget
one_at_a_time = points[~points["sweep"].str.startswith("law")]  # the law sweeps are a ladder of sizes (below)
centre = {"lr": 4e-3, "batch_size": 8, "vocab_size": 4096, "shape": "d128xL3", "warmup_share": 0.05}
labels = {"lr": "peak learning rate", "batch_size": "batch (sequences of 128)", "vocab_size": "vocabulary",
          "shape": "width x depth", "warmup_share": "warm-up (share of the steps)"}
for factor, label in labels.items():
    others = {k: v for k, v in centre.items() if k != factor}
    same = pd.DataFrame(compare(one_at_a_time.to_dict("records"), factor, **others))
    same = same.drop_duplicates(subset=[factor, "budget"]).sort_values(factor)
    if same[factor].nunique() < 2:
        continue
    fig = px.line(same, x=factor, y=METRIC, color=same["budget"].map("{:,} tokens".format), markers=True,
                  log_x=factor == "lr", labels={METRIC: "held-out bits/byte", factor: label, "color": "budget"},
                  title=f"{label}, everything else at the centre")
    if factor in ("shape", "vocab_size", "batch_size"):
        fig.update_xaxes(type="category")
    fig.show()

# %% [markdown]
# ## The learning rate depends on the batch
#
# At a fixed number of training tokens a smaller batch is more optimizer steps: each line is one
# batch size, at the centre's shape, vocabulary and warm-up.

# %%
lr_batch = one_at_a_time[(one_at_a_time["shape"] == centre["shape"])
                         & (one_at_a_time["vocab_size"] == centre["vocab_size"])
                         & (one_at_a_time["warmup_share"] == centre["warmup_share"])]
lr_batch = lr_batch.drop_duplicates(subset=["lr", "batch_size", "budget"]).sort_values("lr")
fig = px.line(lr_batch, x="lr", y=METRIC, color=lr_batch["batch_size"].astype(str), facet_col="budget",
              markers=True, log_x=True, labels={METRIC: "held-out bits/byte", "lr": "peak learning rate",
                                                "color": "batch"},
              title="Held-out bits/byte against the peak learning rate, one line per batch size")
fig.show()

# %% [markdown]
# ## Warm-up across sizes and budgets
#
# The longer warm-up won at the centre; two whole sweeps of four sizes (law2 with 5%, law3 with
# 20%, otherwise the centre's recipe) check that it holds beyond one model and one budget.

# %%
ladder = points[points["sweep"].str.startswith("law")].sort_values("n_params")
fig = px.line(ladder, x="n_params", y=METRIC, color=ladder["warmup_share"].map("warm-up {:.0%}".format),
              facet_col="budget", markers=True, log_x=True,
              labels={METRIC: "held-out bits/byte", "n_params": "matmul parameters", "color": "warm-up"},
              title="5% against 20% warm-up, four sizes, three budgets")
fig.show()

# %% [markdown]
# ## The recipe the demo trains with
#
# The best settings above are the recipe of the scaling law the demo chooses its model with
# (`lab/laws/shakespeare.json`, fitted to the law3 runs): the law is fitted on runs trained with
# exactly this recipe, so its predictions are about the run the demo then trains.

# %%
law = load_law(corpus)
best = points.loc[points[METRIC].idxmin()]
print(f"best run of the sweeps: {best['run']} ({best['sweep']}): {best[METRIC]:.3f} bits/byte on "
      f"{best['tokens']:,} tokens")
print("the law's recipe:", {k: law.train[k] for k in ("batch_size", "seq_len", "lr", "warmup_fraction")
                            if k in law.train}, f"vocabulary {law.vocab_size}")
