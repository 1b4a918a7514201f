"""Packed finetuning rows: examples laid end to end never attend to one another (their logits equal
separate forward passes of each), positions restart per example, targets are exactly each example's
assistant tokens and never cross a boundary, and packing trains on the very loss padding does."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_GQA
from llama_core.attention import attend, causal_mask, xformers_unavailable_reason
from llama_core.chat import Message, get_template
from llama_core.loss import IGNORE_INDEX
from llama_core.model import Transformer
from llama_core.sft import Rendered, SFTBatches, pack_rows, render


def _examples(lengths, seed=1) -> list[Rendered]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(0, TINY_GQA.vocab_size, (n,), generator=g).tolist()
        out.append(Rendered(tuple(ids), tuple(i >= n // 2 for i in range(n))))
    return out


def _segments_of(x, kw):
    """(row, slots) of every segment of a packed batch."""
    for r in range(x.shape[0]):
        for s in kw["segments"][r].unique():
            yield r, (kw["segments"][r] == s).nonzero().flatten()


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_packed_examples_equal_their_separate_forward_passes(backend):
    torch.manual_seed(0)
    model = Transformer(TINY_GQA, attn_backend=backend).eval()
    examples = _examples([9, 17, 5, 30, 12, 3, 25])
    x, y, kw = SFTBatches(examples, 7, layout="pack", width=40, shuffle=False).batch_at(0)
    assert x.shape[0] < len(examples)  # several examples share a row
    with torch.no_grad():
        packed, _ = model(x, **kw)
        seen = 0
        for e in examples:
            alone, _ = model(torch.tensor(e.ids[:-1])[None])
            # the example's slots in the packed batch: where its inputs sit, in order
            matches = [(r, slots) for r, slots in _segments_of(x, kw)
                       if len(slots) == len(e.ids) - 1 and x[r, slots].tolist() == list(e.ids[:-1])]
            assert matches, "every example is in the packed batch"
            r, slots = matches[0]
            torch.testing.assert_close(packed[r, slots], alone[0], rtol=1e-5, atol=1e-5)
            seen += 1
    assert seen == len(examples)


def test_positions_restart_and_every_example_has_its_own_segment():
    examples = _examples([9, 17, 5, 30, 12, 3, 25])
    x, y, kw = SFTBatches(examples, 7, layout="pack", width=40, shuffle=False).batch_at(0)
    assert x.shape[1] <= 40
    lengths = []
    for r in range(x.shape[0]):
        seg, pos = kw["segments"][r], kw["positions"][r]
        starts = torch.cat([torch.tensor([True]), seg[1:] != seg[:-1]])
        assert (pos[starts] == 0).all()  # each example (and the padding) starts at position 0
        assert (pos[1:][~starts[1:]] == pos[:-1][~starts[1:]] + 1).all()  # and counts up within it
        assert (seg[1:] >= seg[:-1]).all()  # segments are contiguous runs
        edges = [*starts.nonzero().flatten().tolist(), len(seg)]
        lengths += [b - a for a, b in zip(edges, edges[1:])]
    examples_and_padding = sorted(lengths)
    for n in (9, 17, 5, 30, 12, 3, 25):
        examples_and_padding.remove(n - 1)
    assert len(examples_and_padding) <= x.shape[0]  # what is left is at most a padding run per row


def test_packed_targets_are_exactly_the_assistant_tokens_and_never_cross_a_boundary(sp_tokenizer):
    template = get_template("turns")
    conversations = [[Message("user", "Who speaks this line?"), Message("assistant", "Hamlet")],
                     [Message("system", "Be brief."), Message("user", "Which play?"), Message("assistant", "Macbeth"),
                      Message("user", "And the next line?"), Message("assistant", "Tomorrow, and tomorrow")],
                     [Message("user", "Continue: To be, or not to be"), Message("assistant", "that is the question")]]
    examples = [render(template, c, sp_tokenizer) for c in conversations]
    width = sum(len(e.ids) - 1 for e in examples)
    x, y, kw = SFTBatches(examples, 3, layout="pack", width=width, shuffle=False).batch_at(0)
    assert x.shape == (1, width)  # all three in one row
    at = 0
    for seg, e in zip(kw["segments"][0].unique_consecutive(), sorted(examples, key=lambda e: -len(e.ids))):
        n = len(e.ids) - 1
        assert (kw["segments"][0, at:at + n] == seg).all()
        expected = [t if m else IGNORE_INDEX for t, m in zip(e.ids[1:], e.mask[1:])]
        assert y[0, at:at + n].tolist() == expected  # its own assistant tokens, its own last token last
        assert x[0, at:at + n].tolist() == list(e.ids[:-1])
        at += n
    assert (y[0, at:] == IGNORE_INDEX).all()
    assert int((y != IGNORE_INDEX).sum()) == sum(sum(e.mask[1:]) for e in examples)


def test_packing_trains_on_the_same_loss_and_gradient_as_padding():
    torch.manual_seed(0)
    model = Transformer(TINY_GQA)
    examples = _examples([9, 17, 5, 30, 12, 3, 25, 40])
    grads = {}
    for layout in ("pad", "pack"):
        x, y, *kw = SFTBatches(examples, 8, layout=layout, width=48, seed=3).batch_at(2)
        model.zero_grad()
        _, loss = model(x, y, **(kw[0] if kw else {}))
        loss.backward()
        grads[layout] = (loss.item(), [p.grad.clone() for p in model.parameters()])
    assert grads["pack"][0] == pytest.approx(grads["pad"][0], rel=1e-5)
    for a, b in zip(grads["pack"][1], grads["pad"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_rows_hold_every_example_once_within_the_width():
    lengths = [9, 17, 5, 30, 12, 3, 25, 40, 1, 39]
    rows = pack_rows(lengths, 40)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 40 for row in rows)
    assert len(rows) == -(-sum(lengths) // 40)  # first fit decreasing is tight here
    with pytest.raises(ValueError, match="does not fit a row of 40"):
        pack_rows([41], 40)
    with pytest.raises(ValueError, match="unknown batch layout"):
        SFTBatches(_examples([5]), 1, layout="stack")


def test_segment_mask_is_causal_within_blocks_and_backends_agree():
    segments = torch.tensor([[0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 0, 1]])
    mask = causal_mask(6, 6, 0, torch.device("cpu"), segments=segments)
    assert mask.shape == (2, 1, 6, 6)
    block = torch.block_diag(torch.ones(3, 3), torch.ones(2, 2), torch.ones(1, 1)).tril().bool()
    assert torch.equal(mask[0, 0], block)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 6, 16, generator=g) for h in (4, 2, 2))
    eager = attend(q, k, v, backend="eager", segments=segments)
    torch.testing.assert_close(attend(q, k, v, backend="sdpa", segments=segments), eager, rtol=1e-5, atol=1e-5)
    # a query decoding at slot 5 over cached keys sees its own segment alone
    last = attend(q[:, :, 5:], k, v, backend="sdpa", q_start=5, segments=segments)
    torch.testing.assert_close(last, eager[:, :, 5:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="segments must label every key slot"):
        attend(q, k, v, segments=segments[:, :5])


def test_positions_default_to_slots_and_exclude_rope_offset():
    torch.manual_seed(0)
    model = Transformer(TINY_GQA).eval()
    tokens = torch.randint(0, TINY_GQA.vocab_size, (2, 10))
    with torch.no_grad():
        plain, _ = model(tokens)
        given, _ = model(tokens, positions=torch.arange(10).expand(2, 10))
        assert torch.equal(given, plain)
        with pytest.raises(ValueError, match="not both"):
            model(tokens, positions=torch.arange(10).expand(2, 10), rope_offset=torch.zeros(2, dtype=torch.long))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_xformers_block_diagonal_agrees_with_sdpa_on_packed_rows():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 64, 32, generator=g).cuda().bfloat16() for h in (4, 2, 2))
    reason = xformers_unavailable_reason(q)
    if reason:
        pytest.skip(reason)
    segments = torch.tensor([[0] * 20 + [1] * 30 + [2] * 14, [0] * 64]).cuda()
    xf = attend(q, k, v, backend="xformers", segments=segments)
    sd = attend(q, k, v, backend="sdpa", segments=segments)
    assert (xf.float() - sd.float()).abs().max().item() <= 2e-2
