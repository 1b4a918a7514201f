"""Checkpointing policies: same loss and gradients as none, measurably less memory, real recomputation."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import TINY
from lab.benchmarks.checkpointing import TensorMemory
from llama_core.activation_checkpointing import POLICIES, apply_activation_checkpointing
from llama_core.model import Transformer


@pytest.fixture(scope="module")
def plain() -> Transformer:
    torch.manual_seed(0)
    return Transformer(TINY)


def _batch(cfg, batch=2, seq=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, cfg.vocab_size, (batch, seq), generator=g),
            torch.randint(0, cfg.vocab_size, (batch, seq), generator=g))


def _loss_and_grads(model, tokens, targets):
    _, loss = model(tokens, targets)
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def reference(plain):
    """The batch, and the loss and gradients of the plain model on it."""
    tokens, targets = _batch(TINY)
    return tokens, targets, *_loss_and_grads(copy.deepcopy(plain), tokens, targets)


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_gives_the_loss_and_gradients_of_none(plain, reference, policy):
    tokens, targets, ref_loss, ref_grads = reference
    model = apply_activation_checkpointing(copy.deepcopy(plain), policy)
    loss, grads = _loss_and_grads(model, tokens, targets)
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.slow
def test_policies_compile(plain, reference):
    """The training loop applies the policy, then torch.compile: dynamo must trace every policy."""
    tokens, targets, ref_loss, ref_grads = reference
    for policy in ("full", "selective", "fused"):
        torch._dynamo.reset()
        model = apply_activation_checkpointing(copy.deepcopy(plain), policy)
        # aot_eager traces forward and backward as inductor would, without compiling C++
        _, loss = torch.compile(model, backend="aot_eager")(tokens, targets)
        loss.backward()
        torch.testing.assert_close(loss.detach(), ref_loss, msg=policy)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, ref_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_unknown_policy_names_the_valid_ones(plain):
    with pytest.raises(ValueError, match=r"'sometimes'.*none.*full.*selective.*fused"):
        apply_activation_checkpointing(plain, "sometimes")


@pytest.mark.parametrize("policy", POLICIES)
def test_the_model_keeps_its_names_classes_and_state_dict(plain, policy):
    model = copy.deepcopy(plain)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    classes = [type(m) for m in model.modules()]
    assert apply_activation_checkpointing(model, policy) is model
    assert [type(m) for m in model.modules()] == classes
    assert model.state_dict().keys() == before.keys()


def test_a_later_policy_replaces_the_earlier_one(plain):
    model = apply_activation_checkpointing(copy.deepcopy(plain), "fused")
    apply_activation_checkpointing(model, "full")
    assert "forward" not in model.layers[0].feed_forward.__dict__
    apply_activation_checkpointing(model, "none")
    assert not any("forward" in m.__dict__ for m in model.modules())


def _norm_calls(model, run) -> int:
    """How many times the blocks' attention norms run during `run()`."""
    calls = []
    norms = [layer.attention_norm for layer in model.layers]
    handles = [norm.register_forward_hook(lambda *_: calls.append(1)) for norm in norms]
    run()
    for h in handles:
        h.remove()
    return len(calls)


@pytest.mark.parametrize("policy, runs_per_step", [("none", 1), ("fused", 1), ("selective", 2), ("full", 2)])
def test_checkpointed_blocks_are_recomputed_in_the_backward(plain, policy, runs_per_step):
    model = apply_activation_checkpointing(copy.deepcopy(plain), policy)
    tokens, targets = _batch(TINY)
    n = _norm_calls(model, lambda: model(tokens, targets)[1].backward())
    assert n == runs_per_step * TINY.n_layers
    with torch.no_grad():  # inference runs each block once, whatever the policy
        assert _norm_calls(model, lambda: model(tokens)) == TINY.n_layers


def test_a_deep_copy_trains_its_own_weights(plain):
    model = apply_activation_checkpointing(copy.deepcopy(plain), "full")
    twin = copy.deepcopy(model)
    tokens, targets = _batch(TINY)
    twin(tokens, targets)[1].backward()
    assert all(p.grad is not None for p in twin.parameters())
    assert all(p.grad is None for p in model.parameters())


def _memory(model, tokens, targets) -> tuple[int, int]:
    """(bytes held for the backward when the forward ends, peak bytes over forward and backward)."""
    with TensorMemory() as mem:
        _, loss = model(tokens, targets)
        held = mem.live
        loss.backward()
    return held, mem.peak


def test_policies_hold_less_activation_memory(plain):
    tokens, targets = _batch(TINY, batch=2, seq=TINY.max_seq_len)
    held, peak = {}, {}
    for policy in POLICIES:
        model = apply_activation_checkpointing(copy.deepcopy(plain), policy)
        held[policy], peak[policy] = _memory(model, tokens, targets)
    assert held["full"] < held["selective"] < held["none"]
    assert held["fused"] < held["none"]
    assert peak["full"] < peak["none"] and peak["selective"] < peak["none"] and peak["fused"] < peak["none"]
    # deterministic: the same measurement twice gives the same bytes
    model = apply_activation_checkpointing(copy.deepcopy(plain), "selective")
    assert _memory(model, tokens, targets) == (held["selective"], peak["selective"])


def test_benchmark_writes_one_json_line_per_policy(tmp_path, capsys, monkeypatch):
    from lab.__main__ import main

    # a datasheet-like figure instead of measuring this CPU's matmul peak (slow on a shared machine)
    monkeypatch.setattr("lab.benchmarks.checkpointing.peak_flops", lambda device, dtype: (1e12, "test"))
    out = tmp_path / "bench.jsonl"
    assert main(["bench", "checkpointing", "--preset", "lab-1m", "--set", "n_layers=1", "vocab_size=256",
                 "--policies", "none,selective", "--batch", "1", "--seq", "16", "--steps", "1",
                 "--device", "cpu", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["policy"] for r in lines] == ["none", "selective"]
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == lines
    for r in lines:
        assert r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["peak_memory_bytes"] > 0
        assert (r["preset"], r["seq_len"]) == ("lab-1m", 16)
        assert r["model_overrides"] == ["n_layers=1", "vocab_size=256"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("policy", POLICIES)
def test_bf16_training_step_on_cuda(policy):
    torch.manual_seed(0)
    model = apply_activation_checkpointing(Transformer(TINY.replace(max_seq_len=256)).cuda(), policy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens, targets = (t.cuda() for t in _batch(TINY, batch=4, seq=256))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss = model(tokens, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
