"""The demo chooser: synthetic rates and a synthetic law; more budget buys more parameters and tokens."""

from __future__ import annotations

import numpy as np
import pytest

from lab.demo_choice import affordable_tokens, choose, explain
from lab.scaling import LawCoefficients, compute_optimal, predict_loss

LAW = LawCoefficients(E=1.2, A=300.0, B=300.0, alpha=0.35, beta=0.35)
FLOPS = 3e10  # a synthetic machine: every shape trains at the same FLOP rate, so tokens/s = FLOPS / 6N
SIZES = np.logspace(5, 8, 13).astype(int)  # 100k to 100M parameters, 13 shapes
RATES = {f"m{n}": (int(n), FLOPS / (6 * n)) for n in SIZES}


def test_more_budget_buys_more_parameters_and_more_tokens():
    choices = [choose(LAW, RATES, budget) for budget in (30, 300, 3_000, 30_000)]
    params = [c.best.n_params for c in choices]
    tokens = [c.best.tokens for c in choices]
    assert params == sorted(params) and len(set(params)) == len(params), params
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens
    assert all(c.best.predicted == min(o.predicted for o in c.options) for c in choices)


def test_choice_is_the_compute_optimal_shape_on_a_dense_grid():
    # with rates from C = 6ND the chooser is Hoffmann et al.'s allocation, up to the grid's spacing
    budget = 3_000
    best = choose(LAW, RATES, budget).best
    optimum = compute_optimal(LAW, FLOPS * budget)
    ratio = best.n_params / float(optimum.n_params)
    spacing = SIZES[1] / SIZES[0]
    assert 1 / spacing <= ratio <= spacing
    assert best.predicted == pytest.approx(float(predict_loss(LAW, best.n_params, best.tokens)))


def test_a_faster_machine_picks_a_larger_model():
    slow = choose(LAW, RATES, 300).best
    fast = choose(LAW, {k: (n, r * 10) for k, (n, r) in RATES.items()}, 300).best
    assert fast.n_params > slow.n_params and fast.tokens > slow.tokens


def test_tokens_are_whole_steps_and_capped():
    assert affordable_tokens(1000.0, 10, step_tokens=2048) == 8192
    choice = choose(LAW, RATES, 300, step_tokens=2048, max_tokens=100_000)
    assert all(o.tokens % 2048 == 0 and o.tokens <= 100_000 for o in choice.options)
    assert any("lowest" in line and choice.best.preset in line for line in explain(choice))


def test_bad_budgets_are_refused_and_a_tiny_one_trains_one_step_of_the_fastest():
    with pytest.raises(ValueError, match="positive"):
        choose(LAW, RATES, 0)
    tiny = choose(LAW, {"big": (10**8, 10.0), "small": (10**5, 100.0)}, 1, step_tokens=2048)
    assert (tiny.best.preset, tiny.best.tokens) == ("small", 2048) and "no candidate" in tiny.note
    assert tiny.note in explain(tiny)[-1]
