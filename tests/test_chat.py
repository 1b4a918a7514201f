"""Chat templates render the documented formats; a conversation keeps within the context window."""

import pytest
import torch

from conftest import TINY
from llama_core.chat import Conversation, Message, get_template, template_name
from llama_core.generate import Sampling, generate
from llama_core.model import Transformer


def test_chatml_renders_every_turn_and_opens_the_assistant(sp_tokenizer):
    msgs = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello."),
            Message("user", "Who wrote Hamlet?")]
    ids = get_template("chatml").render(msgs, sp_tokenizer, add_bos=True)
    assert ids[0] == sp_tokenizer.bos_id
    assert sp_tokenizer.decode(ids[1:]) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                                            "<|im_start|>assistant\nHello.<|im_end|>\n"
                                            "<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n"
                                            "<|im_start|>assistant\n")


def test_llama2_wraps_each_exchange_in_bos_and_eos(sp_tokenizer):
    msgs = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello."),
            Message("user", "Again")]
    ids = get_template("llama2").render(msgs, sp_tokenizer)
    bos, eos = sp_tokenizer.bos_id, sp_tokenizer.eos_id
    assert ids.count(bos) == 2 and ids.count(eos) == 1
    first_end = ids.index(eos)
    assert ids[0] == bos and ids[first_end + 1] == bos
    assert sp_tokenizer.decode(ids[1:first_end]) == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. "
    assert sp_tokenizer.decode(ids[first_end + 2:]) == "[INST] Again [/INST]"


def test_plain_completion_is_the_text_itself(sp_tokenizer):
    ids = get_template("plain").render([Message("user", "Shall I compare thee")], sp_tokenizer)
    assert ids == sp_tokenizer.encode("Shall I compare thee", bos=True)


def test_template_names_come_from_the_checkpoints_jinja_text():
    assert template_name(None) == "plain"
    assert template_name("{{'<|im_start|>' + message['role']}}") == "chatml"
    assert template_name("{{ bos_token + '[INST] ' + content + ' [/INST]' }}") == "llama2"
    with pytest.raises(ValueError, match="unknown chat template"):
        get_template("vicuna")


def test_a_conversation_drops_the_oldest_exchanges_and_keeps_the_system_prompt(sp_tokenizer):
    chatml = get_template("chatml")
    history = []
    for i in range(6):
        history += [Message("user", f"Question number {i} about the play?"),
                    Message("assistant", f"Answer number {i}, my lord.")]
    history.append(Message("user", "And the last one?"))
    system = Message("system", "You are Puck.")
    # a window that holds the system prompt, the newest three exchanges and the question, no more
    fits = chatml.render([system] + history[-7:], sp_tokenizer)
    conv = Conversation(chatml, sp_tokenizer, max_context=len(fits) + 20 + 5, system=system.content)
    conv.messages = list(history)
    assert conv.prompt(reserve=20) == fits
    text = sp_tokenizer.decode(fits)
    assert text.startswith("<|im_start|>system\nYou are Puck.<|im_end|>")
    assert "Question number 2" not in text and "Question number 3" in text
    assert conv.messages == history  # rendering a prompt leaves the history as it was
    conv.trim(reserve=20)
    assert conv.messages == history[-7:]  # whole exchanges went: the history starts at a question


def test_a_message_longer_than_the_context_is_a_clear_error(sp_tokenizer):
    conv = Conversation(get_template("plain"), sp_tokenizer, max_context=32)
    conv.add("user", "Now is the winter of our discontent made glorious summer by this sun of York " * 3)
    with pytest.raises(ValueError, match="the context holds 32"):
        conv.prompt(reserve=8)


def test_respond_streams_a_reply_and_records_it(sp_tokenizer):
    torch.manual_seed(0)
    model = Transformer(TINY.replace(vocab_size=sp_tokenizer.vocab_size)).eval()
    conv = Conversation(get_template("plain"), sp_tokenizer, model.config.max_seq_len)
    conv.add("user", "To be, or not to be")
    prompt = conv.prompt()
    pieces = list(conv.respond(model, Sampling(max_new_tokens=10, temperature=0.0)))
    assert conv.messages[-1] == Message("assistant", "".join(pieces))
    assert len(conv.messages) == 2
    expected = generate(model, prompt, Sampling(max_new_tokens=10, temperature=0.0, stop_tokens=(2,)))
    assert conv.last_reply_tokens == len(expected)
    assert "".join(pieces) == sp_tokenizer.decode([t for t in expected if t != 2])


def test_the_chat_command_streams_replies_and_reports_tokens_per_second(tmp_path, sp_tokenizer, monkeypatch,
                                                                       capsys):
    import io

    from lab.__main__ import main
    from llama_core.formats.hf import save_hf

    torch.manual_seed(0)
    save_hf(Transformer(TINY.replace(vocab_size=sp_tokenizer.vocab_size)), tmp_path, sp_tokenizer)
    monkeypatch.setattr("sys.stdin", io.StringIO("To be, or not to be\n/reset\nAnother\n/quit\n"))
    assert main(["chat", "--checkpoint", str(tmp_path), "--max-new-tokens", "6", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert "template plain" in out and out.count(" tokens/s, ") == 2
