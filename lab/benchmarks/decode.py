"""`python -m lab bench decode`: decode tokens/s and MBU at batch 1, optionally beside Hugging Face.

One JSON line per quantization on stdout, also appended to runs/bench/decode.jsonl. A random-weight
model of the preset's shape, packed for decoding (llama_core.packing) or quantized
(llama_core.quantize, `--quant int8|int4|all`), runs greedy decoding of `--new` tokens after a
`--prompt`-token prompt (prefill included in the time; a checkpoint reads the start of Hamlet, a
random preset random ids); `--compile` adds each side again with its
decode step compiled (llama_core.compiled). `--checkpoint` times a real checkpoint's
weights instead (SmolLM2, a run, a quantized folder): a checkpoint stored quantized keeps its own
blocks for its own mode (the bundled GGUF's Q4_1 for int4), as chat serves it. With `--vs hf`,
transformers' `generate` runs on the same weights in the same process; with `--vs llamacpp`, llama.cpp
runs the lab's GGUF export of the checkpoint (lab.benchmarks.llamacpp_side). Every side is interleaved
round by round so that load on a shared machine hits all alike, and reports its best round. MBU
counts the bytes of the weights a step reads in their stored form, plus the mean KV cache, against
the bandwidth a one-row product reaches over weights larger than the cache (llama_core.bandwidth;
a GPU's datasheet figure). `--profile` adds where one decode step's time goes
(lab.benchmarks.profile_step)."""

from __future__ import annotations

import copy
import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch

from lab.benchmarks.llamacpp_side import check_llamacpp, llamacpp_sides
from lab.benchmarks.profile_step import format_profile, profile_decode
from llama_core.bandwidth import peak_bandwidth
from llama_core.compiled import compile_decoding
from llama_core.config import get_preset
from llama_core.data import shakespeare_files
from llama_core.devices import device_name, resolve_device, synchronize
from llama_core.flops import decode_bytes_per_token, kv_cache_bytes, mbu
from llama_core.formats import LoadedModel, load_model, resolve_path
from llama_core.formats.quantized import stored_quantization
from llama_core.generate import Sampling, generate
from llama_core.model import Transformer
from llama_core.quantize import MODES, for_decoding, weight_bytes
from llama_core.run_folder import append_jsonl, bench_path

DEFAULT_OUT = bench_path("runs", "decode")
PROFILE_STEPS = 8  # decode steps profiled with --profile (at most --new)
BF16 = "bf16"  # the side of --bf16: float weights in bfloat16
COMPILED = " compiled"  # a side's name with it: the same weights, decoding compiled (--compile)


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="lab-15m", help="model shape (see `python -m lab presets`)")
    parser.add_argument("--checkpoint", default=None, help="time this checkpoint's weights (a run, any path, "
                        "smollm2) instead of random ones of --preset's shape")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--new", type=int, default=256, help="new tokens per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (after a warm-up)")
    parser.add_argument("--vs", choices=["hf", "llamacpp"], action="append", default=[],
                        help="also time transformers' generate (hf, float32), or llama.cpp on the lab's GGUF "
                        "export of --checkpoint (llamacpp: int8 as Q8_0, int4 as Q4_1; needs llama-cpp-python); "
                        "repeat for both")
    parser.add_argument("--quant", choices=[*MODES, "all"], default="none",
                        help="weight quantization of the lab's model (all: float32, int8 and int4 side by side)")
    parser.add_argument("--bf16", action="store_true", help="also time the float model with bfloat16 weights (a "
                        "line of its own, quant none, dtype bfloat16): fast on GPUs, measured slower than float32 "
                        "for a one-row product on the CPUs tried")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", action="store_true", help="after timing, profile a few decode steps of "
                        "each quantization: where one step's time goes (printed, and under 'profile' in the line)")
    parser.add_argument("--compile", action="store_true", help="also time each side with its decode step compiled "
                        "(llama_core.compiled; the warm-up round compiles: on 2 cores about 1.5 minutes per side "
                        "at lab-110m, "
                        "3.5 to 6.5 at SmolLM2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL file the line is appended to")


