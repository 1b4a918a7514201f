"""Which checkpoints the app offers, where a typed path may point, and loading each once per process.

Models are cached once per process and quantization (`st.cache_resource`) and shared by every
browser session: a quantized model is its own copy, loaded for that (checkpoint, quantization).
A model's KV cache lives in its modules, so generation and attention recomputation on one model
take that model's lock: two tabs never interleave their decoding, and each keeps its own
conversation in its own session state.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app.services.runs import runs_dir
from lab.records import list_runs
from llama_core.adapted import recorded_chat
from llama_core.devices import resolve_device
from llama_core.formats import LoadedModel, load_for_decoding, smollm2_path
from llama_core.formats.quantized import stored_quantization
from llama_core.quantize import MODES, quantization_of, weight_bytes
from llama_core.run_folder import RunFolder

BUNDLED = "SmolLM2-135M-Instruct (bundled, instruction-tuned)"
RUN_PREFIX = "run: "
QUANTIZATIONS = MODES  # none, int8, int4


def model_dirs() -> list[Path]:
    """The folders a user-typed checkpoint path may point into (nowhere else is read)."""
    extra = [Path(p) for p in os.environ.get("LLAMA_LAB_MODEL_DIRS", "").split(os.pathsep) if p]
    return [runs_dir(), Path("models"), *extra]


def checkpoint_choices() -> dict[str, str]:
    """Label -> checkpoint spec: the bundled chat model first (the default), then trained runs."""
    choices = {}
    try:
        choices[BUNDLED] = str(smollm2_path())
    except FileNotFoundError:
        pass  # not installed: the runs remain
    choices.update({f"{RUN_PREFIX}{r.name}{finetuned_label(r)}": str(r) for r in list_runs(runs_dir())
                    if RunFolder(r).checkpoints()})
    return choices


def finetuned_label(run: Path) -> str:
    """' (finetuned, template T)' for a run made by `lab finetune`; '' for a pretraining run."""
    try:
        template, _ = recorded_chat(run)
    except (ValueError, OSError):  # a damaged record: the run is still offered, loading will say why
        return ""
    return f" (finetuned, template {template})" if template else ""


def kind(spec: str) -> str:
    """"bundled" (the instruction-tuned SmolLM2), "run" (trained by this lab), "finetuned" (a run of
    `lab finetune`: it follows its chat template) or "path" (anything else)."""
    if RunFolder(spec).is_run():
        return "finetuned" if finetuned_label(Path(spec)) else "run"
    try:
        return "bundled" if Path(spec) == smollm2_path() else "path"
    except FileNotFoundError:
        return "path"


def default_quantization(spec: str) -> str:
    """What the Chat page starts with: the checkpoint's own quantization (4-bit for the bundled
    SmolLM2, float for a run), which every device now runs fast (llama_core.quantize)."""
    return own_quantization(spec)


@st.cache_data(max_entries=32, show_spinner=False)
def own_quantization(spec: str) -> str:
    """The quantization a checkpoint stores its weights in ("int4" for the bundled Q4_1 GGUF, "none"
    for a float run): what the Chat page starts with."""
    try:
        return stored_quantization(spec)
    except (ValueError, OSError):  # loading will say what is wrong with it
        return "none"


def safe_checkpoint_path(text: str) -> Path:
    """A user-typed path, accepted only inside `model_dirs()` and only if it exists."""
    text = text.strip()
    if not text:
        raise ValueError("type a path to a checkpoint folder or .gguf file")
    if "\x00" in text:
        raise ValueError("the path contains a NUL character")
    resolved = Path(text).expanduser().resolve()
    roots = [d.resolve() for d in model_dirs()]
    if not any(resolved == root or root in resolved.parents for root in roots):
        allowed = ", ".join(str(d) for d in model_dirs())
        raise ValueError(f"{text} is outside the folders the app reads ({allowed}); put the checkpoint there "
                         "or add its folder to LLAMA_LAB_MODEL_DIRS")
    if not resolved.exists():
        raise ValueError(f"{text} does not exist")
    return resolved


@dataclass
class ServedModel:
    """A loaded model and the lock that keeps two sessions from decoding on it at once."""

    loaded: LoadedModel
    lock: threading.Lock

    @property
    def config(self):
        return self.loaded.model.config

    @property
    def quant(self) -> str:
        """What the served weights are: "none" (float), "int8" or "int4"."""
        return quantization_of(self.loaded.model)

    def describe(self) -> str:
        """One line: format, size, weights, chat template, context."""
        weights = "float" if self.quant == "none" else self.quant
        return (f"{self.loaded.format} checkpoint · {self.loaded.model.num_params / 1e6:,.1f}M parameters · "
                f"{weights} weights, {weight_bytes(self.loaded.model) / 1e6:,.0f} MB · "
                f"template: {self.loaded.chat_template} · context {self.config.max_seq_len:,} tokens")


@st.cache_resource(max_entries=4, show_spinner=False)
def serve(spec: str, quant: str = "none") -> ServedModel:
    """Load a checkpoint once per process and quantization (the app runs on the CPU or the detected
    accelerator), in the decode-time layout: packed float, or int8/int4 weights (llama_core.quantize).

    The checkpoint's own quantization keeps its stored blocks (the bundled GGUF's Q4_1) as they are."""
    if quant not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quant!r}; choose one of {QUANTIZATIONS}")
    loaded, _ = load_for_decoding(spec, quant, resolve_device("auto"))  # same function, faster generation
    return ServedModel(loaded, threading.Lock())
