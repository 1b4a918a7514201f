"""Scaling-law fits as pure functions: Chinchilla approaches 2 and 3, compute-optimal allocation.

Sources: Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models" (approach 2:
IsoFLOP profiles, section 3.2; approach 3: the parametric loss, section 3.3 and appendix D.2), and
Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt" (Epoch AI), whose refit and
bootstrap we follow. N is parameters, D is training tokens, C = 6ND is training compute.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import itertools
import os
from dataclasses import dataclass, field

import numpy as np
import scipy
from scipy.optimize import minimize

COEF_NAMES = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class LawCoefficients:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = ""

    def as_array(self) -> np.ndarray:
        return np.array([self.E, self.A, self.B, self.alpha, self.beta])


HOFFMANN = LawCoefficients(1.69, 406.4, 410.7, 0.34, 0.28, "Hoffmann et al. 2022, approach 3")
EPOCH = LawCoefficients(1.8172, 482.01, 2085.43, 0.3478, 0.3658, "Besiroglu et al. 2024 (Epoch AI) refit")
COEFFICIENT_PRESETS: dict[str, LawCoefficients] = {"hoffmann": HOFFMANN, "epoch": EPOCH}


def predict_loss(coef: LawCoefficients, n_params, tokens):
    """The law's loss at N parameters trained on D tokens (Hoffmann et al. 2022, eq. 2)."""
    n, d = np.asarray(n_params, dtype=float), np.asarray(tokens, dtype=float)
    return coef.E + coef.A / n**coef.alpha + coef.B / d**coef.beta


# ---- approach 3: Huber fit of log-loss in the log-sum-exp parameterisation -------------------------

@dataclass(frozen=True)
class LawFit:
    """One approach-3 fit: the coefficients, the objective reached and the log-loss residuals."""

    coef: LawCoefficients
    objective: float
    residuals: np.ndarray = field(repr=False)  # log(observed) - log(predicted), one per run
    converged: bool
    n_starts: int


def _check_runs(n_params, tokens, losses) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, d, loss = (np.asarray(x, dtype=float).ravel() for x in (n_params, tokens, losses))
    if not (len(n) == len(d) == len(loss)):
        raise ValueError(f"n_params, tokens and losses need one value per run; got {len(n)}, {len(d)}, "
                         f"{len(loss)}")
    if len(n) < 5:
        raise ValueError(f"the law has 5 coefficients; fitting needs at least 5 runs, got {len(n)}")
    if np.any(n <= 0) or np.any(d <= 0) or np.any(loss <= 0) or not np.all(np.isfinite(loss)):
        raise ValueError("n_params, tokens and losses must be positive and finite")
    return n, d, loss


def _logsumexp0(terms: np.ndarray) -> np.ndarray:
    """log(sum(exp(terms), axis=0)), stable; scipy's array-API version costs 10x on tiny arrays."""
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).sum(axis=0))


@contextlib.contextmanager
def _single_threaded_blas():
    """Run scipy's bundled OpenBLAS on one thread: L-BFGS-B's 5-parameter linear algebra is ~10x
    slower when OpenBLAS wakes its thread pool on a busy machine (measured on 2 shared cores).
    Best effort: where scipy bundles another BLAS, nothing changes."""
    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs",
                                  "libscipy_openblas*.so*"))
    lib, before = None, 1
    with contextlib.suppress(OSError, AttributeError, IndexError):
        handle = ctypes.CDLL(libs[0])
        before = handle.scipy_openblas_get_num_threads()
        handle.scipy_openblas_set_num_threads(1)
        lib = handle
    try:
        yield
    finally:
        if lib is not None:
            lib.scipy_openblas_set_num_threads(before)


