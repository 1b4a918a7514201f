"""GGUF's vocabulary fields (tokenizer.ggml.*), read into and written from the lab's tokenizers.

Two kinds, as llama.cpp names them:
- "llama": a SentencePiece model, as its pieces, scores and piece types.
- "gpt2": a byte-level BPE (SmolLM2's, a run finetuned from it, a Hugging Face tokenizer.json), as
  its tokens by id, token types (control for special tokens), merges ("a b", by rank) and
  `tokenizer.ggml.pre`, the name of the pre-tokenizer split that llama.cpp applies before the
  merges. A tokenizer.json states its split as a program (regexes, digit splitting), not a name, so
  the writer names the known split whose rebuild (`BPETokenizer.from_vocab`, what the reader
  builds) encodes a set of probe texts exactly as the tokenizer does, trying first the one its
  program looks like (a small vocabulary may encode the probes alike under two splits), and refuses
  a tokenizer that none of them reproduces.
"""

from __future__ import annotations

import json

from llama_core.formats.bpe import BPETokenizer
from llama_core.tokenizer import SentencePieceTokenizer, Tokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # llama.cpp's token types
PRE_TOKENIZERS = ("smollm", "gpt2", "llama-bpe")  # the splits `BPETokenizer.from_vocab` rebuilds, most common first
# texts on which the known splits differ: digit runs, case in contractions, runs of spaces and newlines
PROBES = ("Hello world! It's 2024: 12345 apples, 7 pears and 1,000,000.5 DON'T YOU'LL\n\n  indented\tline",
          "naïve café coöperation – «quotes» 東京タワー 🙂👍 привет мир   three  spaces\r\nend",
          "def f(x):\n    return x**2  # squared\n\n\nprint(f(3))\n")


def field(reader, key: str, default=None):
    """A metadata field's value from a `gguf.GGUFReader`, or `default` where the file lacks it."""
    found = reader.fields.get(key)
    return default if found is None else found.contents()


# ------------------------------------------------------------------------------------------ in

def tokenizer_from_gguf(reader, source: str) -> Tokenizer:
    """The vocabulary stored in the file: SentencePiece-style `llama` or GPT-2-style `gpt2` BPE."""
    kind = field(reader, "tokenizer.ggml.model")
    tokens = field(reader, "tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        raise ValueError(f"{source}: the file holds no tokenizer (tokenizer.ggml.model / tokens)")
    types = field(reader, "tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    bos, eos = field(reader, "tokenizer.ggml.bos_token_id"), field(reader, "tokenizer.ggml.eos_token_id")
    if kind == "llama":
        scores = field(reader, "tokenizer.ggml.scores") or [0.0] * len(tokens)
        unk = field(reader, "tokenizer.ggml.unknown_token_id", 0)
        proto = sentencepiece_proto(tokens, scores, types, unk, bos, eos,
                                    add_dummy_prefix=bool(field(reader, "tokenizer.ggml.add_space_prefix", True)))
        return SentencePieceTokenizer(proto, source=source)
    if kind == "gpt2":
        merges = field(reader, "tokenizer.ggml.merges") or []
        special = [i for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)]
        pre = field(reader, "tokenizer.ggml.pre", "gpt2")
        return BPETokenizer.from_vocab(tokens, merges, special, pre, bos, eos, source=source)
    raise ValueError(f"{source}: tokenizer model {kind!r} is not supported (only 'llama' and 'gpt2')")


def sentencepiece_proto(tokens, scores, types, unk_id, bos_id, eos_id, add_dummy_prefix: bool) -> bytes:
    """A serialized SentencePiece BPE model from a GGUF vocabulary (what llama.cpp's converter read)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    for piece, score, kind in zip(tokens, scores, types):
        m.pieces.add(piece=piece, score=float(score), type=int(kind))
    spec = m.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = any(int(k) == BYTE for k in types)
    spec.unk_id, spec.unk_piece = int(unk_id), tokens[int(unk_id)]
    spec.bos_id, spec.bos_piece = (int(bos_id), tokens[int(bos_id)]) if bos_id is not None else (-1, "<s>")
    spec.eos_id, spec.eos_piece = (int(eos_id), tokens[int(eos_id)]) if eos_id is not None else (-1, "</s>")
    spec.pad_id = -1
    norm = m.normalizer_spec
    norm.name, norm.add_dummy_prefix = "identity", add_dummy_prefix
    norm.remove_extra_whitespaces, norm.escape_whitespaces = False, True
    return m.SerializeToString()


# ----------------------------------------------------------------------------------------- out

def add_vocabulary(writer, tokenizer: Tokenizer, vocab_size: int, add_bos: bool) -> None:
    """Write `tokenizer` into a `gguf.GGUFWriter` for a model embedding `vocab_size` tokens."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        _add_sentencepiece(writer, tokenizer)
    elif isinstance(tokenizer, BPETokenizer):
        _add_bpe(writer, tokenizer, vocab_size)
    else:
        raise ValueError(f"GGUF export writes SentencePiece and byte-level BPE vocabularies; this model's "
                         f"tokenizer is a {type(tokenizer).__name__}: export it with --to quantized or --to hf")
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(False)


def _add_sentencepiece(writer, tokenizer: SentencePieceTokenizer) -> None:
    """tokenizer.ggml.*: the pieces with their scores and SentencePiece types (llama.cpp's numbers)."""
    sp = tokenizer.sp
    n = sp.get_piece_size()
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i) for i in range(n)])
    writer.add_token_scores([float(sp.get_score(i)) for i in range(n)])
    writer.add_token_types([UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else BYTE if sp.is_byte(i)
                            else UNUSED if sp.is_unused(i) else NORMAL for i in range(n)])
    for token_id, add in ((tokenizer.bos_id, writer.add_bos_token_id), (tokenizer.eos_id, writer.add_eos_token_id),
                          (sp.unk_id(), writer.add_unk_token_id)):
        if token_id is not None and token_id >= 0:
            add(int(token_id))
    writer.add_add_space_prefix(sp.encode("a", out_type=str)[0].startswith("\u2581"))


