"""Recipe sweeps: each finished run becomes one point that names every setting it was trained with,
and the shipped sweeps back the recipe that the demo's law was fitted with."""

import json

import pytest
from test_sweep import TINY_TRAIN

from lab.__main__ import main as lab_main
from lab.laws import METRIC, load_law
from lab.recipes import FACTORS, collect, compare, load_recipe
from lab.recipes import main as recipes_main
from llama_core.data import shakespeare_files


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """Two one-factor sweeps on Hamlet: learning rate (two values), and a smaller batch."""
    root = tmp_path_factory.mktemp("recipe")
    hamlet = str(next(f for f in shakespeare_files() if "hamlet" in f.name))
    common = ["sweep", "--runs-dir", str(root), "--presets", "sweep-d64", "--tokens", "2560", "--data", hamlet,
              "--vocab", "512", "--threads", "1", "--quiet", *TINY_TRAIN]
    assert lab_main([*common, "--name", "lr", "--lrs", "1e-3,3e-3"]) == 0
    assert lab_main([*common, "--name", "batch", "--train.batch_size=2"]) == 0
    return root


def test_each_finished_run_is_a_point_with_its_settings(two_sweeps, tmp_path):
    out = tmp_path / "recipe.json"
    assert recipes_main([str(two_sweeps / "lr"), str(two_sweeps / "batch"), "--out", str(out),
                         "--command", "python -m lab sweep ..."]) == 0
    recipe = json.loads(out.read_text())
    points = {p["run"]: p for p in recipe["points"]}
    assert set(points) == {"sweep-d64-2560-lr0.001", "sweep-d64-2560-lr0.003", "sweep-d64-2560"}
    assert points["sweep-d64-2560-lr0.001"]["lr"] == 1e-3 and points["sweep-d64-2560-lr0.003"]["lr"] == 3e-3
    assert points["sweep-d64-2560"]["batch_size"] == 2 and points["sweep-d64-2560-lr0.001"]["batch_size"] == 4
    # a smaller batch is more steps over the same tokens; warm-up is resolved (5% of the steps)
    assert points["sweep-d64-2560"]["steps"] == 2 * points["sweep-d64-2560-lr0.001"]["steps"]
    for p in points.values():
        assert p["shape"] == "d64xL2" and p["vocab_size"] == 512 and p["warmup_steps"] == max(1, p["steps"] // 20)
        assert p["warmup_share"] == round(p["warmup_steps"] / p["steps"], 2)
        assert 0 < p[METRIC] < 8  # bits per byte of real text, from the run's whole-held-out-text record
    ranked = compare(recipe["points"], "lr", batch_size=4)
    assert [p["lr"] for p in ranked] in ([1e-3, 3e-3], [3e-3, 1e-3])
    assert ranked[0][METRIC] <= ranked[1][METRIC]


def test_an_empty_or_unknown_request_is_a_clear_error(tmp_path, two_sweeps):
    with pytest.raises(ValueError, match="unknown factor"):
        compare([], "momentum")
    with pytest.raises(FileNotFoundError, match="run `python -m lab sweep"):
        collect([tmp_path / "nothing"], [])


def test_the_shipped_sweeps_back_the_laws_recipe():
    recipe, law = load_recipe("shakespeare"), load_law("shakespeare")
    assert recipe["commands"] and all(set(FACTORS) <= set(p) for p in recipe["points"])
    # the demo trains with the law's recipe: it is the best the sweeps found at the base shape and
    # vocabulary, up to a point within noise (0.01 bits/byte) that a faster setting was chosen over
    most = max(q["tokens"] for q in recipe["points"])
    base = [p for p in recipe["points"] if p["shape"] == "d128xL3" and p["vocab_size"] == law.vocab_size
            and p["tokens"] >= 0.99 * most]  # the largest budget (whole steps of it: batch sizes round it)
    best = min(p[METRIC] for p in base)
    chosen = [p for p in base if p["lr"] == law.train["lr"] and p["batch_size"] == law.train["batch_size"]
              and p["seq_len"] == law.train["seq_len"]
              and p["warmup_fraction"] == law.train.get("warmup_fraction", 0.05) and p["warmup_steps"] > 1]
    assert chosen and min(p[METRIC] for p in chosen) <= best + 0.01
