"""What the pages need, and nothing about widgets: model caching, checkpoints, runs, measurements.

Models are cached once per process (`st.cache_resource`) and shared by every browser session.
A model's KV cache lives in its modules, so generation and attention recomputation on one model
take that model's lock: two tabs never interleave their decoding, and each keeps its own
conversation in its own session state.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from lab.records import list_runs, read_config, read_jsonl, read_metrics, summarize
from llama_core import carbon
from llama_core.attention import attend
from llama_core.chat import Conversation, get_template
from llama_core.checkpoint import list_checkpoints
from llama_core.config import PAPER_PRESETS, PRESETS, get_preset
from llama_core.devices import device_name, peak_flops, resolve_device
from llama_core.flops import param_count, train_flops_per_token
from llama_core.formats import Checkpoint, load_checkpoint, smollm2_path
from llama_core.generate import Sampling, generate
from llama_core.model import Transformer

MAX_PROMPT_CHARS = 8_000  # a chat message longer than this is refused with a message
MAX_ATTENTION_TOKENS = 96  # beyond this an attention heatmap is unreadable and slow to draw
BUNDLED = "SmolLM2-135M-Instruct (bundled GGUF)"

# The paper's throughput: 65B at ~380 tokens/s/GPU on 2048 A100-80GB; tokens per model (Table 2).
PAPER_TOKENS_PER_GPU_S = 380
PAPER_TRAINING_TOKENS = {"llama-7b": 1.0e12, "llama-13b": 1.0e12, "llama-33b": 1.4e12, "llama-65b": 1.4e12}


def runs_dir() -> Path:
    return Path(os.environ.get("LLAMA_LAB_RUNS_DIR", "runs"))


def model_dirs() -> list[Path]:
    """The folders a user-typed checkpoint path may point into (nowhere else is read)."""
    extra = [Path(p) for p in os.environ.get("LLAMA_LAB_MODEL_DIRS", "").split(os.pathsep) if p]
    return [runs_dir(), Path("models"), *extra]


# ------------------------------------------------------------------------------------ checkpoints

def checkpoint_choices() -> dict[str, str]:
    """Label -> checkpoint spec: trained runs, then the bundled SmolLM2 model."""
    choices = {f"run: {r.name}": str(r) for r in list_runs(runs_dir()) if list_checkpoints(r)}
    try:
        choices[BUNDLED] = str(smollm2_path())
    except FileNotFoundError:
        pass
    return choices


def safe_checkpoint_path(text: str) -> Path:
    """A user-typed path, accepted only inside `model_dirs()` and only if it exists."""
    text = text.strip()
    if not text:
        raise ValueError("type a path to a checkpoint folder or .gguf file")
    if "\x00" in text:
        raise ValueError("the path contains a NUL character")
    path = Path(text).expanduser()
    resolved = path.resolve()
    roots = [d.resolve() for d in model_dirs()]
    if not any(resolved == root or root in resolved.parents for root in roots):
        allowed = ", ".join(str(d) for d in model_dirs())
        raise ValueError(f"{text} is outside the folders the app reads ({allowed}); put the checkpoint there "
                         "or add its folder to LLAMA_LAB_MODEL_DIRS")
    if not resolved.exists():
        raise ValueError(f"{text} does not exist")
    return resolved


@dataclass
class LoadedModel:
    checkpoint: Checkpoint
    lock: threading.Lock


@st.cache_resource(max_entries=3, show_spinner=False)
def load_model(spec: str) -> LoadedModel:
    """Load a checkpoint once per process (the app runs on the CPU or the detected accelerator)."""
    ckpt = load_checkpoint(spec, device=resolve_device("auto"))
    return LoadedModel(ckpt, threading.Lock())


def template_has_system(template_name: str) -> bool:
    return template_name in ("chatml", "llama2")


# ------------------------------------------------------------------------------------------ chat

def new_conversation(loaded: LoadedModel, system: str | None) -> Conversation:
    ckpt = loaded.checkpoint
    return Conversation(get_template(ckpt.chat_template), ckpt.tokenizer, ckpt.model.config.max_seq_len,
                        system=system or None, add_bos=ckpt.add_bos)


def check_message(text: str) -> str:
    """The message to send, or a ValueError that tells the user what is wrong."""
    if not text or not text.strip():
        raise ValueError("the message is empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the message has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}. "
                         "Shorten it.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate: no tokenizer can encode it
        raise ValueError(f"the message holds an invalid character at position {err.start} "
                         f"({text[err.start]!r}); retype or paste it again") from None
    return text


def decode_upload(data: bytes, name: str = "the file") -> str:
    """An uploaded file's text; a ValueError that says what to do if it is not UTF-8 text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{name} is not UTF-8 text (byte {err.start} is {data[err.start]:#04x}); "
                         "save it as UTF-8 and upload it again") from None


