"""Generation: cached decoding equals the full forward pass, sampling stays in its set, streaming is exact."""

import json

import pytest
import torch
from tiny_trained import memorised_prompt, trained_model

from conftest import TINY, TINY_GQA, TINY_TIED_THETA, random_norm_model
from llama_core.generate import (
    GREEDY,
    Sampling,
    decode_one_token,
    filter_logits,
    generate,
    generate_batch,
    generate_text,
    prefill,
    sample,
    stream,
    stream_text,
)
from llama_core.packing import pack

CONFIGS = {"mha": TINY, "gqa": TINY_GQA, "tied_mqa_theta1e5": TINY_TIED_THETA}


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
@pytest.mark.parametrize("name", CONFIGS)
def test_cached_decode_matches_full_forward_at_every_position(name, packed):
    cfg = CONFIGS[name]
    model = random_norm_model(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.max_seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(tokens)  # the plain model, uncached
        if packed:
            pack(model)
        model.setup_caches(2, cfg.max_seq_len)
        steps = [prefill(model, tokens[:, :3])]
        for pos in range(3, cfg.max_seq_len):
            steps.append(decode_one_token(model, tokens[:, pos:pos + 1], pos))
        model.clear_caches()
    assert (torch.stack(steps, 1) - full[:, 2:]).abs().max().item() < 1e-4


def test_left_padded_batch_decodes_like_each_prompt_alone():
    model = random_norm_model(TINY_GQA)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [42]]
    sampling = Sampling(max_new_tokens=12, temperature=0.0)
    batch = generate_batch(model, prompts, sampling)
    assert batch == [generate(model, p, sampling) for p in prompts]
    assert all(len(out) == 12 for out in batch)


