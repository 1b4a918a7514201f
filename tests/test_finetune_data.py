"""Instruction data: validation with named lines, template rendering, the assistant-token loss mask
(hand-checked per template), truncation from the left, padded batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llama_core.chat import Message, get_template
from llama_core.sft import SFTBatches, fit, render, segments
from llama_core.sft_data import parse_example, read_examples

CONVERSATION = [Message("system", "Be brief."), Message("user", "Who is Hamlet?"),
                Message("assistant", "The prince."), Message("user", "And Horatio?"),
                Message("assistant", "His friend.")]


def spans(rendered):
    """Contiguous runs of masked token ids."""
    out, current = [], []
    for token, mine in zip(rendered.ids, rendered.mask):
        if mine:
            current.append(token)
        elif current:
            out.append(current)
            current = []
    return out + ([current] if current else [])


def test_turns_mask_is_the_replies_and_their_end_markers(sp_tokenizer):
    r = render(get_template("turns"), CONVERSATION, sp_tokenizer)
    assert [sp_tokenizer.decode(s) for s in spans(r)] == ["The prince.<|end|>\n", "His friend.<|end|>\n"]
    unmasked = [t for t, m in zip(r.ids, r.mask) if not m]
    assert sp_tokenizer.decode(unmasked) == ("<|system|>\nBe brief.<|end|>\n<|user|>\nWho is Hamlet?<|end|>\n"
                                             "<|assistant|>\n<|user|>\nAnd Horatio?<|end|>\n<|assistant|>\n")
    assert r.ids[0] == sp_tokenizer.bos_id and not r.mask[0]


def test_chatml_mask(sp_tokenizer):
    r = render(get_template("chatml"), CONVERSATION, sp_tokenizer)
    assert [sp_tokenizer.decode(s) for s in spans(r)] == ["The prince.<|im_end|>", "His friend.<|im_end|>"]


def test_llama2_mask_ends_each_reply_with_eos(sp_tokenizer):
    r = render(get_template("llama2"), CONVERSATION, sp_tokenizer)
    got = spans(r)
    assert [s[-1] for s in got] == [sp_tokenizer.eos_id] * 2
    assert [sp_tokenizer.decode(s[:-1]) for s in got] == [" The prince. ", " His friend. "]


def test_plain_mask_is_the_replies_and_a_final_eos(sp_tokenizer):
    r = render(get_template("plain"), CONVERSATION, sp_tokenizer)
    got = spans(r)
    assert [sp_tokenizer.decode(s) for s in got] == ["The prince.", "His friend."]
    assert got[-1][-1] == sp_tokenizer.eos_id and sp_tokenizer.eos_id not in got[0]


@pytest.mark.parametrize("name", ["turns", "chatml", "llama2", "plain"])
def test_training_prompt_is_what_chat_renders(name, sp_tokenizer):
    """Before each reply the training tokens are exactly the prompt chat would give the model."""
    template = get_template(name)
    for k, m in enumerate(CONVERSATION):
        if m.role != "assistant":
            continue
        r = render(template, CONVERSATION, sp_tokenizer)
        start = [i for i in range(1, len(r.mask)) if r.mask[i] and not r.mask[i - 1]][
            sum(x.role == "assistant" for x in CONVERSATION[:k])]
        assert list(r.ids[:start]) == template.render(CONVERSATION[:k], sp_tokenizer), name


def test_truncation_drops_oldest_exchanges_keeps_system_and_last_reply(sp_tokenizer):
    template = get_template("turns")
    long = [Message("system", "Be brief.")] + [Message(role, f"turn {i} " * 6) for i in range(8)
                                               for role in ("user", "assistant")]
    full = render(template, long, sp_tokenizer)
    fitted = fit(template, [long, CONVERSATION], sp_tokenizer, max_tokens=len(full.ids) // 2)
    assert fitted.truncated == 1 and fitted.dropped == 0 and len(fitted.examples) == 2
    cut = fitted.examples[0]
    assert len(cut.ids) <= len(full.ids) // 2
    text = sp_tokenizer.decode(list(cut.ids))
    assert text.startswith("<|system|>\nBe brief.") and text.endswith("turn 7 " * 6 + "<|end|>\n")
    # a reply longer than the context is cut from the left and still trained on
    tiny = fit(template, [long], sp_tokenizer, max_tokens=8)
    assert tiny.truncated == 1 and len(tiny.examples[0].ids) == 8 and all(tiny.examples[0].mask[1:])


def test_padded_batches_target_only_assistant_tokens(sp_tokenizer):
    template = get_template("turns")
    examples = fit(template, [CONVERSATION, CONVERSATION[:3]], sp_tokenizer, 200).examples
    batches = SFTBatches(examples, batch_size=2, shuffle=False, pad_id=0)
    x, y = batches.batch_at(0)
    for row, ex in enumerate(examples):
        n = len(ex.ids) - 1
        assert x[row, :n].tolist() == list(ex.ids[:-1])
        expected = [t if m else -100 for t, m in zip(ex.ids[1:], ex.mask[1:])]
        assert y[row, :n].tolist() == expected and (y[row, n:] == -100).all()
    shuffled = SFTBatches(examples * 5, batch_size=3, seed=1)
    first = [next(shuffled) for _ in range(4)]
    again = SFTBatches(examples * 5, batch_size=3, seed=1)
    again.load_state_dict(shuffled.state_dict())
    again.position = 0
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, (next(again) for _ in range(4))))


@pytest.mark.parametrize("line, message", [
    ({"messages": [{"role": "narrator", "content": "x"}]}, "unknown role 'narrator'"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "'user' was expected"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "'assistant' was expected"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}, "no assistant turn"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}]}, "ends with a user turn"),
    ({"prompt": "a", "completion": "b"}, "needs 'messages'"),
    ({"messages": [{"role": "user", "content": 3}]}, "string 'role' and 'content'"),
])
def test_bad_conversations_are_refused_with_the_reason(line, message):
    with pytest.raises(ValueError, match=message):
        parse_example(line)


def test_alpaca_form_and_bad_lines_named_by_number(tmp_path):
    good = {"instruction": "Name the play.", "input": "To be, or not to be", "output": "Hamlet"}
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(good) + "\n\n{not json\n" + json.dumps({"messages": []}) + "\n")
    with pytest.raises(ValueError, match=r"data.jsonl, line 3: not valid JSON.*--skip-bad-lines"):
        read_examples(path)
    examples = read_examples(path, skip_bad=True)
    assert examples.conversations == [[Message("user", "Name the play.\n\nTo be, or not to be"),
                                       Message("assistant", "Hamlet")]]
    assert [s.split(":")[0] for s in examples.skipped] == ["line 3", "line 4"]
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="no usable conversation"):
        read_examples(path, skip_bad=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_examples(tmp_path / "missing.jsonl")


def test_an_unknown_template_has_no_training_layout(sp_tokenizer):
    from llama_core.chat import ChatTemplate

    class Other(ChatTemplate):
        name = "other"

    with pytest.raises(ValueError, match="no training layout"):
        segments(Other(), CONVERSATION, sp_tokenizer)


def test_shakespeare_instructions_hold_out_speeches_and_works(tmp_path):
    from lab.instructions import HELD_OUT_WORKS, build_questions, play_title, write

    train, val = build_questions(per_play=2)
    assert {q.kind for q in train} == {q.kind for q in val} == {"who", "which", "continue"}
    assert not {q.prompt for q in train} & {q.prompt for q in val}  # no validation question is trained on
    unseen = {play_title(Path(f"{w}_gut.txt")) for w in HELD_OUT_WORKS}
    assert not any(t in q.prompt or q.answer in unseen for q in train for t in unseen)
    assert all(q.answer in q.choices for q in train + val if q.kind != "continue")
    paths = write(tmp_path, per_play=2)
    assert [len(read_examples(p).conversations) for p in paths] == [len(train), len(val)]


def test_the_turns_jinja_template_renders_the_text_turns_encodes():
    import jinja2

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who speaks first?"},
                {"role": "assistant", "content": "BERNARDO."}, {"role": "user", "content": "In which play?"}]
    template = get_template("turns")
    text = jinja2.Template(template.jinja).render(messages=messages, bos_token="", add_generation_prompt=True)
    pieces = [f"{template.header(m['role'])}{m['content']}{template.end}\n" for m in messages]
    assert text == "".join(pieces) + template.header("assistant")
    from llama_core.chat import template_name

    assert template_name(template.jinja) == "turns"