def _objective(theta, log_n, log_d, log_loss, delta):
    """Sum of Huber(LSE(a - alpha log N, b - beta log D, e) - log L), and its gradient."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    pred = _logsumexp0(terms)
    r = pred - log_loss
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum()
    dr = np.where(small, r, delta * np.sign(r))
    w = np.exp(terms - pred)  # softmax weights: d pred / d (a, b, e)
    grad = np.array([(dr * w[0]).sum(), (dr * w[1]).sum(), (dr * w[2]).sum(),
                     -(dr * w[0] * log_n).sum(), -(dr * w[1] * log_d).sum()])
    return value, grad


def _grid_values(log_n, log_d, log_loss, delta, grid) -> tuple[np.ndarray, np.ndarray]:
    """The objective at every grid point, vectorised: (starts, values)."""
    starts = np.array(list(itertools.product(*grid)), dtype=float)  # columns a, b, e, alpha, beta
    a, b, e, alpha, beta = (starts[:, i:i + 1] for i in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(starts), len(log_n)))])
    r = np.abs(_logsumexp0(terms) - log_loss)
    values = np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)).sum(axis=1)
    return starts, values


# Hoffmann et al. 2022, appendix D.2: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -.5, ..., 1},
# a, b in {0, 5, ..., 25}.
HOFFMANN_GRID = (np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
                 np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))


def fit_law(n_params, tokens, losses, delta: float = 1e-3, grid=HOFFMANN_GRID, n_starts: int | None = 20,
            extra_starts=()) -> LawFit:
    """Chinchilla approach 3 (Hoffmann et al. 2022, section 3.3 and appendix D.2).

    Minimises sum_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i) by L-BFGS
    from the points of `grid`, with E = exp(e), A = exp(a), B = exp(b). Hoffmann et al. start from
    every grid point (`n_starts=None`); by default we start from the `n_starts` grid points with the
    lowest objective, which reaches the same optimum at a fraction of the cost. `extra_starts` are
    (a, b, e, alpha, beta) vectors tried as well, e.g. a previous fit when bootstrapping.
    """
    n, d, loss = _check_runs(n_params, tokens, losses)
    log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)
    starts, values = _grid_values(log_n, log_d, log_loss, delta, grid)
    if n_starts is not None:
        starts = starts[np.argsort(values)[:n_starts]]
    if len(extra_starts):
        starts = np.vstack([np.atleast_2d(np.asarray(extra_starts, dtype=float)), starts])
    best = None
    with _single_threaded_blas():
        for x0 in starts:
            # tolerances far below delta**2: Besiroglu et al. traced Hoffmann's implausibly narrow
            # intervals partly to an optimiser that stopped early
            res = minimize(_objective, x0, args=(log_n, log_d, log_loss, delta), jac=True,
                           method="L-BFGS-B", options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-10})
            if best is None or res.fun < best.fun:
                best = res
    a, b, e, alpha, beta = best.x
    coef = LawCoefficients(float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), float(alpha), float(beta),
                           "approach-3 fit")
    residuals = log_loss - np.log(predict_loss(coef, n, d))
    return LawFit(coef, float(best.fun), residuals, bool(best.success), len(starts))


def _theta(coef: LawCoefficients) -> np.ndarray:
    return np.array([np.log(coef.A), np.log(coef.B), np.log(max(coef.E, np.finfo(float).tiny)), coef.alpha, coef.beta])


@dataclass(frozen=True)
class BootstrapFit:
    """A point fit and its bootstrap refits over resampled runs (Besiroglu et al. 2024, section 3)."""

    fit: LawFit
    samples: np.ndarray = field(repr=False)  # (n_boot, 5): E, A, B, alpha, beta per refit
    residuals: tuple[np.ndarray, ...] = field(repr=False)  # each refit's log-loss residuals
    confidence: float

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Percentile confidence interval of each coefficient."""
        lo, hi = np.quantile(self.samples, [(1 - self.confidence) / 2, (1 + self.confidence) / 2], axis=0)
        return {name: (float(lo[i]), float(hi[i])) for i, name in enumerate(COEF_NAMES)}


def bootstrap_fit(n_params, tokens, losses, n_boot: int = 200, confidence: float = 0.95, seed: int = 0,
                  delta: float = 1e-3, n_starts: int = 0) -> BootstrapFit:
    """Approach 3 with bootstrap confidence intervals: refit on runs resampled with replacement.

    Besiroglu et al. 2024 bootstrap whole runs the same way (their intervals are what Hoffmann et
    al. under-reported). Each refit starts from the point fit, near its own optimum, plus the
    `n_starts` best grid points of its resample where a rougher landscape calls for them.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, d, loss = _check_runs(n_params, tokens, losses)
    point = fit_law(n, d, loss, delta=delta)
    rng = np.random.default_rng(seed)
    samples, residuals = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, len(n), len(n))
        if len(np.unique(idx)) < 5:  # a resample with fewer distinct runs than coefficients is degenerate
            continue
        refit = fit_law(n[idx], d[idx], loss[idx], delta=delta, n_starts=n_starts,
                        extra_starts=[_theta(point.coef)])
        samples.append(refit.coef.as_array())
        residuals.append(refit.residuals)
    return BootstrapFit(point, np.array(samples), tuple(residuals), confidence)


@dataclass(frozen=True)
class Prediction:
    """A predicted final loss for one (N, D), with a bootstrap prediction interval."""

    n_params: float
    tokens: float
    loss: float
    low: float
    high: float
    confidence: float


def predict_final_loss(boot: BootstrapFit, n_params: float, tokens: float, seed: int = 0) -> Prediction:
    """A run's final loss from the fit, with an interval covering both coefficient and run noise.

    Each bootstrap refit predicts log-loss at (N, D), plus one of its own residuals drawn at random
    (a residual bootstrap prediction interval, Davison & Hinkley 1997, section 6.3.3).
    """
    if len(boot.samples) == 0:
        raise ValueError("the bootstrap has no refits; raise n_boot or add runs")
    rng = np.random.default_rng(seed)
    draws = []
    for row, res in zip(boot.samples, boot.residuals, strict=True):
        coef = LawCoefficients(*row)
        draws.append(np.log(predict_loss(coef, n_params, tokens)) + rng.choice(res))
    lo, hi = np.quantile(np.exp(draws), [(1 - boot.confidence) / 2, (1 + boot.confidence) / 2])
    loss = float(predict_loss(boot.fit.coef, n_params, tokens))
    return Prediction(float(n_params), float(tokens), loss, float(lo), float(hi), boot.confidence)


# ---- compute-optimal allocation ----------------------------------------------------------------------

@dataclass(frozen=True)
class Allocation:
    """The compute-optimal N and D for budgets C = 6ND, and the law's loss there."""

    compute: np.ndarray
    n_params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray


def compute_optimal(coef: LawCoefficients, compute) -> Allocation:
    """argmin L(N, D) subject to 6ND = C, in closed form (Hoffmann et al. 2022, eq. 4).

    N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6)^(alpha/(alpha+beta)) / G,
    G = (alpha A / (beta B))^(1/(alpha+beta)).
    """
    c = np.asarray(compute, dtype=float)
    if np.any(c <= 0):
        raise ValueError("compute budgets must be positive FLOPs")
    s = coef.alpha + coef.beta
    g = (coef.alpha * coef.A / (coef.beta * coef.B)) ** (1 / s)
    n = g * (c / 6) ** (coef.beta / s)
    d = (c / 6) ** (coef.alpha / s) / g
    return Allocation(c, n, d, predict_loss(coef, n, d))


# ---- approach 2: IsoFLOP minima ---------------------------------------------------------------------

@dataclass(frozen=True)
class IsoFlopFit:
    """Per-budget loss minima and the power laws N_opt = k_n C^a, D_opt = k_d C^b."""

    compute: np.ndarray  # one per budget
    n_opt: np.ndarray
    tokens_opt: np.ndarray
    loss_opt: np.ndarray
    a: float
    b: float
    k_n: float
    k_d: float


def _group_budgets(compute: np.ndarray, rel_tol: float) -> list[np.ndarray]:
    """Indices of runs whose compute agrees within rel_tol (a sweep's nominal budgets, rounded)."""
    order = np.argsort(compute)
    groups, current = [], [order[0]]
    for i in order[1:]:
        if compute[i] <= compute[current[0]] * (1 + rel_tol):
            current.append(i)
        else:
            groups.append(np.array(current))
            current = [i]
    groups.append(np.array(current))
    return groups


def isoflop_fit(n_params, tokens, losses, compute=None, rel_tol: float = 0.05) -> IsoFlopFit:
    """Chinchilla approach 2 (Hoffmann et al. 2022, section 3.2).

    Runs are grouped by compute (6ND unless given); for each budget a parabola of loss against
    log N is fitted and its vertex taken as N_opt; then log N_opt and log D_opt are regressed on
    log C. Budgets with fewer than 3 runs, or whose parabola opens downwards, are skipped.
    """
    n, d, loss = (np.asarray(x, dtype=float).ravel() for x in (n_params, tokens, losses))
    c = 6 * n * d if compute is None else np.asarray(compute, dtype=float).ravel()
    if not (len(n) == len(d) == len(loss) == len(c)) or len(n) == 0:
        raise ValueError("n_params, tokens, losses (and compute) need one value per run")
    budgets, n_opt, loss_opt = [], [], []
    for idx in _group_budgets(c, rel_tol):
        if len(idx) < 3:
            continue
        x = np.log(n[idx])
        curv, slope, const = np.polyfit(x, loss[idx], 2)
        if curv <= 0:
            continue
        x_min = -slope / (2 * curv)
        budgets.append(float(np.exp(np.log(c[idx]).mean())))  # geometric mean of the group
        n_opt.append(float(np.exp(x_min)))
        loss_opt.append(float(const - slope**2 / (4 * curv)))
    if len(budgets) < 2:
        raise ValueError(f"approach 2 needs at least 2 budgets with 3+ runs and a minimum inside; "
                         f"got {len(budgets)}")
    budgets, n_opt = np.array(budgets), np.array(n_opt)
    tokens_opt = budgets / (6 * n_opt)
    a, log_kn = np.polyfit(np.log(budgets), np.log(n_opt), 1)
    b, log_kd = np.polyfit(np.log(budgets), np.log(tokens_opt), 1)
    return IsoFlopFit(budgets, n_opt, tokens_opt, np.array(loss_opt), float(a), float(b),
                      float(np.exp(log_kn)), float(np.exp(log_kd)))
