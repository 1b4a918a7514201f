"""`python -m lab COMMAND ...`: each command lives in its own module with `add_arguments` and `run`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lab.cli.options import apply_threads

COMMANDS = {  # name -> (module, one-line help)
    "demo": ("lab.cli.demo", "set up the default corpus and tokenizer, train the demo model, sample it"),
    "presets": ("lab.cli.presets", "every preset's parameters and FLOPs per token beside the paper's Table 2"),
    "tokenizer": ("lab.cli.tokenizer", "train a SentencePiece BPE tokenizer on a corpus"),
    "train": ("lab.cli.train", "train a model on a corpus mixture, writing a run record"),
    "runs": ("lab.cli.runs", "a table of the runs under runs/"),
    "sample": ("lab.cli.sample", "sample text from a run"),
    "chat": ("lab.cli.chat", "chat with a checkpoint in the terminal"),
    "eval": ("lab.cli.evaluate", "perplexity and zero-shot multiple choice, the paper's way"),
    "export": ("lab.cli.export", "export a run to the Hugging Face or Meta layout"),
    "finetune": ("lab.cli.finetune", "instruction finetuning (full or LoRA) of a checkpoint on conversations"),
    "distill": ("lab.cli.distill", "instructions answered by a teacher chat model, as JSONL to finetune on"),
    "sweep": ("lab.cli.sweep", "a grid of presets x token budgets, resumable"),
    "bench": ("lab.cli.bench", "benchmarks: training and decoding tokens/s, MFU, memory"),
}


def build_parser(available: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description="LLaMA Lab")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in available.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=COMMANDS[name][1], description=COMMANDS[name][1])
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _overrides=getattr(module, "ACCEPTS_OVERRIDES", False))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    available = {name: mod for name, (mod, _) in COMMANDS.items()}
    # import only the chosen command's module, so that `python -m lab presets` stays quick
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser({chosen: available[chosen]} if chosen in available else available)
    args, extra = parser.parse_known_args(argv)
    if extra and not args._overrides:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    args.overrides = extra
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        apply_threads(args)
        return args._run(args) or 0
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
