"""The lab's own scaling laws: fitted to its sweep records, shipped as JSON so a fresh machine needs no sweep.

`shakespeare.json` holds the runs of the sweeps that produced it (size, tokens, held-out bits per
byte over all the held-out works), their shared training settings, the fitted coefficients of
L(N, D) = E + A/N^alpha + B/D^beta in bits per byte (comparable across vocabularies, unlike loss
per token), and the commands that produced it. Refit after new sweeps with
`python -m lab.laws RUNS/SWEEP [RUNS/SWEEP ...] --out lab/laws/CORPUS.json --command "..."`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.scaling import (
    COEF_NAMES,
    BootstrapFit,
    LawCoefficients,
    Prediction,
    bootstrap_fit,
    fit_law,
    predict_final_loss,
)
from llama_core.atomic import atomic_write_json

LAWS_DIR = Path(__file__).parent
METRIC = "heldout_bpb"


@dataclass(frozen=True)
class ShippedLaw:
    """A fitted law with the runs behind it and the training settings it holds for."""

    corpus: str
    coef: LawCoefficients
    runs: tuple[dict, ...]  # {"run", "preset", "n_params", "tokens", "heldout_bpb", ...}
    data: str
    vocab_size: int
    train: dict  # the sweeps' TrainConfig fields apart from tokens
    commands: tuple[str, ...]
    note: str

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, D, bits per byte), one value per run."""
        return (np.array([r["n_params"] for r in self.runs], dtype=float),
                np.array([r["tokens"] for r in self.runs], dtype=float),
                np.array([r[METRIC] for r in self.runs], dtype=float))

    def bootstrap(self, n_boot: int = 100, seed: int = 0) -> BootstrapFit:
        """Refits on resampled runs, for prediction intervals (Besiroglu et al. 2024)."""
        return bootstrap_fit(*self.arrays(), n_boot=n_boot, seed=seed)

    def predict(self, n_params: float, tokens: float, boot: BootstrapFit | None = None) -> Prediction:
        """The shipped coefficients' bits per byte at (N, D), with a 95% bootstrap interval."""
        boot = boot or self.bootstrap()
        pred = predict_final_loss(boot, n_params, tokens)
        point = float(self.coef.E + self.coef.A / n_params**self.coef.alpha + self.coef.B / tokens**self.coef.beta)
        return Prediction(pred.n_params, pred.tokens, point, min(pred.low, point), max(pred.high, point),
                          pred.confidence)

    def fitted_range(self) -> dict:
        n, d, _ = self.arrays()
        return {"n_params": (int(n.min()), int(n.max())), "tokens": (int(d.min()), int(d.max()))}


def law_path(corpus: str) -> Path:
    return LAWS_DIR / f"{corpus}.json"


def load_law(corpus: str = "shakespeare") -> ShippedLaw:
    """The law shipped for `corpus` (a built-in source name)."""
    import json

    path = law_path(corpus)
    if not path.is_file():
        shipped = sorted(p.stem for p in LAWS_DIR.glob("*.json"))
        raise FileNotFoundError(f"no scaling law is shipped for {corpus!r} (shipped: {', '.join(shipped)}); "
                                "fit one from a sweep with `python -m lab.laws`")
    raw = json.loads(path.read_text())
    coef = LawCoefficients(*(raw["coefficients"][k] for k in COEF_NAMES), source=f"{path.name} fit")
    return ShippedLaw(raw["corpus"], coef, tuple(raw["runs"]), raw["data"], raw["vocab_size"], raw["train"],
                      tuple(raw["commands"]), raw.get("note", ""))


def sweep_points(root: Path) -> tuple[dict, list[dict]]:
    """(the sweep's grid, one point per finished run with a whole-text held-out result)."""
    from lab.records import read_config
    from lab.sweep import load_sweep

    sweep, rows = load_sweep(Path(root))
    points = []
    for row in rows:
        if row["status"] != "finished":
            continue
        heldout = read_config(Path(root) / row["run"]).get("heldout") or {}
        if heldout.get(METRIC) is None:
            continue  # a run from before whole-text evaluation: its sampled figure is not comparable
        points.append({"sweep": sweep.name, "run": row["run"], "preset": row["preset"], "n_params": row["n_params"],
                       "params": row["params"], "tokens": row["tokens"], METRIC: heldout[METRIC],
                       "heldout_loss": heldout["heldout_loss"], "elapsed_s": row["elapsed_s"]})
    return sweep.grid(), points


def fit_sweeps(roots: list[Path], commands: list[str], note: str = "") -> dict:
    """The JSON a law file holds: every finished run of the sweeps, their settings, the fit."""
    grids, points = [], []
    for root in roots:
        grid, pts = sweep_points(root)
        grids.append(grid)
        points.extend(pts)
    first = grids[0]
    for grid in grids[1:]:
        for key in ("data", "vocab_size", "train"):
            if grid[key] != first[key]:
                raise ValueError(f"the sweeps differ in {key} ({first[key]} vs {grid[key]}): a law holds for "
                                 "one corpus, vocabulary and recipe")
    fit = fit_law([p["n_params"] for p in points], [p["tokens"] for p in points], [p[METRIC] for p in points])
    return {"corpus": first["data"], "data": first["data"], "metric": METRIC, "vocab_size": first["vocab_size"],
            "train": first["train"], "n_params": "matmul parameters (the N of C = 6ND)",
            "coefficients": {k: float(v) for k, v in zip(COEF_NAMES, fit.coef.as_array())},
            "max_abs_log_residual": float(np.abs(fit.residuals).max()),
            "runs": points, "commands": list(commands), "note": note}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab.laws", description="fit a law file from sweep records")
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (runs/NAME)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", action="append", default=[], help="the command that ran a sweep (repeat)")
    parser.add_argument("--note", default="", help="how and where the sweeps ran")
    args = parser.parse_args(argv)
    law = fit_sweeps(args.sweeps, args.command, args.note)
    atomic_write_json(args.out, law)
    coef = law["coefficients"]
    print(f"{len(law['runs'])} runs -> E={coef['E']:.3f} A={coef['A']:.4g} B={coef['B']:.4g} "
          f"alpha={coef['alpha']:.3f} beta={coef['beta']:.3f}; written to {args.out}")
    return 0
