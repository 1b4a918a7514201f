"""The batched, shared-context scorer equals one full forward pass per request, whatever the batching,
and cuts contexts the way evaluation reports them."""

import random

import pytest
import torch

from conftest import TINY, TINY_GQA, random_norm_model
from llama_core.evaluate import normalized_scores
from llama_core.loglikelihood import fit_context, loglikelihoods


def _one_pass(model, ctx, cont):
    """log P(cont | ctx) from one unbatched forward pass over context + continuation."""
    seq = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits, _ = model(seq[:, :-1])
    logp = logits[0].double().log_softmax(-1)
    return sum(logp[len(ctx) - 1 + t, cont[t]].item() for t in range(len(cont)))


def _requests(seed=0, n_contexts=12):
    rng = random.Random(seed)
    out = []
    for _ in range(n_contexts):
        ctx = [rng.randrange(TINY.vocab_size) for _ in range(rng.randrange(1, 30))]
        for _ in range(rng.randrange(1, 5)):  # choices share their question's context
            out.append((ctx, [rng.randrange(TINY.vocab_size) for _ in range(rng.randrange(1, 12))]))
    out.append(out[0])  # a repeated request is scored once and reported twice
    return out


@pytest.mark.parametrize("cfg", [TINY, TINY_GQA], ids=["mha", "gqa"])
@pytest.mark.parametrize("budget", [40, 4096])
def test_batched_scores_equal_one_forward_per_request(cfg, budget):
    model = random_norm_model(cfg)
    reqs = _requests()
    seen = []
    got = loglikelihoods(model, reqs, token_budget=budget, progress=lambda d, n: seen.append((d, n)))
    for value, (ctx, cont) in zip(got, reqs, strict=True):
        assert value == pytest.approx(_one_pass(model, ctx, cont), abs=1e-4)
    assert seen[-1][0] == seen[-1][1] == len(set(map(lambda r: (tuple(r[0]), tuple(r[1])), reqs)))
    assert all(layer.attention.cache is None for layer in model.layers)  # caches released


def test_requests_that_do_not_fit_are_refused_with_the_remedy():
    model = random_norm_model(TINY)
    with pytest.raises(ValueError, match="fit_context"):
        loglikelihoods(model, [([1] * 60, [2] * 10)])
    with pytest.raises(ValueError, match="at least one context token"):
        loglikelihoods(model, [([], [2])])


def test_fit_context_cuts_from_the_left_and_marks_what_cannot_fit():
    fitted = fit_context(list(range(10)), [[1, 2, 3], [4]], max_seq_len=8)
    # 8 + 1 - 3 = 6 context tokens remain beside the 3-token continuation: the last six
    assert fitted.context == (4, 5, 6, 7, 8, 9) and fitted.dropped == 4 and fitted.scorable == (True, True)
    fitted = fit_context([1, 2], [[1] * 9, [4, 5]], max_seq_len=8)
    assert fitted.scorable == (False, True) and fitted.context == (1, 2) and fitted.dropped == 0
    model = random_norm_model(TINY)  # what fits by this rule, the scorer accepts at the model's limit
    ctx, cont = list(range(1, 60)), [3, 4, 5, 6, 7, 8]
    fitted = fit_context(ctx, [cont], TINY.max_seq_len)
    assert len(fitted.context) + len(cont) - 1 == TINY.max_seq_len
    assert loglikelihoods(model, [(fitted.context, cont)])[0] == \
        pytest.approx(_one_pass(model, list(fitted.context), cont), abs=1e-4)


def test_normalisations_by_hand():
    # chars: log-likelihood per character; the longer choice loses despite a higher total
    assert normalized_scores([-6.0, -4.0], [" abcde", " a"], "chars") == [-1.0, -2.0]
    # answer: log P(c | ctx) - log P(c | "Answer:"), which favours the choice the context raised most
    assert normalized_scores([-2.0, -1.0], [" yes", " no"], "answer", [-3.0, -0.5]) == [1.0, -0.5]
    with pytest.raises(ValueError, match="Answer:"):
        normalized_scores([-2.0], [" yes"], "answer")
    with pytest.raises(ValueError, match="unknown normalization"):
        normalized_scores([-2.0], [" yes"], "tokens")