class TimedReply:
    """Streams a reply's text and afterwards knows its token count and tokens/s."""

    def __init__(self, loaded: LoadedModel, conversation: Conversation, sampling: Sampling):
        self.loaded, self.conversation, self.sampling = loaded, conversation, sampling
        self.text, self.tokens, self.seconds = "", 0, 0.0

    def __iter__(self) -> Iterator[str]:
        with self.loaded.lock, torch.inference_mode():
            start = time.perf_counter()
            for piece in self.conversation.respond(self.loaded.checkpoint.model, self.sampling):
                self.text += piece
                yield piece
            self.seconds = time.perf_counter() - start
        self.tokens = self.conversation.last_reply_tokens  # decoded, not re-encoded from the text

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


# ------------------------------------------------------------------------------------- attention

@torch.no_grad()
def attention_weights(loaded: LoadedModel, prompt: str, layer: int) -> tuple[list[str], torch.Tensor]:
    """(token labels, weights (H, T, T)) of `layer`, recomputed with the eager backend.

    The model runs as it always does up to the chosen layer; only that layer's attention is
    recomputed explicitly, so a model served by SDPA or xformers is shown without changing it.
    """
    ckpt = loaded.checkpoint
    model, tokenizer = ckpt.model, ckpt.tokenizer
    if not prompt.strip():
        raise ValueError("type a prompt to see its attention")
    ids = tokenizer.encode(prompt, bos=ckpt.add_bos)
    if len(ids) > MAX_ATTENTION_TOKENS:
        raise ValueError(f"the prompt is {len(ids)} tokens; attention maps are drawn for at most "
                         f"{MAX_ATTENTION_TOKENS}. Shorten it.")
    if not 0 <= layer < model.config.n_layers:
        raise ValueError(f"layer must be within 0..{model.config.n_layers - 1}")
    captured = {}

    class _Stop(Exception):
        pass

    def grab(module, args):
        captured["x"] = args[0]
        raise _Stop  # the layers after this one are not needed

    block = model.layers[layer]
    with loaded.lock:
        handle = block.register_forward_pre_hook(grab)
        try:
            model(torch.tensor([ids], device=model.output.weight.device))
        except _Stop:
            pass
        finally:
            handle.remove()
    T = len(ids)
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    q, k, v = block.attention.qkv(block.attention_norm(captured["x"]), cos, sin)
    _, weights = attend(q, k, v, backend="eager", return_weights=True)  # (1, H, T, T)
    labels = [f"{i}:{tokenizer.piece(t)}" for i, t in enumerate(ids)]
    return labels, weights[0].float().cpu()


# ------------------------------------------------------------------------------------ throughput

def measure_training(preset: str, batch: int, seq: int, on_round=None) -> dict:
    from lab.benchmarks.train import measure_train

    return measure_train(preset, batch, seq, steps=2, rounds=2, on_round=on_round)


