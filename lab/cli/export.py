"""`python -m lab export`: write a run (or any checkpoint) in the Hugging Face or Meta layout."""

from __future__ import annotations

from llama_core.formats import LAYOUTS, export, load_model


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a run name under runs/, or any checkpoint path")
    parser.add_argument("--to", choices=LAYOUTS, required=True, help="hf: a folder transformers' AutoTokenizer and "
                        "AutoModelForCausalLM load (config, safetensors, tokenizer and generation files); "
                        "meta: params.json + consolidated.NN.pth")
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument("--shards", type=int, default=1, help="model-parallel shards (meta) or files (hf)")


def run(args) -> int:
    ckpt = load_model(args.checkpoint)
    out = export(ckpt, args.out, args.to, shards=args.shards)
    print(f"wrote {ckpt.source} ({ckpt.format}) as {args.to} to {out}")
    return 0
