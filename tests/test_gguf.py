"""GGUF: files written here with the `gguf` package's own writer and quantizers load to the
dequantized reference; both tokenizer kinds rebuild exactly; the real SmolLM2 answers Paris."""

import json

import numpy as np
import pytest
import torch

from conftest import TINY_GQA, random_norm_model
from llama_core.chat import Conversation, get_template
from llama_core.formats import load_model
from llama_core.formats.gguf import load_gguf, tokenizer_from_gguf
from llama_core.generate import Sampling
from llama_core.model import Transformer

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

GGUF_NAMES = {"tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
              "output.weight": "output.weight", "attention.wq.weight": "attn_q.weight",
              "attention.wk.weight": "attn_k.weight", "attention.wv.weight": "attn_v.weight",
              "attention.wo.weight": "attn_output.weight", "feed_forward.w1.weight": "ffn_gate.weight",
              "feed_forward.w2.weight": "ffn_down.weight", "feed_forward.w3.weight": "ffn_up.weight",
              "attention_norm.weight": "attn_norm.weight", "ffn_norm.weight": "ffn_norm.weight"}
# every supported storage type at least once (norms stay F32, as llama.cpp keeps them)
TYPES = {"tok_embeddings.weight": Q.Q8_0, "output.weight": Q.F16, "attention.wq.weight": Q.Q4_0,
         "attention.wk.weight": Q.Q4_1, "attention.wv.weight": Q.BF16, "attention.wo.weight": Q.Q8_0,
         "feed_forward.w1.weight": Q.Q4_1, "feed_forward.w2.weight": Q.Q4_0, "feed_forward.w3.weight": Q.F32}
CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% endfor %}"


def _sp_fields(writer, tok):
    sp = tok.sp
    kinds = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else
             5 if sp.is_unused(i) else 1 for i in range(tok.vocab_size)]
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i) for i in range(tok.vocab_size)])
    writer.add_token_scores([sp.get_score(i) for i in range(tok.vocab_size)])
    writer.add_token_types(kinds)
    writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.eos_id)
    writer.add_unk_token_id(0)
    writer.add_add_space_prefix(False)  # the lab's tokenizers have no dummy prefix


def _quantized(data, qtype):
    """(what the file stores, the float32 values that decode from it), by the gguf package."""
    if qtype == Q.F32:
        return data, data
    if qtype == Q.F16:
        half = data.astype(np.float16)
        return half, half.astype(np.float32)
    stored = gguf.quants.quantize(data, qtype)
    return stored, gguf.quants.dequantize(stored, qtype).astype(np.float32)