def _add_bpe(writer, tokenizer: BPETokenizer, vocab_size: int) -> None:
    """tokenizer.ggml.*: model "gpt2", the named pre-tokenizer split, tokens, types and merges."""
    tokens, types, merges = bpe_vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer, tokens, types, merges))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token_id, add in ((tokenizer.bos_id, writer.add_bos_token_id), (tokenizer.eos_id, writer.add_eos_token_id)):
        if token_id is not None:
            add(int(token_id))


def bpe_vocabulary(tokenizer: BPETokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, llama.cpp token types, merges "a b" by rank) of a byte-level BPE, padded with
    unused "[PADn]" tokens to the `vocab_size` rows the model embeds (llama.cpp wants one per row)."""
    spec = json.loads(tokenizer.tk.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix"):
        raise ValueError(f"{tokenizer.source} is not a byte-level BPE tokenizer (its model is "
                         f"{model.get('type')!r}): export it with --to quantized or --to hf instead")
    size = max(vocab_size, tokenizer.vocab_size)
    tokens: list[str | None] = [None] * size
    types = [NORMAL] * size
    for piece, token_id in model["vocab"].items():
        tokens[token_id] = piece
    for added in spec.get("added_tokens") or []:
        tokens[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added["special"] else USER_DEFINED
    for i, piece in enumerate(tokens):
        if piece is None:
            tokens[i], types[i] = f"[PAD{i}]", UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return tokens, types, merges


def pre_tokenizer_name(tokenizer: BPETokenizer, tokens: list[str], types: list[int], merges: list[str]) -> str:
    """The llama.cpp pre-tokenizer whose rebuild encodes every probe text as `tokenizer` does."""
    special = [i for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)]
    expected = [tokenizer.encode(text) for text in PROBES]
    stated = json.dumps(json.loads(tokenizer.tk.to_str()).get("pre_tokenizer"))
    likely = "smollm" if '"individual_digits": true' in stated else "llama-bpe" if "p{N}{1,3}" in stated else "gpt2"
    for pre in sorted(PRE_TOKENIZERS, key=lambda name: name != likely):  # the stated one first, to break ties
        rebuilt = BPETokenizer.from_vocab(tokens, merges, special, pre)
        if [rebuilt.encode(text) for text in PROBES] == expected:
            return pre
    raise ValueError(f"{tokenizer.source}: its text split (pre-tokenizer) is none of {', '.join(PRE_TOKENIZERS)}, "
                     "so llama.cpp would tokenize text differently: export it with --to quantized or --to hf instead")
