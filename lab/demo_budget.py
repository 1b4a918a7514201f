"""The budgeted demo: time each candidate shape's training steps here, choose by the shipped law, compare.

The candidates are the shapes the law was fitted on (its sweep presets), trained with the sweep's
own recipe, so the law's prediction is about the run that follows. The choice depends on this
machine's speed, so it is recorded beside the run (`demo_choice.json`, owned by this module) and a
resumed demo continues the recorded choice instead of measuring again.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from lab.demo_choice import Choice, choose, explain
from lab.experiment import RunSpec
from lab.laws import ShippedLaw
from lab.sweep import model_config, resolve_preset
from llama_core.atomic import atomic_write_json
from llama_core.config import TrainConfig
from llama_core.flops import matmul_params
from llama_core.model import Transformer
from llama_core.train import build_state, train_step

CHOICE_FILE = "demo_choice.json"
TIMED_STEPS = 5  # after one untimed warm-up step; the median counts (3 misjudged a loaded machine 2x)


PAUSES = 10  # intermediate evaluations and checkpoints in a demo run, at most (beyond the law's own spacing)


def demo_spec(law: ShippedLaw, preset: str, tokens: int, name: str) -> RunSpec:
    """A run of `preset` for `tokens` with the recipe the law was fitted on.

    A long run spaces its intermediate evaluations and checkpoints to make at most `PAUSES` of each
    (neither changes what is learned; the law's every-100-steps made 41 in a 5-minute demo). Measured
    on 2 cores, the demo still trains about 13% past its budget either way (340 s with 41 pauses,
    343 s with 10): the timed steps run faster than the sustained run, which the choice does not
    yet correct for."""
    base, overrides = resolve_preset(preset)
    train = TrainConfig.from_dict({**law.train, "tokens": tokens})
    every = {k: max(law.train[k], train.steps // PAUSES) for k in ("eval_every", "checkpoint_every") if k in law.train}
    train = train.replace(**every) if every else train
    return RunSpec(name=name, preset=base, data=law.data, vocab_size=law.vocab_size, model_overrides=overrides,
                   train=train)


def candidates(law: ShippedLaw) -> list[str]:
    """The shapes the law was fitted on, smallest first."""
    sizes = {r["preset"]: r["n_params"] for r in law.runs}
    return sorted(sizes, key=sizes.get)


class _RandomBatches:
    """One fixed batch of random ids, forever: speed does not depend on the text."""

    def __init__(self, vocab: int, batch: int, seq: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, vocab, (batch, seq), generator=g)
        self.y = torch.randint(0, vocab, (batch, seq), generator=g)

    def __next__(self):
        return self.x, self.y


def measure_rate(law: ShippedLaw, preset: str, steps: int = TIMED_STEPS) -> float:
    """Training tokens per second of `preset` with the law's recipe, on this machine's CPU, now."""
    cfg = model_config(preset, law.vocab_size)
    step_tokens = law.train["batch_size"] * law.train["seq_len"]
    train = TrainConfig.from_dict({**law.train, "tokens": step_tokens * (steps + 1)})
    torch.manual_seed(0)
    state = build_state(Transformer(cfg), train, _RandomBatches(cfg.vocab_size, train.batch_size, train.seq_len))
    device = torch.device("cpu")
    train_step(state, train, device)  # warm-up: allocation, first-call costs
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step(state, train, device)
        times.append(time.perf_counter() - t0)
    return step_tokens / statistics.median(times)


def plan(law: ShippedLaw, budget_s: float, presets: list[str] | None = None,
         progress=print) -> tuple[Choice, dict[str, tuple[int, float]]]:
    """Measure every candidate, then choose for `budget_s` seconds of training."""
    rates = {}
    for preset in presets or candidates(law):
        rate = measure_rate(law, preset)
        rates[preset] = (matmul_params(model_config(preset, law.vocab_size)), rate)
        progress(f"  {preset:<12} {rate:>9,.0f} tokens/s")
    step_tokens = law.train["batch_size"] * law.train["seq_len"]
    return choose(law.coef, rates, budget_s, step_tokens=step_tokens), rates


def choice_record(law: ShippedLaw, choice: Choice | None, preset: str, tokens: int) -> dict:
    """What a demo records about how it was chosen: budget, options, prediction and interval."""
    n_params = matmul_params(model_config(preset, law.vocab_size))
    pred = law.predict(n_params, tokens)
    record = {"preset": preset, "tokens": tokens, "n_params": n_params, "law": f"lab/laws/{law.corpus}.json",
              "predicted_bpb": pred.loss, "interval": [pred.low, pred.high], "confidence": pred.confidence,
              "fitted_range": law.fitted_range(), "chosen_by": "override" if choice is None else "budget",
              "threads": torch.get_num_threads()}
    if choice is not None:
        record.update(budget_s=choice.budget_s, options=[vars(o) for o in choice.options])
    return record


def write_choice(run_dir: Path, record: dict) -> None:
    atomic_write_json(Path(run_dir) / CHOICE_FILE, record)


def read_choice(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CHOICE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def outcome(record: dict, heldout_bpb: float) -> dict:
    """The measured held-out bits per byte beside the prediction, and how far off it was."""
    error = (record["predicted_bpb"] - heldout_bpb) / heldout_bpb
    low, high = record["interval"]
    return {"heldout_bpb": heldout_bpb, "predicted_bpb": record["predicted_bpb"], "relative_error": error,
            "inside_interval": low <= heldout_bpb <= high}


def budget_run(law: ShippedLaw, budget_s: float, name: str, progress=print) -> tuple[RunSpec, dict]:
    """Measure, choose and describe: the spec to train and the record of how it was chosen."""
    progress(f"Timing {TIMED_STEPS} training steps of each candidate shape on this machine "
             f"(torch threads: {torch.get_num_threads()})...")
    choice, _ = plan(law, budget_s, progress=progress)
    record = choice_record(law, choice, choice.best.preset, choice.best.tokens)
    progress(f"\nThe shipped law (lab/laws/{law.corpus}.json, fitted on {len(law.runs)} runs) for "
             f"{budget_s:g} s of training:")
    for line in explain(choice):
        progress("  " + line)
    low, high = record["interval"]
    progress(f"Chosen: {choice.best.preset}, {record['n_params']:,} parameters on {choice.best.tokens:,} tokens; "
             f"predicted held-out {record['predicted_bpb']:.3f} bits/byte (95% interval {low:.3f}-{high:.3f})")
    n_range, d_range = record["fitted_range"]["n_params"], record["fitted_range"]["tokens"]
    if not (n_range[0] <= record["n_params"] <= n_range[1] and d_range[0] <= choice.best.tokens <= d_range[1]):
        progress(f"  (an extrapolation: the law was fitted on {n_range[0]:,}-{n_range[1]:,} parameters and "
                 f"{d_range[0]:,}-{d_range[1]:,} tokens)")
    return demo_spec(law, choice.best.preset, choice.best.tokens, name), record
