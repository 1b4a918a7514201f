"""`python -m lab bench decode`: decode tokens/s and MBU at batch 1, optionally beside Hugging Face.

One JSON line on stdout, also appended to runs/bench/decode.jsonl. A random-weight model of the
preset's shape, packed for decoding (llama_core.packing), runs greedy decoding of `--new` tokens
after a `--prompt`-token prompt (prefill included in the time). With `--vs hf`, transformers'
`generate` runs on the same weights in the same process, the two interleaved round by round so
that load on a shared machine hits both alike; each side reports its best round. MBU counts every
weight and the mean KV cache read once per token against the measured (or datasheet) memory
bandwidth.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from llama_core.config import get_preset
from llama_core.devices import device_name, peak_bandwidth, resolve_device, synchronize
from llama_core.flops import decode_bytes_per_token, mbu
from llama_core.generate import Sampling, generate
from llama_core.model import Transformer
from llama_core.packing import pack
from llama_core.run_folder import append_jsonl, bench_path

DEFAULT_OUT = bench_path("runs", "decode")


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="lab-15m", help="model shape (see `python -m lab presets`)")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--new", type=int, default=256, help="new tokens per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (after a warm-up)")
    parser.add_argument("--vs", choices=["hf"], default=None, help="also time transformers' generate")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL file the line is appended to")


def run(args) -> int:
    if args.prompt < 1 or args.new < 1 or args.rounds < 1:
        raise ValueError("--prompt, --new and --rounds must be positive")
    cfg = get_preset(args.preset)
    # the weights are random, so only the shape matters: stretch the context to fit the run
    # (lab-15m's 256 positions cannot hold the standard 16 + 256)
    cfg = cfg.replace(max_seq_len=max(cfg.max_seq_len, args.prompt + args.new))
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    with device:
        model = Transformer(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt,), generator=torch.Generator().manual_seed(1)).tolist()
    sampling = Sampling(max_new_tokens=args.new, temperature=0.0)

    def ours() -> list[int]:
        return generate(model, prompt, sampling)

    sides = {"lab": ours}
    if args.vs == "hf":  # from the plain weights, before packing renames them
        sides["hf"] = _hf_generate(model, prompt, args.new, device)
    pack(model)
    best: dict[str, float] = {}
    tokens: dict[str, list[int]] = {}
    for name, fn in sides.items():  # warm-up: allocations, first-call dispatch
        tokens[name] = fn()
    for _ in range(args.rounds):
        for name, fn in sides.items():
            synchronize(device)
            start = time.perf_counter()
            out = fn()
            synchronize(device)
            best[name] = max(best.get(name, 0.0), len(out) / (time.perf_counter() - start))
    bandwidth, bandwidth_source = peak_bandwidth(device)
    step_bytes = decode_bytes_per_token(cfg, args.prompt + args.new // 2, bytes_per_param=4)
    record = {
        "bench": "decode", "preset": args.preset, "batch": 1, "prompt": args.prompt, "new_tokens": args.new,
        "max_seq_len": cfg.max_seq_len, "dtype": "float32", "device": device_name(device),
        "threads": torch.get_num_threads(),
        "host": platform.node(), "tokens_per_s": round(best["lab"], 1),
        "mbu": round(mbu(best["lab"], step_bytes, bandwidth), 4),
        "bandwidth_bytes_per_s": bandwidth, "bandwidth_source": bandwidth_source,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if "hf" in best:
        record.update(hf_tokens_per_s=round(best["hf"], 1), speedup_vs_hf=round(best["lab"] / best["hf"], 2),
                      hf_mbu=round(mbu(best["hf"], step_bytes, bandwidth), 4),
                      same_tokens_as_hf=tokens["lab"] == tokens["hf"])
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    append_jsonl(args.out, record)
    return 0


def _hf_generate(model: Transformer, prompt: list[int], new: int, device: torch.device):
    """A closure running transformers' greedy `generate` on `model`'s weights."""
    import transformers

    from llama_core.formats.hf import config_to_hf, state_dict_to_hf

    fields = {k: v for k, v in config_to_hf(model.config).items() if k not in ("architectures", "torch_dtype")}
    with device:
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields)).eval()
    hf.load_state_dict(state_dict_to_hf(model.state_dict(), model.config), strict=False)
    if model.config.tie_embeddings:
        hf.tie_weights()
    ids = torch.tensor([prompt], device=device)

    def run_hf() -> list[int]:
        with torch.inference_mode():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[0, len(prompt):].tolist()

    return run_hf