def _greedy_without_cache(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_temperature_zero_is_deterministic_and_greedy():
    model = random_norm_model(TINY)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    first = generate(model, prompt, Sampling(max_new_tokens=20, temperature=0.0))
    assert first == generate(model, prompt, Sampling(max_new_tokens=20, temperature=0.0, seed=123))
    assert first == _greedy_without_cache(model, prompt, 20)


def test_a_seed_repeats_a_sampled_run():
    model = random_norm_model(TINY)
    sampling = Sampling(max_new_tokens=30, temperature=1.0, seed=7)
    a = generate(model, [1, 2, 3], sampling)
    assert a == generate(model, [1, 2, 3], sampling)
    assert a != generate(model, [1, 2, 3], Sampling(max_new_tokens=30, temperature=1.0, seed=8))


def _nucleus(probs, p):
    """The smallest set of most likely tokens whose probability reaches p (by hand)."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, total = set(), 0.0
    for i in order:
        kept.add(i)
        total += probs[i]
        if total >= p:
            break
    return kept


@pytest.mark.parametrize("top_k,top_p", [(5, None), (None, 0.5), (None, 0.9), (20, 0.7), (1, None)])
def test_top_k_and_top_p_never_sample_outside_their_set(top_k, top_p):
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 3
    sampling = Sampling(temperature=0.8, top_k=top_k, top_p=top_p)
    allowed = []
    for row in logits / sampling.temperature:
        kept = set(range(50)) if top_k is None else set(row.topk(top_k).indices.tolist())
        if top_p is not None:
            masked = torch.full_like(row, float("-inf"))
            masked[list(kept)] = row[list(kept)]
            kept = _nucleus(masked.softmax(-1).tolist(), top_p)
        allowed.append(kept)
    gen = torch.Generator().manual_seed(1)
    seen = [set() for _ in range(3)]
    for _ in range(400):
        for row, t in enumerate(sample(logits, sampling, gen).tolist()):
            seen[row].add(t)
    for row in range(3):
        assert seen[row] <= allowed[row]
        finite = torch.isfinite(filter_logits(logits / sampling.temperature, top_k, top_p)[row])
        assert set(finite.nonzero().flatten().tolist()) == allowed[row]
    if top_k == 1:
        assert seen == [{int(r.argmax())} for r in logits]


def test_generation_stops_at_the_first_stop_token():
    model = random_norm_model(TINY)
    free = generate(model, [1, 2, 3], Sampling(max_new_tokens=20, temperature=0.0))
    stop = free[4]
    cut = generate(model, [1, 2, 3], Sampling(max_new_tokens=20, temperature=0.0, stop_tokens=(stop,)))
    assert cut == free[:free.index(stop) + 1]
    assert list(stream(model, [1, 2, 3], Sampling(max_new_tokens=20, temperature=0.0, stop_tokens=(stop,)))) == cut


def test_max_new_tokens_and_the_context_limit():
    model = random_norm_model(TINY)
    assert len(generate(model, [1, 2], Sampling(max_new_tokens=7, temperature=0.0))) == 7
    assert generate(model, [1, 2], Sampling(max_new_tokens=0)) == []
    near_end = list(range(1, TINY.max_seq_len - 2))  # 61 tokens: 3 new ones fit, and 1 never fed back
    assert len(generate(model, near_end, Sampling(max_new_tokens=50, temperature=0.0))) == 4


def test_a_prompt_longer_than_the_context_is_a_clear_error():
    model = random_norm_model(TINY)
    with pytest.raises(ValueError, match=r"prompt has 65 tokens .* context \(max_seq_len\) is 64"):
        generate(model, [1] * (TINY.max_seq_len + 1))
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [])


def test_streaming_concatenates_to_the_decoded_text_with_multibyte_characters(sp_tokenizer):
    model, _ = trained_model(sp_tokenizer)
    # a prompt cut from the memorised ids: the model provably continues with the multi-byte line
    prompt = memorised_prompt(sp_tokenizer, "Ça va?")
    sampling = Sampling(max_new_tokens=60, temperature=0.0)  # within the span the criterion checked
    text = sp_tokenizer.decode(generate(model, prompt, sampling))
    assert "日本語" in text and "☃" in text
    # the characters arrive as byte tokens: several tokens per character
    assert len(sp_tokenizer.encode("日本語")) >= 9
    pieces = list(stream_text(model, sp_tokenizer, prompt, sampling))
    assert "".join(pieces) == text
    assert len(pieces) > 5 and not any("\ufffd" in p for p in pieces)
    # sampled, with a seed: the stream equals the decoded sampled tokens, whatever they are
    hot = Sampling(max_new_tokens=40, temperature=1.5, seed=3)
    assert "".join(stream_text(model, sp_tokenizer, prompt, hot)) == sp_tokenizer.decode(generate(model, prompt, hot))


def test_stop_strings_cut_the_text_exactly(sp_tokenizer):
    model, _ = trained_model(sp_tokenizer)
    prompt = memorised_prompt(sp_tokenizer, "To be,")
    sampling = Sampling(max_new_tokens=60, temperature=0.0)
    full = sp_tokenizer.decode(generate(model, prompt, sampling))
    stop = "question"
    assert stop in full
    pieces = list(stream_text(model, sp_tokenizer, prompt, sampling, stop_strings=[stop, "never appears"]))
    assert "".join(pieces) == full[:full.index(stop)]
    assert generate_text(model, sp_tokenizer, prompt, sampling, stop_strings=["日本"]) == full[:full.index("日本")]


def test_bad_sampling_settings_are_clear_errors():
    for kwargs, match in [({"temperature": -1}, "temperature"), ({"top_p": 0.0}, "top_p"),
                          ({"top_k": 0}, "top_k"), ({"max_new_tokens": -1}, "max_new_tokens")]:
        with pytest.raises(ValueError, match=match):
            Sampling(**kwargs)
    assert GREEDY.temperature == 0


def test_the_decode_benchmark_prints_one_json_line(tmp_path, capsys):
    from lab.__main__ import main

    out = tmp_path / "decode.jsonl"
    assert main(["bench", "decode", "--preset", "lab-1m", "--new", "4", "--rounds", "1", "--vs", "hf",
                 "--threads", "1", "--out", str(out)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["tokens_per_s"] > 0 and record["hf_tokens_per_s"] > 0 and record["mbu"] > 0
    assert record["same_tokens_as_hf"] is True
    assert json.loads(out.read_text()) == record


def test_cached_decode_in_bfloat16_stays_close_to_the_full_forward():
    model = random_norm_model(TINY_GQA).to(torch.bfloat16)
    tokens = torch.randint(0, TINY_GQA.vocab_size, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, _ = model(tokens)
        model.setup_caches(1, 24)
        steps = [prefill(model, tokens[:, :4])]
        steps += [decode_one_token(model, tokens[:, p:p + 1], p) for p in range(4, 24)]
        model.clear_caches()
    got = torch.stack(steps, 1)
    assert got.dtype == torch.bfloat16
    assert (got.float() - full[:, 3:].float()).abs().max().item() < 0.05
