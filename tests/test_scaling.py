"""Scaling-law fits recover a known law from synthetic runs; the allocation matches its closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from lab.scaling import (
    COEFFICIENT_PRESETS,
    EPOCH,
    HOFFMANN,
    LawCoefficients,
    bootstrap_fit,
    compute_optimal,
    fit_law,
    isoflop_fit,
    predict_final_loss,
    predict_loss,
)

# A law with lab-scale E and exponents near the published ones; B differs from A so the two
# terms are distinguishable.
TRUE = LawCoefficients(E=1.8, A=400.0, B=1200.0, alpha=0.34, beta=0.30)
NOISE = 0.005  # multiplicative log-normal noise on each run's loss, ~0.5%


def synthetic_runs(seed: int = 1):
    """A 6 x 6 grid of (N, D): 1M-1B parameters, 100M-100B tokens, losses from TRUE with noise."""
    rng = np.random.default_rng(seed)
    n = np.repeat(np.logspace(6, 9, 6), 6)
    d = np.tile(np.logspace(8, 11, 6), 6)
    loss = predict_loss(TRUE, n, d) * np.exp(rng.normal(0.0, NOISE, n.size))
    return n, d, loss


@pytest.fixture(scope="module")
def boot():
    n, d, loss = synthetic_runs()
    return bootstrap_fit(n, d, loss, n_boot=60, seed=0)


def test_presets_are_the_published_coefficients():
    assert tuple(HOFFMANN.as_array()) == (1.69, 406.4, 410.7, 0.34, 0.28)
    assert tuple(EPOCH.as_array()) == (1.8172, 482.01, 2085.43, 0.3478, 0.3658)
    assert set(COEFFICIENT_PRESETS) == {"hoffmann", "epoch"}


def test_fit_recovers_exact_law_without_noise():
    n, d, _ = synthetic_runs()
    fit = fit_law(n, d, predict_loss(TRUE, n, d))
    np.testing.assert_allclose(fit.coef.as_array(), TRUE.as_array(), rtol=1e-4)
    assert fit.converged and np.abs(fit.residuals).max() < 1e-6


def test_fit_recovers_known_coefficients_from_noisy_runs(boot):
    # Tolerance with 0.5% noise on 36 runs: E, alpha, beta within 3%; A and B (which trade off
    # against the exponents) within 15%.
    got = boot.fit.coef
    assert got.E == pytest.approx(TRUE.E, rel=0.03)
    assert got.alpha == pytest.approx(TRUE.alpha, rel=0.03)
    assert got.beta == pytest.approx(TRUE.beta, rel=0.03)
    assert got.A == pytest.approx(TRUE.A, rel=0.15)
    assert got.B == pytest.approx(TRUE.B, rel=0.15)


def test_bootstrap_intervals_cover_the_truth(boot):
    assert len(boot.samples) >= 50
    for name, (lo, hi) in boot.intervals().items():
        assert lo <= getattr(TRUE, name) <= hi, (name, lo, hi)


def test_prediction_interval_covers_a_held_out_run(boot):
    # extrapolate beyond the fitted grid: 3B parameters on 300B tokens
    pred = predict_final_loss(boot, 3e9, 3e11)
    truth = float(predict_loss(TRUE, 3e9, 3e11))
    assert pred.low <= truth <= pred.high
    assert pred.low < pred.loss < pred.high
    assert (pred.high - pred.low) / pred.loss < 0.05  # informative, not vacuous


def test_fit_rejects_too_few_runs():
    with pytest.raises(ValueError, match="at least 5 runs"):
        fit_law([1e6, 1e7], [1e8, 1e9], [3.0, 2.5])


@pytest.mark.parametrize("coef", [HOFFMANN, EPOCH])
def test_compute_optimal_matches_closed_form_and_numeric_minimum(coef):
    budgets = np.array([1e18, 1e21, 5.76e23])
    alloc = compute_optimal(coef, budgets)
    np.testing.assert_allclose(6 * alloc.n_params * alloc.tokens, budgets, rtol=1e-12)
    # exponents: N_opt ~ C^(beta/(alpha+beta)) (Hoffmann et al. 2022, eq. 4)
    slope = np.diff(np.log(alloc.n_params)) / np.diff(np.log(budgets))
    np.testing.assert_allclose(slope, coef.beta / (coef.alpha + coef.beta), rtol=1e-10)
    for c, n_opt in zip(budgets, alloc.n_params, strict=True):
        res = minimize_scalar(lambda x, c=c: predict_loss(coef, np.exp(x), c / (6 * np.exp(x))),
                              bounds=(np.log(1e3), np.log(1e15)), method="bounded",
                              options={"xatol": 1e-10})
        assert np.exp(res.x) == pytest.approx(n_opt, rel=1e-4)


def test_isoflop_recovers_known_exponent():
    rng = np.random.default_rng(2)
    budgets = np.logspace(17, 21, 5)
    opt = compute_optimal(TRUE, budgets).n_params
    n = np.concatenate([o * np.logspace(-0.75, 0.75, 9) for o in opt])  # 9 sizes around each optimum
    c = np.repeat(budgets, 9)
    d = c / (6 * n)
    loss = predict_loss(TRUE, n, d) * np.exp(rng.normal(0.0, 0.001, n.size))
    iso = isoflop_fit(n, d, loss)
    assert len(iso.compute) == 5
    expected = TRUE.beta / (TRUE.alpha + TRUE.beta)
    assert iso.a == pytest.approx(expected, abs=0.02)
    assert iso.b == pytest.approx(1 - expected, abs=0.02)
    np.testing.assert_allclose(iso.n_opt, opt, rtol=0.25)
