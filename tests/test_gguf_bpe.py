"""GGUF export of models with a byte-level BPE tokenizer (SmolLM2's, a Hugging Face tokenizer.json):
tokenizer.ggml.model "gpt2" with the named pre-tokenizer split, tokens, types and merges, read back by
the lab's GGUF reader to the same token ids and to the logits of the Q8_0-quantized model; a split
that no known pre-tokenizer reproduces is refused rather than written wrong."""

import copy
import json

import pytest
import torch
from test_gguf import hf_byte_level_bpe
from test_quant_checkpoints import _as_gguf_stores

from conftest import TINY_GQA, TINY_TIED_THETA, random_norm_model
from llama_core.formats import load_model, smollm2_path
from llama_core.formats.bpe import BPETokenizer
from llama_core.formats.gguf import tokenizer_from_gguf
from llama_core.formats.gguf_vocab import CONTROL, NORMAL, UNUSED, bpe_vocabulary, field, pre_tokenizer_name
from llama_core.formats.gguf_write import save_gguf
from llama_core.quantize import quantization_of, quantize

gguf = pytest.importorskip("gguf")
TEXTS = ["Hello world! It's 2024: 12345 cafés, naïve coöperation.\n\n    indented\tline  DON'T",
         "<|im_start|>user\n東京タワー 🙂 привет   three  spaces<|im_end|>\n", "x**2  # 1,000,000.5\r\n"]
TEMPLATE = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"


@pytest.fixture(scope="module")
def smollm2_bpe():
    """SmolLM2's tokenizer, read from the bundled GGUF (the model itself is not loaded)."""
    try:
        path = smollm2_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return tokenizer_from_gguf(gguf.GGUFReader(str(path)), str(path))


@pytest.fixture(scope="module")
def hf_bpe(shakespeare_text):
    return BPETokenizer(hf_byte_level_bpe(shakespeare_text), bos_id=1, eos_id=2, source="hf-bpe")


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


def test_a_smollm2_tokenizer_model_exports_to_gguf_and_reads_back(tmp_path, smollm2_bpe):
    # tied like SmolLM2; one read of the file (the gguf package parses 49,152 tokens and merges slowly)
    model = random_norm_model(TINY_TIED_THETA.replace(vocab_size=smollm2_bpe.vocab_size))
    path = save_gguf(model, tmp_path / "m.gguf", smollm2_bpe, "q8_0", add_bos=False, chat_template_text=TEMPLATE)
    back = load_model(path)
    assert back.add_bos is False and back.chat_template_text == TEMPLATE and back.chat_template == "chatml"
    assert (back.tokenizer.bos_id, back.tokenizer.eos_id) == (smollm2_bpe.bos_id, smollm2_bpe.eos_id)
    for text in TEXTS:
        ids = smollm2_bpe.encode(text)
        assert back.tokenizer.encode(text) == ids and back.tokenizer.decode(ids) == text
    assert back.tokenizer.encode("<|im_end|>") == [smollm2_bpe.eos_id]  # special tokens kept whole
    tokens, types, merges = bpe_vocabulary(smollm2_bpe, model.config.vocab_size)
    assert pre_tokenizer_name(smollm2_bpe, tokens, types, merges) == "smollm"  # llama.cpp's name for its split
    # the weights: those of the model quantized to int8 in groups of 32, scales in the format's fp16
    ids = smollm2_bpe.encode(TEXTS[0])
    expected = _logits(_as_gguf_stores(quantize(copy.deepcopy(model), "int8", 32)), ids)
    got = _logits(back.model, back.tokenizer.encode(TEXTS[0]))
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()  # summation order only


def test_a_hugging_face_tokenizer_json_exports_padded_to_the_models_rows(tmp_path, hf_bpe):
    model = random_norm_model(TINY_GQA.replace(vocab_size=448))  # more rows than the 400 tokens
    path = save_gguf(model, tmp_path / "m.gguf", hf_bpe, "q4_1")
    reader = gguf.GGUFReader(str(path))
    assert field(reader, "tokenizer.ggml.pre") == "gpt2"  # GPT-2's own split, stated as ByteLevel's regex
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == 448 and tokens[400:] == [f"[PAD{i}]" for i in range(400, 448)]
    assert set(types[400:]) == {UNUSED} and types[:3] == [CONTROL] * 3 and types[3] == NORMAL
    merges = json.loads(hf_bpe.tk.to_str())["model"]["merges"]
    assert field(reader, "tokenizer.ggml.merges") == [m if isinstance(m, str) else " ".join(m) for m in merges]
    back = load_model(path, keep_quantized=True)
    assert quantization_of(back.model) == "int4"  # Q4_1 blocks, as the lab's int4
    assert back.add_bos is True and back.tokenizer.vocab_size == 448
    for text in TEXTS:
        assert back.tokenizer.encode(text, bos=True) == hf_bpe.encode(text, bos=True)
    assert back.tokenizer.encode("<|im_end|>") == [2]


def test_a_tokenizer_whose_split_llama_cpp_would_not_reproduce_is_refused(tmp_path, hf_bpe):
    from tokenizers import Tokenizer, models, pre_tokenizers

    odd = Tokenizer.from_str(hf_bpe.tk.to_str())
    odd.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=False)])
    model = random_norm_model(TINY_GQA.replace(vocab_size=448))
    with pytest.raises(ValueError, match="pre-tokenizer.*--to quantized or --to hf"):
        save_gguf(model, tmp_path / "odd.gguf", BPETokenizer(odd, 1, 2, source="odd"), "q8_0")
    words = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="not a byte-level BPE"):
        save_gguf(model, tmp_path / "words.gguf", BPETokenizer(words, None, None, source="words"), "q8_0")
    assert not (tmp_path / "odd.gguf").exists() and not (tmp_path / "words.gguf").exists()
