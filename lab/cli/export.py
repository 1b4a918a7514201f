"""`python -m lab export`: write a run (or any checkpoint) in the Hugging Face or Meta layout, as a
quantized folder (int8/int4 safetensors) or as a GGUF file of Q8_0/Q4_1 blocks for llama.cpp."""

from __future__ import annotations

from llama_core.formats import LAYOUTS, export, load_model, resolve_path
from llama_core.formats.gguf_write import KINDS, save_gguf
from llama_core.formats.quantized import save_quantized, stored_quantization
from llama_core.quantize import quantization_of, quantize

QUANTIZED = ("int8", "int4")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a run name under runs/, or any checkpoint path")
    parser.add_argument("--to", choices=[*LAYOUTS, "quantized", "gguf"], required=True,
                        help="hf: a folder transformers' AutoTokenizer and AutoModelForCausalLM load (config, "
                        "safetensors, tokenizer and generation files); meta: params.json + consolidated.NN.pth; "
                        "quantized: int8/int4 weights in safetensors that `lab chat/sample/eval` load as they are; "
                        "gguf: one .gguf file for llama.cpp")
    parser.add_argument("--out", required=True, help="the folder to write (a .gguf file for --to gguf)")
    parser.add_argument("--shards", type=int, default=1, help="model-parallel shards (meta) or files (hf)")
    parser.add_argument("--quant", default=None, help=f"--to quantized: {' or '.join(QUANTIZED)}; "
                        f"--to gguf: the block type, {' or '.join(KINDS)} (default q8_0)")
    parser.add_argument("--group-size", type=int, default=None,
                        help="--to quantized: inputs per scale (int8 default: one per output channel; int4: 32)")


def run(args) -> int:
    if args.to == "quantized" and args.quant not in QUANTIZED:
        raise SystemExit(f"--to quantized needs --quant {' or '.join(QUANTIZED)}")
    if args.to == "gguf" and (args.quant or "q8_0") not in KINDS:
        raise SystemExit(f"--to gguf takes --quant {' or '.join(KINDS)}, the GGUF block type")
    if args.to in LAYOUTS and args.quant is not None:
        raise SystemExit(f"--quant is for --to quantized or gguf; the {args.to} layout holds float weights")
    keep = args.to == "quantized" and stored_quantization(resolve_path(args.checkpoint)) == args.quant
    ckpt = load_model(args.checkpoint, keep_quantized=keep)  # a GGUF's own int4 blocks kept as they are
    if args.to in LAYOUTS:
        if quantization_of(ckpt.model) != "none":
            raise SystemExit(f"{ckpt.source} is quantized; the {args.to} layout holds float weights: export the "
                             "float checkpoint it was made from")
        out = export(ckpt, args.out, args.to, shards=args.shards)
    elif args.to == "quantized":
        group = args.group_size or (32 if args.quant == "int4" else None)
        quantize(ckpt.model, args.quant, group)
        out = save_quantized(ckpt.model, args.out, ckpt.tokenizer, group, ckpt.add_bos,
                             ckpt.chat_template, ckpt.chat_template_text)
    else:
        out = save_gguf(ckpt.model, args.out, ckpt.tokenizer, args.quant or "q8_0", ckpt.add_bos,
                        ckpt.chat_template_text)
    print(f"wrote {ckpt.source} ({ckpt.format}) as {args.to}{f' {args.quant}' if args.quant else ''} to {out}")
    return 0
