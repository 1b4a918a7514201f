"""`python -m lab bench quant-quality`: what int8 and int4 weights cost in held-out bits per byte.

A trained checkpoint (a lab run, the bundled SmolLM2, any format `load_model` reads) scores the
same held-out text as float32, int8 (per output channel) and int4 (groups of `--group-size`, 32)
with llama_core.evaluate.perplexity; one JSON line on stdout, also appended to
runs/bench/quant_quality.jsonl, gives each one's bits/byte, perplexity, weight bytes and seconds,
and the relative change against float32. The text is the held-out documents of `--data` under the
lab's split rule (llama_core.split: a run trained on that source never saw them), cut to
`--max-bytes`. A checkpoint stored quantized keeps its own blocks for its own mode (the bundled
GGUF's Q4_1 for int4), and its float32 side is those blocks dequantized: its int4 row then measures
only the head, the one float matrix the file leaves.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from llama_core.data import resolve_source
from llama_core.devices import device_name, resolve_device
from llama_core.evaluate import perplexity
from llama_core.formats import load_model, resolve_path
from llama_core.formats.quantized import stored_quantization
from llama_core.quantize import MODES, quantization_of, quantize, weight_bytes
from llama_core.run_folder import append_jsonl, bench_path

DEFAULT_OUT = bench_path("runs", "quant_quality")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="smollm2", help="a run name, any checkpoint path, or smollm2")
    parser.add_argument("--data", default="shakespeare", help="the source whose held-out documents are scored")
    parser.add_argument("--max-bytes", type=int, default=20_000, help="held-out text scored (UTF-8 bytes)")
    parser.add_argument("--window", type=int, default=512, help="tokens per scored window (at most the context)")
    parser.add_argument("--group-size", type=int, default=32, help="int4's inputs per scale and zero point "
                        "(int8 is per output channel, as `lab chat --quant int8` runs it)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL file the line is appended to")


def heldout_text(data: str, max_bytes: int) -> str:
    """The held-out chunks of a source (llama_core.split's rule), joined, cut to `max_bytes`."""
    source = resolve_source(data)
    split = source.split()
    text = "".join(chunk for chunk_id, chunk in source.chunks() if split.holds(chunk_id))
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def run(args) -> int:
    if args.max_bytes < 1 or args.window < 2:
        raise ValueError("--max-bytes must be positive and --window at least 2")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    text = heldout_text(args.data, args.max_bytes)
    own = stored_quantization(resolve_path(args.checkpoint))
    record = {"bench": "quant-quality", "checkpoint": str(args.checkpoint), "data": args.data,
              "device": device_name(device), "threads": torch.get_num_threads(), "host": platform.node(),
              "stored_quantization": own, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for mode in MODES:
        ckpt = load_model(args.checkpoint, device=device, keep_quantized=mode != "none" and mode == own)
        if mode != "none":
            quantize(ckpt.model, mode, args.group_size if mode == "int4" else None)
        start = time.perf_counter()
        scored = perplexity(ckpt.model, ckpt.tokenizer, text, window=args.window, add_bos=ckpt.add_bos)
        record.update(tokens=scored["tokens"], bytes=scored["bytes"])
        record[mode] = {"bits_per_byte": round(scored["bits_per_byte"], 5),
                        "perplexity": round(scored["perplexity"], 4),
                        "weight_bytes": weight_bytes(ckpt.model), "weights": quantization_of(ckpt.model),
                        "seconds": round(time.perf_counter() - start, 2)}
        if mode != "none":
            base = record["none"]["bits_per_byte"]
            record[mode]["bpb_change_vs_float32"] = round(scored["bits_per_byte"] / base - 1, 5)
        del ckpt
    print(json.dumps(record, sort_keys=True), flush=True)
    append_jsonl(args.out, record)
    return 0