def measure_decoding(preset: str, new_tokens: int = 64, on_round=None, rounds: int = 2) -> dict:
    """Greedy decode tokens/s of a random-weight model of `preset` at batch 1."""
    cfg = get_preset(preset)
    device = resolve_device("auto")
    torch.manual_seed(0)
    model = Transformer(cfg).to(device).eval()
    prompt = list(range(1, 17))
    sampling = Sampling(max_new_tokens=new_tokens, temperature=0.0)
    generate(model, prompt, Sampling(max_new_tokens=4, temperature=0.0))  # warm-up
    best = 0.0
    for r in range(rounds):
        start = time.perf_counter()
        with torch.no_grad():
            out = generate(model, prompt, sampling)
        best = max(best, len(out) / (time.perf_counter() - start))
        if on_round:
            on_round(r + 1, rounds)
    return {"bench": "decode", "preset": preset, "tokens_per_s": round(best, 1), "device": device_name(device)}


def paper_projection(tokens_per_s: float, preset: str, seq: int) -> list[dict]:
    """How long this machine would take to train each paper model, at the MFU measured on `preset`.

    Achieved FLOP/s = measured tokens/s x FLOPs/token of the measured preset; each paper model
    then needs 6N+attention FLOPs per token for its Table 2 token budget.
    """
    achieved = tokens_per_s * train_flops_per_token(get_preset(preset), seq)
    rows = []
    for name in PAPER_PRESETS:
        cfg = PRESETS[name]
        flops = train_flops_per_token(cfg, cfg.max_seq_len) * PAPER_TRAINING_TOKENS[name]
        seconds = flops / achieved
        paper_gpu_s = PAPER_TRAINING_TOKENS[name] / PAPER_TOKENS_PER_GPU_S * (65.2e9 / param_count(cfg)) \
            if name != "llama-65b" else PAPER_TRAINING_TOKENS[name] / PAPER_TOKENS_PER_GPU_S
        rows.append({"model": name, "training tokens": PAPER_TRAINING_TOKENS[name], "FLOPs": flops,
                     "this machine (years)": seconds / 3.15e7,
                     "2048 A100 at the paper's rate (days)": paper_gpu_s / 2048 / 86400})
    return rows


def bench_records(kind: str) -> list[dict]:
    """Lines of runs/bench/KIND.jsonl written by `python -m lab bench KIND`."""
    path = runs_dir() / "bench" / f"{kind}.jsonl"
    return read_jsonl(path)


def machine_peak() -> tuple[float, str]:
    device = resolve_device("auto")
    return peak_flops(device, torch.float32 if device.type != "cuda" else torch.bfloat16)


# ------------------------------------------------------------------------------------ runs, carbon

def run_table(pue: float = carbon.PAPER_PUE, kg_per_kwh: float = carbon.US_AVERAGE_KG_PER_KWH) -> list[dict]:
    """A row per run: summary plus its energy and CO2eq (power measured where known, else assumed)."""
    rows = []
    for run_dir in list_runs(runs_dir()):
        try:
            summary = summarize(run_dir)
            config = read_config(run_dir)
        except (ValueError, OSError) as err:  # a damaged record must not take the page down
            rows.append({"run": run_dir.name, "status": f"unreadable: {err}"})
            continue
        elapsed = summary["elapsed_s"] or 0.0
        measured = [m for m in read_metrics(run_dir) if m.get("energy_j") is not None]
        if measured and elapsed > 0:  # a hardware counter (RAPL, NVML) saw the run: use its joules
            joules = measured[-1]["energy_j"]
            watts, source = joules / elapsed, f"measured ({measured[-1].get('energy_source', 'counter')})"
        else:
            watts, source = carbon.device_power(config.get("hardware", {}).get("device_name", "CPU"))
        footprint = carbon.run_footprint(elapsed, watts, pue, kg_per_kwh)
        rows.append({**summary, "power_w": watts, "power_source": source, "kwh": footprint.kwh,
                     "g_co2eq": footprint.kg_co2eq * 1000})
    return rows


def run_metrics(name: str) -> list[dict]:
    return [m for m in read_metrics(runs_dir() / name) if m.get("train_loss") is not None]