def _write(path, model, tok, types=TYPES):
    """A llama GGUF of `model`; returns the dequantized reference state dict (Meta names)."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    _sp_fields(w, tok)
    w.add_chat_template(CHATML)
    reference = {}
    for name, tensor in model.state_dict().items():
        short = name.split(".", 2)[2] if name.startswith("layers.") else name
        gguf_name = (f"blk.{name.split('.')[1]}." if name.startswith("layers.") else "") + GGUF_NAMES[short]
        qtype = types.get(short, Q.F32)
        stored, values = _quantized(tensor.numpy().astype(np.float32), qtype)
        if qtype in (Q.F32, Q.F16):
            w.add_tensor(gguf_name, stored)
        else:
            w.add_tensor(gguf_name, stored, raw_dtype=qtype)
        reference[name] = torch.from_numpy(values)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return reference


@pytest.fixture(scope="module")
def tiny(sp_tokenizer):
    cfg = TINY_GQA.replace(vocab_size=sp_tokenizer.vocab_size)  # untied: output.weight is written too
    return random_norm_model(cfg)


def test_a_quantized_gguf_written_by_the_gguf_package_loads_to_the_dequantized_reference(tmp_path, tiny,
                                                                                       sp_tokenizer):
    reference = _write(tmp_path / "tiny.gguf", tiny, sp_tokenizer)
    # the quantized weights really are different from the originals
    assert not torch.equal(reference["layers.0.attention.wq.weight"], tiny.layers[0].attention.wq.weight)
    model, tokenizer, template, add_bos = load_gguf(tmp_path / "tiny.gguf")
    assert model.config.hidden_dim == tiny.config.hidden_dim and model.config.n_kv_heads == 2
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference[name]), name
    expected = Transformer(tiny.config).eval()
    expected.load_state_dict(reference)
    tokens = torch.tensor([sp_tokenizer.encode("Friends, Romans, countrymen", bos=True)])
    with torch.no_grad():
        assert torch.equal(model(tokens)[0], expected(tokens)[0])
    assert template == CHATML and add_bos is True


def test_the_llama_tokenizer_in_a_gguf_encodes_like_the_original(tmp_path, tiny, sp_tokenizer, shakespeare_text):
    _write(tmp_path / "tiny.gguf", tiny, sp_tokenizer)
    ckpt = load_model(tmp_path / "tiny.gguf")
    assert ckpt.format == "gguf" and ckpt.chat_template == "chatml"
    text = shakespeare_text[10_000:14_000] + " 1599 naïve ☃"
    assert ckpt.tokenizer.encode(text, bos=True) == sp_tokenizer.encode(text, bos=True)
    assert ckpt.tokenizer.decode(sp_tokenizer.encode(text)) == text


def hf_byte_level_bpe(text: str):
    """A 400-token byte-level BPE trained the Hugging Face way (ByteLevel with its own regex) on `text`,
    with <|endoftext|>, <|im_start|> and <|im_end|> as tokens 0-2: what a tokenizer.json holds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator([text[:200_000]], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tk


def test_a_gpt2_bpe_tokenizer_in_a_gguf_encodes_like_the_original(tmp_path, shakespeare_text):
    tk = hf_byte_level_bpe(shakespeare_text)
    spec = json.loads(tk.to_str())["model"]
    vocab = sorted(spec["vocab"], key=spec["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    w = gguf.GGUFWriter(str(tmp_path / "bpe.gguf"), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(vocab)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in vocab])
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok = tokenizer_from_gguf(gguf.GGUFReader(str(tmp_path / "bpe.gguf")), "bpe.gguf")
    text = shakespeare_text[20_000:23_000] + "  café 2024 it's\n\n"
    assert tok.encode(text) == tk.encode(text).ids
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_start|>user\nhi<|im_end|>")[0] == 1 and tok.encode("<|im_end|>") == [2]
    assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (len(vocab), 1, 2)


def test_an_unsupported_tensor_type_is_named(tmp_path, tiny, sp_tokenizer):
    _write(tmp_path / "q5.gguf", tiny, sp_tokenizer, types=dict(TYPES, **{"attention.wq.weight": Q.Q5_0}))
    with pytest.raises(ValueError, match=r"blk\.0\.attn_q\.weight is stored as Q5_0"):
        load_gguf(tmp_path / "q5.gguf")


def test_a_gguf_tokenizer_larger_than_the_model_is_refused(tmp_path, sp_tokenizer):
    torch.manual_seed(0)
    small = Transformer(TINY_GQA).eval()  # 300 embeddings for a 512-piece tokenizer
    _write(tmp_path / "small.gguf", small, sp_tokenizer)
    with pytest.raises(ValueError, match="tokenizer has 512 tokens but the model embeds only 300"):
        load_gguf(tmp_path / "small.gguf")


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


def test_smollm2_answers_paris(smollm2):
    assert smollm2.format == "gguf" and smollm2.chat_template == "chatml" and smollm2.add_bos is False
    cfg = smollm2.model.config
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.rope_theta, cfg.tie_embeddings) == \
        (576, 30, 9, 3, 100000.0, True)
    conv = Conversation(get_template("chatml"), smollm2.tokenizer, cfg.max_seq_len, add_bos=False)
    conv.add("user", "What is the capital of France?")
    reply = "".join(conv.respond(smollm2.model, Sampling(max_new_tokens=8, temperature=0.0)))
    assert "Paris" in reply
    assert conv.messages[-1].content == reply
    # the chat markers are single special tokens of the GGUF's BPE vocabulary
    ids = smollm2.tokenizer.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")
    assert ids[0] == 1 and ids[-2] == 2 and ids.count(2) == 1
