"""A full `lab finetune` of a checkpoint with a byte-level BPE tokenizer (SmolLM2's, on a tiny model in
a Hugging Face folder): the run keeps the base's tokenizer.json and chat template, loads like any run
with the same tokenizer, resumes exactly, and a missing or damaged tokenizer file is named."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from lab.finetune import FinetuneSpec, run_finetune
from llama_core.chat import Message, get_template
from llama_core.formats import export, load_model, smollm2_path
from llama_core.formats.hf import save_hf
from llama_core.formats.lab import load_run_tokenizer, save_run_tokenizer
from llama_core.lora import LoRAConfig
from llama_core.model import Transformer
from llama_core.run_folder import TOKENIZER, TOKENIZER_JSON, CheckpointError, RunFolder
from llama_core.sft_data import to_jsonl
from tests.conftest import TINY, resume_curve

CONVERSATION = [Message("system", "Answer briefly."), Message("user", "Who wrote Hamlet?"),
                Message("assistant", "William Shakespeare.")]


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2's byte-level BPE tokenizer, chat template and bos rule, read from the bundled GGUF."""
    import gguf

    from llama_core.formats.gguf import chat_template_of, tokenizer_from_gguf

    try:
        path = smollm2_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    reader = gguf.GGUFReader(str(path))
    add_bos = reader.fields.get("tokenizer.ggml.add_bos_token")
    return (tokenizer_from_gguf(reader, str(path)), chat_template_of(reader),
            bool(add_bos.contents()) if add_bos is not None else True)


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory, smollm2_tokenizer):
    """A tiny untrained model with SmolLM2's tokenizer and template, as a Hugging Face folder."""
    tokenizer, template_text, add_bos = smollm2_tokenizer
    torch.manual_seed(0)
    model = Transformer(TINY.replace(vocab_size=tokenizer.vocab_size, max_seq_len=128))
    return save_hf(model, tmp_path_factory.mktemp("base") / "smol-tiny", tokenizer, add_bos=add_bos,
                   chat_template=template_text)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    plays = ["Hamlet", "Macbeth", "Othello", "King Lear", "The Tempest", "Twelfth Night"]
    convs = [[Message("user", f"Which play has the line number {i}?"), Message("assistant", plays[i % 6])]
             for i in range(16)]
    (folder / "train.jsonl").write_text(to_jsonl(convs[:12]))
    (folder / "val.jsonl").write_text(to_jsonl(convs[12:]))
    return folder


def spec(data, base, name) -> FinetuneSpec:
    return FinetuneSpec(name=name, checkpoint=str(base), data=str(data / "train.jsonl"),
                        val_data=str(data / "val.jsonl"), batch_size=4, lr=1e-3)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, hf_base, data):
    runs = tmp_path_factory.mktemp("runs")
    result = run_finetune(spec(data, hf_base, "smol-ft"), runs, progress=False)
    assert result.status == "finished" and result.step == 3
    return RunFolder(runs / "smol-ft")


def test_a_full_finetune_keeps_the_base_tokenizer_and_template(finetuned, hf_base, tmp_path):
    base = load_model(hf_base)
    assert base.chat_template == "chatml" and base.chat_template_text
    assert (finetuned.path / TOKENIZER_JSON).is_file() and not (finetuned.path / TOKENIZER).exists()
    config = finetuned.read_config()
    assert config["tokenizer"] == {"path": TOKENIZER_JSON, "fingerprint": base.tokenizer.fingerprint,
                                   "vocab_size": 49152, "bos_id": base.tokenizer.bos_id,
                                   "eos_id": base.tokenizer.eos_id}
    assert config["chat_template"] == "chatml" and config["chat_template_text"] == base.chat_template_text
    assert config["add_bos"] == base.add_bos and config["base"]["format"] == "hf"

    tuned = load_model(finetuned.path)  # what chat, eval, sample and the app call
    assert tuned.format == "lab" and tuned.chat_template == "chatml" and tuned.add_bos == base.add_bos
    assert tuned.chat_template_text == base.chat_template_text
    assert tuned.tokenizer.fingerprint == base.tokenizer.fingerprint
    assert (tuned.tokenizer.bos_id, tuned.tokenizer.eos_id) == (base.tokenizer.bos_id, base.tokenizer.eos_id)
    chatml = get_template("chatml")
    ids = chatml.render(CONVERSATION, tuned.tokenizer, tuned.add_bos)
    assert ids == chatml.render(CONVERSATION, base.tokenizer, base.add_bos)
    assert tuned.tokenizer.encode("<|im_end|>") == [tuned.tokenizer.eos_id]  # special tokens kept whole
    assert not torch.equal(tuned.model.output.weight, base.model.output.weight)  # it trained

    # a merged export of the run stands alone with the same tokenizer and template
    out = load_model(export(tuned, tmp_path / "hf", "hf"))
    assert out.chat_template == "chatml" and out.tokenizer.fingerprint == base.tokenizer.fingerprint
    tokens = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(out.model(tokens)[0], tuned.model(tokens)[0], rtol=1e-5, atol=1e-5)


