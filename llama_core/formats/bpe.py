"""GPT-2-style byte-level BPE tokenizers (Hugging Face `tokenizer.json`, or a GGUF's vocabulary and
merges) behind the lab's `Tokenizer` protocol, built with the `tokenizers` package.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from llama_core.atomic import atomic_write_text
from llama_core.tokenizer import with_specials

log = logging.getLogger(__name__)
KNOWN_PRE = ("gpt2", "smollm", "llama-bpe", "llama3")

# GPT-2's pre-tokenizer split (what ByteLevel(use_regex=True) applies)
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Llama 3's split (llama.cpp's `llama-bpe` pre-tokenizer)
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


class BPETokenizer:
    """A `tokenizers.Tokenizer` with the lab's encode/decode contract (special tokens kept in text)."""

    def __init__(self, tokenizer: HFTokenizer, bos_id: int | None, eos_id: int | None, source: str = "<memory>"):
        self.tk = tokenizer
        self.source = source
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id = bos_id, eos_id

    @classmethod
    def from_file(cls, path: str | os.PathLike, bos_id: int | None = None, eos_id: int | None = None
                  ) -> BPETokenizer:
        """A Hugging Face `tokenizer.json`; bos/eos ids come from the model's config."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        try:
            tk = HFTokenizer.from_file(str(path))
        except Exception as err:
            raise ValueError(f"{path} is not a Hugging Face tokenizer.json ({err})") from None
        return cls(tk, bos_id, eos_id, source=str(path))

    @classmethod
    def from_vocab(cls, tokens: Sequence[str], merges: Sequence[str], special: Sequence[int] = (),
                   pre: str = "gpt2", bos_id: int | None = None, eos_id: int | None = None,
                   source: str = "<memory>") -> BPETokenizer:
        """Byte-level BPE from its pieces (id = position), merges ("a b"), and the ids of special
        tokens, which are matched whole in the text; `pre` names llama.cpp's pre-tokenizer."""
        vocab = {tok: i for i, tok in enumerate(tokens)}
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        tk = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, ignore_merges=False))
        tk.pre_tokenizer = _pre_tokenizer(pre)
        tk.decoder = decoders.ByteLevel()
        tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in special])
        return cls(tk, bos_id, eos_id, source=source)

    def save(self, path: str | os.PathLike, bos_first: bool = False) -> None:
        """Write tokenizer.json; with `bos_first`, its post-processor puts bos in front of every text
        (how transformers' fast tokenizers add bos)."""
        tk = self.tk
        if bos_first and self.bos_id is not None:
            tk = HFTokenizer.from_str(tk.to_str())
            bos = tk.id_to_token(self.bos_id)
            tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                              special_tokens=[(bos, self.bos_id)])
        atomic_write_text(path, tk.to_str())

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        return with_specials(self.tk.encode(text, add_special_tokens=False).ids, self, bos, eos)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=False)

    def piece(self, token_id: int) -> str:
        return self.decode([token_id])

    def token_id(self, piece: str) -> int | None:
        """The id of a token given by its text (e.g. '<|im_end|>'), or None."""
        return self.tk.token_to_id(piece)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.tk.to_str().encode()).hexdigest()[:16]


def _pre_tokenizer(pre: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in ("llama-bpe", "llama3"):
        split = pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated")
        return pre_tokenizers.Sequence([split, byte_level])
    if pre not in KNOWN_PRE:
        log.warning("pre-tokenizer %r is not known here: splitting text the GPT-2 way, which may tokenize "
                    "some text differently from llama.cpp", pre)
    gpt2 = pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated")
    if pre == "smollm":  # every digit its own piece, then GPT-2's split
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2, byte_level])
    return pre_tokenizers.Sequence([gpt2, byte_level])
