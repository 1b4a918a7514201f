"""The memory budget per GPU under each layout (llama_core.flops): pure arithmetic, checked by hand."""

import json
import subprocess
import sys

import pytest

from llama_core.config import PRESETS, ModelConfig
from llama_core.flops import activation_elements_per_layer, param_count, training_memory_per_gpu

TINY = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32, max_seq_len=64)


def test_activations_of_one_block_counted_by_hand():
    h, f, sb = 64, TINY.hidden_dim, 32 * 2
    qkv = h + 2 * h // 2  # grouped: keys and values are half as wide as the queries
    assert activation_elements_per_layer(TINY, 32, 2) == sb * (4 * h + qkv + h + 4 * f)
    assert activation_elements_per_layer(TINY, 32, 2, policy="selective") == sb * (3 * h + qkv + h + 2 * f)
    assert activation_elements_per_layer(TINY, 32, 2, policy="full") == sb * h
    # tensor parallelism splits what lies between the column- and row-wise products; sequence
    # parallelism also the residual stream, but not the gathered inputs of wq/wk/wv and w1/w3
    assert activation_elements_per_layer(TINY, 32, 2, tp=2) == sb * (4 * h + (qkv + h + 4 * f) / 2)
    assert activation_elements_per_layer(TINY, 32, 2, tp=2, sequence_parallel=True) == \
        sb * (2 * h / 2 + 2 * h + (qkv + h + 4 * f) / 2)
    assert activation_elements_per_layer(TINY, 32, 2, tp=4, sequence_parallel=True, policy="full") == sb * h / 4
    with pytest.raises(ValueError, match="unknown policy"):
        activation_elements_per_layer(TINY, 32, 2, policy="fused")


def test_the_paper_65b_budget_per_gpu_under_each_layout():
    cfg = PRESETS["llama-65b"]
    # the paper's run: 2,048 A100s, 4M tokens a step = one sequence of 2,048 per GPU
    fsdp = training_memory_per_gpu(cfg, 2048, 1, dp=2048)
    assert fsdp["weights"] + fsdp["gradients"] + fsdp["adam"] == pytest.approx(16 * param_count(cfg) / 2048)
    assert fsdp["total"] == pytest.approx(sum(v for k, v in fsdp.items() if k != "total"))
    two_d = training_memory_per_gpu(cfg, 2048, 1, dp=256, tp=8)
    sp = training_memory_per_gpu(cfg, 2048, 1, dp=256, tp=8, sequence_parallel=True)
    selective = training_memory_per_gpu(cfg, 2048, 1, dp=256, tp=8, sequence_parallel=True, policy="selective")
    assert two_d["adam"] == fsdp["adam"]  # the same 2,048 shards of the optimizer state
    assert fsdp["activations"] > two_d["activations"] > sp["activations"] > selective["activations"]
    assert selective["total"] < 80 * 2**30 < training_memory_per_gpu(cfg, 2048, 2, dp=2048)["total"]


def test_bytes_each_rank_sends_are_the_formula(tmp_path):
    """`lab bench parallel` at 2 ranks (gloo): the collectives counted in a step add up to the formula
    of each layout, plus the few scalars of the gradient-norm reductions."""
    out = tmp_path / "parallel.jsonl"
    subprocess.run([sys.executable, "-m", "lab", "bench", "parallel", "--procs", "2", "--preset", "lab-1m",
                    "--set", "dim=64", "n_layers=2", "n_heads=4", "--batch", "4", "--seq", "32", "--steps", "1",
                    "--layouts", "dp,tp", "--out", str(out)], check=True, timeout=240, capture_output=True)
    rows = {r["layout"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert (rows["dp"]["dp"], rows["dp"]["tp"], rows["tp"]["dp"], rows["tp"]["tp"]) == (2, 1, 1, 2)
    for row in rows.values():
        assert 0 <= row["sent_bytes_per_rank_step"] - row["formula_bytes_per_rank_step"] <= 256
        assert row["tokens_per_s"] > 0 and row["peak_memory_bytes_rank0"] > 0


def test_the_budget_table_prints_each_layout_from_the_pure_functions(capsys):
    from lab.__main__ import main

    assert main(["bench", "parallel", "--budget", "llama-65b"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("dp=")]
    assert len(rows) == 9
    expected = training_memory_per_gpu(PRESETS["llama-65b"], 2048, 1, dp=256, tp=8, sequence_parallel=True,
                                       policy="selective")["total"] / 2**30
    assert float(next(r for r in rows if "+SP" in r and "selective" in r)[-1]) == pytest.approx(expected, abs=0.01)