def test_the_bpe_finetune_resumes_exactly(finetuned, hf_base, data, tmp_path):
    run = RunFolder(tmp_path / "smol-ft")
    shutil.copytree(finetuned.path, run.path)
    curve = resume_curve(run.read_metrics())
    shutil.rmtree(run.checkpoints()[-1])
    run_finetune(spec(data, hf_base, "smol-ft"), tmp_path, resume=True, progress=False)
    assert resume_curve(run.read_metrics()) == curve


def test_a_lora_finetune_of_the_hugging_face_folder_loads_with_its_base_tokenizer(hf_base, data, tmp_path):
    base = load_model(hf_base)
    run_finetune(replace(spec(data, hf_base, "smol-lora"), lora=LoRAConfig(rank=2, alpha=4.0)), tmp_path,
                 progress=False)
    config = RunFolder(tmp_path / "smol-lora").read_config()
    assert config["base"]["format"] == "hf" and config["chat_template"] == "chatml"
    tuned = load_model(tmp_path / "smol-lora")
    assert tuned.tokenizer.fingerprint == base.tokenizer.fingerprint
    assert (tuned.chat_template, tuned.chat_template_text) == ("chatml", base.chat_template_text)


def test_a_missing_or_damaged_tokenizer_is_named(finetuned, tmp_path):
    run = RunFolder(tmp_path / "run")
    shutil.copytree(finetuned.path, run.path)
    original = run.tokenizer_json_path.read_text()
    run.tokenizer_json_path.write_text(original[: len(original) // 2])  # cut short
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is not a Hugging Face tokenizer.json .* damaged"):
        load_model(run.path)
    other = json.loads(original)
    other["added_tokens"][0]["content"] = "<|other|>"
    run.tokenizer_json_path.write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match="is not the tokenizer the run was trained with"):
        load_model(run.path)
    run.tokenizer_json_path.unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is missing: copy the tokenizer"):
        load_model(run.path)
    run.update_config(tokenizer={**run.read_config()["tokenizer"], "path": "../tokenizer.json"})
    with pytest.raises(CheckpointError, match="is neither tokenizer.model nor tokenizer.json"):
        load_model(run.path)


def test_a_run_folder_holds_either_tokenizer(tmp_path, smollm2_tokenizer, sp_tokenizer):
    for tokenizer, name in ((smollm2_tokenizer[0], TOKENIZER_JSON), (sp_tokenizer, TOKENIZER)):
        run = RunFolder(tmp_path / name)
        run.path.mkdir()
        record = save_run_tokenizer(run, tokenizer)
        assert record["path"] == name and sorted(p.name for p in run.path.iterdir()) == [name]
        run.write_config({"tokenizer": record})
        back = load_run_tokenizer(run)
        assert type(back) is type(tokenizer) and back.fingerprint == tokenizer.fingerprint
        assert back.encode("Who wrote <|im_end|> Hamlet?") == tokenizer.encode("Who wrote <|im_end|> Hamlet?")
    run.write_config({"model": {}})  # an older run records no tokenizer: it holds tokenizer.model
    assert load_run_tokenizer(run).fingerprint == sp_tokenizer.fingerprint
