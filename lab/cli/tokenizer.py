"""Train a SentencePiece BPE tokenizer on a corpus and save it."""

from __future__ import annotations

from pathlib import Path

from llama_core.data import corpus_text, resolve_source
from llama_core.tokenizer import DEFAULT_VOCAB_SIZE, train_sentencepiece


def add_arguments(parser) -> None:
    parser.add_argument("--data", default="shakespeare", help="a built-in source or a path")
    parser.add_argument("--vocab", type=int, default=DEFAULT_VOCAB_SIZE, help="vocabulary size")
    parser.add_argument("--out", default=None, help="where to write tokenizer.model")


def run(args) -> int:
    source = resolve_source(args.data)
    out = Path(args.out or f"runs/tokenizers/{source.name}-{args.vocab}.model")
    print(f"training a {args.vocab}-piece BPE tokenizer on {source.name} "
          f"({source.disk_bytes / 1e6:.1f} MB, {len(source.files)} files)...")
    tok = train_sentencepiece(corpus_text(source), vocab_size=args.vocab)
    tok.save(out)
    sample = "To be, or not to be: that is the question. In 1599,"
    pieces = [tok.piece(i) for i in tok.encode(sample)]
    print(f"wrote {out} (fingerprint {tok.fingerprint})")
    print(f"{sample!r} -> {len(pieces)} tokens: {pieces}")
    return 0
