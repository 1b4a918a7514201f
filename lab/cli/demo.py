"""`make run`'s main job: the default corpus, its tokenizer, the presets beside Table 2."""

from __future__ import annotations

import argparse

from lab.cli import presets, tokenizer


def add_arguments(parser) -> None:
    parser.add_argument("--data", default="shakespeare")
    parser.add_argument("--vocab", type=int, default=4096)


def run(args) -> int:
    tokenizer.run(argparse.Namespace(data=args.data, vocab=args.vocab, out=None))
    print()
    return presets.run(args)
