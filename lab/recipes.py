"""Recipe sweeps: the demo's training settings, each chosen by a recorded sweep on held-out works.

A recipe sweep varies one setting at a time (learning rate, batch, warm-up, vocabulary, width and
depth) around a base recipe, with `python -m lab sweep` (one sweep per setting, `--train.FIELD=...`,
`--lrs`, `--vocab`, `--presets`). `collect` reads the finished runs of those sweeps into one JSON
that ships in the package (`lab/laws/CORPUS_recipe.json`), so notebook 07 and the README show the
evidence on a fresh machine without training anything; `python -m lab.recipes` writes it:

    python -m lab.recipes runs/recipe/lr-a runs/recipe/b8 ... --out lab/laws/shakespeare_recipe.json \
        --command "python -m lab sweep --name lr-a ..." --note "where and how they ran"

Every point is scored the same way: bits per byte over all the text of the held-out works (loss per
token would not compare across vocabularies).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab.laws import LAWS_DIR, METRIC
from lab.records import read_config
from lab.sweep import load_sweep
from llama_core.atomic import atomic_write_json

# the settings a recipe sweep varies, as each point records them
FACTORS = ("lr", "batch_size", "warmup_share", "vocab_size", "shape")


def recipe_points(root: Path) -> list[dict]:
    """One point per finished run of the sweep at `root` that has a whole-held-out-text result."""
    root = Path(root)
    sweep, rows = load_sweep(root)
    points = []
    for row in rows:
        if row["status"] != "finished":
            continue
        config = read_config(root / row["run"])
        heldout = config.get("heldout") or {}
        if heldout.get(METRIC) is None:
            continue
        train = sweep.train_config(row["budget"], row["lr"])
        points.append({
            "sweep": sweep.name, "run": row["run"], "preset": row["preset"],
            "shape": f"d{row['dim']}xL{row['n_layers']}", "dim": row["dim"], "n_layers": row["n_layers"],
            "n_params": row["n_params"], "params": row["params"], "tokens": row["tokens"],
            "vocab_size": sweep.vocab_size, "lr": train.lr, "batch_size": train.batch_size,
            "seq_len": train.seq_len, "warmup_steps": train.warmup, "warmup_fraction": train.warmup_fraction,
            "warmup_share": round(train.warmup / train.steps, 2), "steps": train.steps,
            METRIC: heldout[METRIC], "elapsed_s": row["elapsed_s"],
        })
    return points


def collect(roots: list[Path], commands: list[str], note: str = "", corpus: str = "shakespeare") -> dict:
    """The JSON a recipe file holds: every finished point of the sweeps, and how they were run."""
    points = [p for root in roots for p in recipe_points(root)]
    if not points:
        raise ValueError(f"no finished run with a held-out result in {', '.join(map(str, roots))}")
    return {"corpus": corpus, "metric": METRIC, "points": points, "commands": list(commands), "note": note}


def recipe_path(corpus: str) -> Path:
    return LAWS_DIR / f"{corpus}_recipe.json"


def load_recipe(corpus: str = "shakespeare") -> dict:
    """The shipped recipe sweeps of `corpus`."""
    path = recipe_path(corpus)
    if not path.is_file():
        raise FileNotFoundError(f"no recipe sweeps are shipped for {corpus!r}: run the sweeps and "
                                "`python -m lab.recipes` (see lab/recipes.py)")
    return json.loads(path.read_text())


def compare(points: list[dict], factor: str, **fixed) -> list[dict]:
    """The points that differ in `factor` only, among those matching `fixed` (e.g. tokens=1_000_000),
    best first: what one row of the recipe table compares."""
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; choose one of {FACTORS}")
    chosen = [p for p in points if all(p.get(k) == v for k, v in fixed.items())]
    return sorted(chosen, key=lambda p: p[METRIC])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.recipes",
                                     description="collect recipe sweeps into a shipped JSON file")
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (runs/.../NAME)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", action="append", default=[], help="the command that ran a sweep (repeat)")
    parser.add_argument("--note", default="", help="how and where the sweeps ran")
    parser.add_argument("--corpus", default="shakespeare")
    args = parser.parse_args(argv)
    recipe = collect(args.sweeps, args.command, args.note, args.corpus)
    atomic_write_json(args.out, recipe)
    best = min(recipe["points"], key=lambda p: p[METRIC])
    print(f"{len(recipe['points'])} points; best {best['run']} ({best['sweep']}): {best[METRIC]:.3f} bits/byte; "
          f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
