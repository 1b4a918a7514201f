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
# # 06 · Instruction finetuning: the paper's LLaMA-I at lab scale
#
# Touvron et al. (2023, section 4) close their evaluation with a brief finetune on instruction
# data: LLaMA-I 65B reaches 68.9% on MMLU 5-shot against 63.4% for the base model (Table 10).
# This notebook does the same step on a lab model: an offline instruction set built from the
# Shakespeare corpus (who speaks this line, which play is it from, continue this speech, with
# held-out questions), a full finetune and a LoRA finetune of one base, and the base beside both
# on the held-out questions.

# %% tags=["parameters"]
runs_dir = "runs"
base = None  # a run name, a model folder or a .gguf file; None trains a small lab base here:
base_preset = "lab-1m"
base_tokens = 500_000
base_vocab = 4096
base_data = "shakespeare"
base_model = {}  # ModelConfig overrides for that base
base_train = {}  # TrainConfig fields for that base
per_play = 60  # training questions of each kind per play
epochs = 0.5
batch_size = 16
lora_rank = 8
compare = 300  # held-out questions scored before and after
suite = "commonsense"  # an evaluation suite of lab.evals, scored on the base and the full finetune
suite_limit = 20  # documents per benchmark
threads = 2

# %%
from pathlib import Path

import pandas as pd
import plotly.express as px
import torch

from lab.experiment import RunSpec, finished, run_training
from lab.finetune import FinetuneSpec, lora_spec, run_finetune
from lab.instruction_eval import before_after, spread, suite_before_after, suite_table
from lab.instructions import build_questions, write
from llama_core.chat import Conversation, get_template
from llama_core.config import TrainConfig
from llama_core.formats import load_model
from llama_core.generate import Sampling
from llama_core.run_folder import RunFolder
from llama_core.sft import render

torch.set_num_threads(threads)

# %% [markdown]
# ## The instruction set
# Every question is answered from the text. A tenth of the speeches (chosen by a hash, the same on
# every machine) give the validation "who" and "which" questions; three whole plays give only
# validation "continue" questions. The set is built in a few seconds and written as chat JSONL.

# %%
train_q, val_q = build_questions(per_play)
data_dir = Path(runs_dir) / "instructions"
train_file, val_file = write(data_dir, per_play)
print(f"{len(train_q):,} training and {len(val_q):,} held-out questions in {data_dir}")
pd.DataFrame([{"kind": q.kind, "prompt": q.prompt, "answer": q.answer, "choices": ", ".join(q.choices)}
              for q in train_q[:6]])

# %% [markdown]
# ## What the model is trained on
# A lab run has no chat template, so it is taught the lab's `turns` template. The loss is taken
# on the assistant's tokens only: its reply and the marker that ends it (marked below).

# %%
base_dir = Path(base) if base else Path(runs_dir) / f"sft-base-{base_preset}"
if base is None and not RunFolder(base_dir).checkpoints():
    spec = RunSpec(name=base_dir.name, preset=base_preset, data=base_data, vocab_size=base_vocab,
                   model_overrides=base_model, train=TrainConfig(**{**base_train, "tokens": base_tokens}))
    run_training(spec, Path(runs_dir), progress=False)
loaded = load_model(base_dir)
example = render(get_template("turns"), train_q[0].conversation(), loaded.tokenizer)
pd.DataFrame([{"token": loaded.tokenizer.piece(t), "trained on": m} for t, m in zip(example.ids, example.mask)]).T

# %% [markdown]
# ## Two finetunes of the same base
# Full finetuning updates every weight; LoRA trains rank-`r` adapters on the attention's query and
# value projections with the base frozen, and its run stores the adapters alone.

# %%
runs = {"full": None, f"LoRA r={lora_rank}": lora_spec(lora_rank, None, None)}
names = {}
for label, lora in runs.items():
    name = f"sft-{'lora' if lora else 'full'}-{base_dir.name}"
    names[label] = name
    if not finished(Path(runs_dir) / name):
        run_finetune(FinetuneSpec(name=name, checkpoint=str(base_dir), data=str(train_file), val_data=str(val_file),
                                  lora=lora, epochs=epochs, batch_size=batch_size), Path(runs_dir), progress=False)
curves = pd.DataFrame([{"run": label, "step": m["step"], "held-out assistant loss": m["val_loss"]}
                       for label, name in names.items() for m in RunFolder(Path(runs_dir) / name).read_metrics()
                       if "val_loss" in m])
px.line(curves, x="step", y="held-out assistant loss", color="run", markers=True)

# %% [markdown]
# ## Before and after, the paper's way
# Each held-out question with choices is multiple choice (each choice's log-likelihood as the
# assistant's reply, divided by its length in characters; chance is 25%), and the assistant-token
# loss is measured on every held-out question. A small base learns the format quickly; its
# choices move less, and with a few hundred questions the standard error is a few points.

# %%
questions = spread(val_q, compare)
rows = []
for label, name in names.items():
    table = before_after(str(base_dir), str(Path(runs_dir) / name), questions)
    if not rows:
        rows.append({"model": "base", **table["before"]})
    rows.append({"model": label, **table["after"]})
pd.DataFrame(rows).set_index("model").round(3)

# %% [markdown]
# ## The evaluation suites, before and after
# The paper puts LLaMA-I beside its base on MMLU (Table 10). Here the base and the full finetune
# answer the same first documents of each benchmark of a suite, scored as `lab eval --suite`
# scores them (zero- or few-shot text prompts, no chat template) and stored the same way: the
# finetune's record in its own evals.jsonl, the base's in the base's. A finetune on a narrow
# instruction set is not expected to lift commonsense reasoning; the table shows whether it cost any.

# %%
pair = suite_before_after(Path(runs_dir) / names["full"], suite, suite_limit, runs_dir=runs_dir)
pd.DataFrame(suite_table(pair["before"], pair["after"])).set_index("task").round(1)

# %% [markdown]
# A held-out question asked in chat, greedy: the finetuned model answers in the format and ends
# its reply; whether the answer is right is what the table above counts.

# %%
tuned = load_model(Path(runs_dir) / names["full"])
chat = Conversation(get_template(tuned.chat_template), tuned.tokenizer, tuned.model.config.max_seq_len)
chat.add("user", questions[0].prompt)
reply = "".join(chat.respond(tuned.model, Sampling(temperature=0.0, max_new_tokens=24)))
print(f"{questions[0].prompt}\nexpected: {questions[0].answer}\nreply: {reply}")
