"""`python -m lab bench KIND ...`: each benchmark kind lives in lab/benchmarks/KIND.py."""

from __future__ import annotations

import importlib

KINDS = {  # kind -> (module, help)
    "train": ("lab.benchmarks.train", "training tokens/s, MFU and peak memory (--vs hf to compare)"),
    "decode": ("lab.benchmarks.decode", "decoding tokens/s and MBU (--vs hf to compare)"),
    "checkpointing": ("lab.benchmarks.checkpointing", "memory and speed of each activation-checkpointing policy"),
    "eval": ("lab.benchmarks.eval", "evaluation items/s of the batched scorer (--vs hf: per-request transformers)"),
    "generate": ("lab.benchmarks.generate", "generated tokens/s on a generation benchmark: one at a time, batched, "
                 "and with the shared prefix"),
    "parallel": ("lab.benchmarks.parallel", "tokens/s, peak memory and bytes sent per rank of each dp x tp layout"),
    "quality": ("lab.benchmarks.quality", "the demo's budget choice trained, held-out bits/byte and wall time"),
    "quant-quality": ("lab.benchmarks.quant_quality", "held-out bits/byte of a checkpoint in float32, int8 and int4"),
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, (module_name, help_text) in KINDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(kind, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_bench=module.run)


def run(args) -> int:
    return args._bench(args)