def run(args) -> int:
    if args.prompt < 1 or args.new < 1 or args.rounds < 1:
        raise ValueError("--prompt, --new and --rounds must be positive")
    modes = list(MODES if args.quant == "all" else (args.quant,))
    if "llamacpp" in args.vs:
        check_llamacpp(args.checkpoint, modes)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, loaded = _plain_model(args, device)
    cfg = model.config
    if args.prompt + args.new > cfg.max_seq_len:
        raise ValueError(f"--prompt + --new = {args.prompt + args.new} tokens exceed the checkpoint's "
                         f"{cfg.max_seq_len}-token context: ask for fewer")
    prompt = _prompt(loaded, cfg.vocab_size, args.prompt)
    sampling = Sampling(max_new_tokens=args.new, temperature=0.0)

    sides = {}
    if "hf" in args.vs:  # from the plain weights, before packing renames them
        sides["hf"] = _hf_generate(model, prompt, args.new, device)
    models = {}
    own = stored_quantization(resolve_path(args.checkpoint)) if args.checkpoint else "none"
    if "llamacpp" in args.vs:
        sides.update(llamacpp_sides(loaded, modes, own, prompt, args.new, args.threads))
    for mode in [*modes, *([BF16] if args.bf16 else [])]:
        models[mode] = _ready(model, mode, own, args.checkpoint, device)
        if args.compile:
            models[mode + COMPILED] = compile_decoding(_ready(model, mode, own, args.checkpoint, device))
    sides.update({side: functools.partial(generate, m, prompt, sampling) for side, m in models.items()})
    del model
    best: dict[str, float] = {}
    tokens: dict[str, list[int]] = {}
    for name, fn in sides.items():  # warm-up: allocations, first-call dispatch, kernel packing
        tokens[name] = fn()
    for _ in range(args.rounds):  # interleaved, so that load on a shared machine hits every side alike
        for name, fn in sides.items():
            synchronize(device)
            start = time.perf_counter()
            out = fn()
            synchronize(device)
            best[name] = max(best.get(name, 0.0), len(out) / (time.perf_counter() - start))
    bandwidth, bandwidth_source = peak_bandwidth(device, args.threads)
    for side, quantized in models.items():
        base = side.removesuffix(COMPILED)
        mode, dtype = ("none", "bfloat16") if base == BF16 else (base, "float32")
        kv_bytes = kv_cache_bytes(cfg, args.prompt + args.new // 2, bytes_per_value=2 if base == BF16 else 4)
        step_bytes = step_weight_bytes(quantized) + kv_bytes
        record = {
            "bench": "decode", "preset": None if args.checkpoint else args.preset, "checkpoint": args.checkpoint,
            "batch": 1, "prompt": args.prompt, "new_tokens": args.new,
            "max_seq_len": cfg.max_seq_len, "dtype": dtype, "quant": mode, "device": device_name(device),
            "threads": torch.get_num_threads(), "host": platform.node(), "tokens_per_s": round(best[side], 1),
            "weight_bytes_per_token": step_bytes - kv_bytes, "mbu": round(mbu(best[side], step_bytes, bandwidth), 4),
            "bandwidth_bytes_per_s": bandwidth, "bandwidth_source": bandwidth_source,
            "compiled": side.endswith(COMPILED), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if side.endswith(COMPILED):
            record["speedup_vs_uncompiled"] = round(best[side] / best[base], 2)
            record["same_tokens_as_uncompiled"] = tokens[side] == tokens[base]
        if side != "none" and "none" in best:
            record["speedup_vs_float32"] = round(best[side] / best["none"], 2)
            record["same_tokens_as_float32"] = tokens[side] == tokens["none"]
        if args.profile:
            record["profile"] = profile_decode(quantized, prompt, min(args.new, PROFILE_STEPS), device)
            print(format_profile(record["profile"], f"{args.checkpoint or args.preset} {side}"), file=sys.stderr)
        if "hf" in best:
            record.update(hf_tokens_per_s=round(best["hf"], 1), speedup_vs_hf=round(best[side] / best["hf"], 2),
                          hf_mbu=round(mbu(best["hf"], decode_bytes_per_token(cfg, args.prompt + args.new // 2, 4),
                                           bandwidth), 4))
            if side == "none":
                record["same_tokens_as_hf"] = tokens[side] == tokens["hf"]
        if (peer := f"llama.cpp {base}") in best:  # the same block format, run by llama.cpp
            record.update(llamacpp_tokens_per_s=round(best[peer], 1),
                          speedup_vs_llamacpp=round(best[side] / best[peer], 2),
                          llamacpp_same_tokens_for=_agreeing_prefix(tokens[side], tokens[peer]))
        print(json.dumps(record, sort_keys=True), flush=True)
        append_jsonl(args.out, record)
    return 0


def _agreeing_prefix(a: list[int], b: list[int]) -> int:
    """How many greedy tokens two decoders agree on before they first differ (all of them if never)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _prompt(loaded: LoadedModel | None, vocab_size: int, n: int) -> list[int]:
    """`n` prompt ids: the start of a passage of Hamlet in a checkpoint's own tokenizer, so that greedy
    continuations mean something and agree or not for a reason (random ids make near ties from the
    first token); random ids for a random-weight preset, or where the corpus is not installed."""
    if loaded is not None:
        try:
            hamlet = next(f for f in shakespeare_files() if "hamlet" in f.name)
        except (FileNotFoundError, StopIteration):
            hamlet = None
        if hamlet is not None:
            text = hamlet.read_text(encoding="utf-8", errors="replace")
            start = text.find("Who's there?")  # the play's first line, past the Gutenberg header
            ids = loaded.tokenizer.encode(text[max(start, 0):max(start, 0) + 16 * n], bos=loaded.add_bos)
            if len(ids) >= n:
                return ids[:n]
    return torch.randint(0, vocab_size, (n,), generator=torch.Generator().manual_seed(1)).tolist()


def _plain_model(args, device: torch.device) -> tuple[Transformer, LoadedModel | None]:
    """The float model the sides start from: the checkpoint's (with its tokenizer), or random weights
    of the preset's shape (none)."""
    if args.checkpoint:
        loaded = load_model(args.checkpoint, device)
        return loaded.model, loaded
    cfg = get_preset(args.preset)
    # the weights are random, so only the shape matters: stretch the context to fit the run
    # (lab-15m's 256 positions cannot hold the standard 16 + 256)
    cfg = cfg.replace(max_seq_len=max(cfg.max_seq_len, args.prompt + args.new))
    torch.manual_seed(0)
    with device:
        return Transformer(cfg).eval(), None


def _ready(model: Transformer, side: str, own: str, checkpoint: str | None, device: torch.device) -> Transformer:
    """A copy of `model` made ready to decode as `side` (a quantization, or BF16); a checkpoint stored
    in that quantization (`own`) keeps its own blocks, the rest quantized alike, as chat serves it."""
    if side == BF16:
        return for_decoding(copy.deepcopy(model).to(torch.bfloat16))
    if side != "none" and side == own:
        return for_decoding(load_model(checkpoint, device, keep_quantized=True).model, side)
    return for_decoding(copy.deepcopy(model), side)


def step_weight_bytes(model: Transformer) -> int:
    """Bytes of the weights one decode step reads: every block, the final norm and the output head
    (the embedding gives one row)."""
    return sum(weight_bytes(m) for m in [*model.layers, model.norm, model.output])


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
