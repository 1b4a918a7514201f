"""Evaluation: perplexity and bits per byte, the paper's two multiple-choice normalisations checked by
hand, a trained model choosing what it memorised, and the shipped Shakespeare task."""

import json
import math

import pytest
import torch
from tiny_trained import trained_model

from conftest import TINY
from lab.tasks import SHAKESPEARE_TASK, build_shakespeare_task
from llama_core.evaluate import Item, evaluate_task, load_task, perplexity, save_task, score_item
from llama_core.model import Transformer


@pytest.fixture(scope="module")
def random_model(sp_tokenizer):
    torch.manual_seed(0)
    return Transformer(TINY.replace(vocab_size=sp_tokenizer.vocab_size)).eval()


def _hand_logprob(model, tokenizer, context, completion):
    """log P(completion | context), one token at a time from a full forward pass."""
    ctx = tokenizer.encode(context, bos=True)
    whole = tokenizer.encode(context + completion, bos=True)
    assert whole[:len(ctx)] == ctx
    with torch.no_grad():
        logits, _ = model(torch.tensor([whole]))
    logp = torch.log_softmax(logits[0].double(), -1)
    return sum(logp[t - 1, whole[t]].item() for t in range(len(ctx), len(whole)))


def test_perplexity_and_bits_per_byte_follow_from_the_loss(random_model, sp_tokenizer, shakespeare_text):
    text = shakespeare_text[5000:5600]
    ids = sp_tokenizer.encode(text, bos=True)
    result = perplexity(random_model, sp_tokenizer, text)
    assert result["tokens"] == len(ids) - 1
    # with windows of 16 tokens every target is still scored once
    windowed = perplexity(random_model, sp_tokenizer, text, window=16)
    assert windowed["tokens"] == len(ids) - 1
    first = torch.tensor([ids[:17]])
    with torch.no_grad():
        _, loss = random_model(first[:, :-1], first[:, 1:])
    assert perplexity(random_model, sp_tokenizer, sp_tokenizer.decode(ids[1:17]))["nll_per_token"] == \
        pytest.approx(loss.item(), rel=1e-5)
    n_bytes = len(text.encode("utf-8"))
    assert result["bytes"] == n_bytes
    assert result["bits_per_byte"] == pytest.approx(result["nll_per_token"] * result["tokens"] / math.log(2) / n_bytes)
    assert result["perplexity"] == pytest.approx(math.exp(result["nll_per_token"]))


@pytest.mark.parametrize("normalization", ["chars", "answer"])
def test_both_normalisations_match_a_hand_computation(random_model, sp_tokenizer, normalization):
    item = Item("The quality of mercy is not", (" strain'd", " a thing at all", " x"), 0, normalization)
    got = score_item(random_model, sp_tokenizer, item)
    for score, choice in zip(got, item.choices, strict=True):
        lp = _hand_logprob(random_model, sp_tokenizer, item.context, choice)
        if normalization == "chars":
            expected = lp / len(choice)
        else:  # P(completion | context) / P(completion | "Answer:"), in logs
            expected = lp - _hand_logprob(random_model, sp_tokenizer, "Answer:", choice)
        assert score == pytest.approx(expected, abs=1e-4)


def test_a_trained_model_picks_the_answer_it_memorised(sp_tokenizer):
    model, loss = trained_model(sp_tokenizer)
    assert loss < 0.3
    items = [
        Item("To be, or not to be: that is the", (" answer.", " question.", " problem.", " end."), 1),
        Item("Whether 'tis nobler in the", (" heart", " soul", " mind"), 2),
        Item("Ça va? naïve", (" café", " tea", " wine"), 0, "answer"),
        Item("To be, or not to be:", (" that is the question.", " it is all the same."), 0, "answer"),
    ]
    result = evaluate_task(model, sp_tokenizer, items)
    assert result["predictions"] == [1, 2, 0, 0] and result["accuracy"] == 1.0
    assert result["chance"] == pytest.approx((1 / 4 + 1 / 3 + 1 / 3 + 1 / 2) / 4)
    # an untrained model of the same shape has no such preference
    torch.manual_seed(1)
    untrained = Transformer(model.config).eval()
    assert evaluate_task(untrained, sp_tokenizer, items)["accuracy"] < 1.0


def test_the_shipped_shakespeare_task_is_what_the_function_builds():
    shipped = load_task(SHAKESPEARE_TASK)
    assert shipped == build_shakespeare_task()
    assert len(shipped) == 100 and all(len(it.choices) == 4 for it in shipped)
    # the right answer really is the next line of held-out Shakespeare, and sits at varied positions
    assert len({it.gold for it in shipped}) == 4
    assert all(it.context.endswith("\n") and it.context.count("\n") == 3 for it in shipped)


def test_task_files_with_errors_name_the_line(tmp_path):
    path = tmp_path / "task.jsonl"
    save_task([Item("a", ("b", "c"), 1), Item("d", ("e", "f"), 0, "answer")], path)
    assert load_task(path)[1].normalization == "answer"
    path.write_text(json.dumps({"context": "a", "choices": ["b", "c"], "gold": 0}) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2"):
        load_task(path)
    path.write_text(json.dumps({"context": "a", "choices": ["b", "c"], "gold": 2}) + "\n")
    with pytest.raises(ValueError, match="line 1: gold=2"):
        load_task(path)
    with pytest.raises(FileNotFoundError):
        load_task(tmp_path / "absent.jsonl")


def test_the_eval_command_scores_a_checkpoint(tmp_path, sp_tokenizer, capsys, shakespeare_text):
    from lab.__main__ import main
    from llama_core.formats.hf import save_hf

    model, _ = trained_model(sp_tokenizer)
    save_hf(model, tmp_path / "hf", sp_tokenizer)
    (tmp_path / "text.txt").write_text(shakespeare_text[:2000], encoding="utf-8")
    assert main(["eval", "--checkpoint", str(tmp_path / "hf"), "--limit", "3", "--text",
                 str(tmp_path / "text.txt")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"]["n"] == 3 and 0.0 <= result["task"]["accuracy"] <= 1.0
    assert result["text"]["bits_per_byte"] > 0 and result["format"] == "hf"
