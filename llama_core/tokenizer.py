"""Tokenizers behind one protocol; SentencePiece BPE trained the paper's way.

The paper (section 2.1): byte-pair encoding with SentencePiece, every number split into single
digits, unknown UTF-8 characters decomposed into bytes. Ids follow Meta's layout: unk 0, bos 1,
eos 2, no pad.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import sentencepiece as spm

from llama_core.atomic import atomic_write_bytes

SPACE_PIECE = "\u2581"  # SentencePiece's stand-in for a space
DEFAULT_VOCAB_SIZE = 4096  # suits a corpus of a few MB (Shakespeare is about 5 MB)


@runtime_checkable
class Tokenizer(Protocol):
    """What the lab needs of any tokenizer (SentencePiece here, GGUF/BPE elsewhere)."""

    vocab_size: int
    bos_id: int | None
    eos_id: int | None

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def piece(self, token_id: int) -> str:
        """A readable label of one token (for attention-map axes)."""
        ...

    @property
    def fingerprint(self) -> str:
        """A short hash that identifies the vocabulary, stored with checkpoints."""
        ...


class SentencePieceTokenizer:
    """A SentencePiece model (Meta's `tokenizer.model` or one trained by `train_sentencepiece`)."""

    def __init__(self, model_proto: bytes, source: str = "<memory>"):
        self.model_proto = model_proto
        self.source = source
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except Exception as err:
            raise ValueError(f"{source} is not a SentencePiece model ({err})") from None
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id = _or_none(self.sp.bos_id())
        self.eos_id = _or_none(self.sp.eos_id())
        self.pad_id = _or_none(self.sp.pad_id())
        # Models with a dummy prefix (Meta's) are used as they are; ours have none, which lets a
        # literal U+2581 in the text travel as bytes instead of decoding back as a space.
        self._dummy_prefix = self.sp.encode("a", out_type=str)[0].startswith(SPACE_PIECE)
        self._space_bytes = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in SPACE_PIECE.encode()]
        self._escape_space = not self._dummy_prefix and self.sp.unk_id() not in self._space_bytes

    @classmethod
    def load(cls, path: str | os.PathLike) -> SentencePieceTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        return cls(path.read_bytes(), source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_bytes(path, self.model_proto)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        if self._escape_space and SPACE_PIECE in text:
            ids: list[int] = []
            for i, part in enumerate(text.split(SPACE_PIECE)):
                if i:
                    ids.extend(self._space_bytes)
                ids.extend(self.sp.encode(part))
        else:
            ids = self.sp.encode(text)
        return with_specials(ids, self, bos, eos)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(int(token_id)).replace(SPACE_PIECE, " ")

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_proto).hexdigest()[:16]


def train_sentencepiece(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE,
                        max_sentences: int = 2_000_000, seed_sentencepiece_size: int = 200_000,
                        num_threads: int | None = None) -> SentencePieceTokenizer:
    """Train a BPE SentencePiece model on lines of `texts`: digits split, byte fallback, no normaliser.

    The text is kept exactly as written (identity normalisation, whitespace preserved), so
    decode(encode(s)) == s for any Unicode string.
    """
    if vocab_size < 256 + 3 + 1:
        raise ValueError(f"vocab_size={vocab_size} is too small: byte fallback alone needs 259 ids; "
                         "use at least 260")

    def lines():
        for text in texts:
            yield from (line for line in text.splitlines() if line.strip())

    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines(), model_writer=buffer, model_type="bpe", vocab_size=vocab_size,
            split_digits=True, byte_fallback=True, character_coverage=0.9995, required_chars="0123456789",
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_by_whitespace=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, input_sentence_size=max_sentences,
            shuffle_input_sentence=True, seed_sentencepiece_size=seed_sentencepiece_size,
            num_threads=num_threads or os.cpu_count() or 1, minloglevel=2,
        )
    except RuntimeError as err:
        raise ValueError(f"SentencePiece training failed: {err}. vocab_size must exceed the corpus's "
                         "distinct characters plus 259 byte and special pieces, and stay within what the "
                         "corpus supports: adjust vocab_size or add text") from None
    return SentencePieceTokenizer(buffer.getvalue(), source="<trained>")


def with_specials(ids: list[int], tokenizer: Tokenizer, bos: bool, eos: bool) -> list[int]:
    """`ids` with the tokenizer's bos in front and eos at the end, where asked and defined."""
    if bos and tokenizer.bos_id is not None:
        ids.insert(0, tokenizer.bos_id)
    if eos and tokenizer.eos_id is not None:
        ids.append(tokenizer.eos_id)
    return ids


def _or_none(token_id: int) -> int | None:
    return None if token_id < 0 else token_id
