"""`lab bench decode`: MBU against a bandwidth measured the way a GEMV reads (llama_core.bandwidth),
and `--profile`'s table of where one decode step's time goes (lab.benchmarks.profile_step)."""

from __future__ import annotations

import json

import pytest
import torch

from lab.__main__ import main
from lab.benchmarks.profile_step import GROUPS, format_profile, part_of, profile_decode
from llama_core.bandwidth import (
    CACHE_MULTIPLE,
    MAX_BYTES,
    MIN_BYTES,
    gemv_bandwidth,
    last_level_cache_bytes,
    working_set_bytes,
)
from llama_core.model import Transformer
from llama_core.quantize import for_decoding
from tests.conftest import TINY


def test_the_gemv_bandwidth_is_a_positive_figure_named_by_what_it_read():
    bandwidth, source = gemv_bandwidth("cpu", 1, total_bytes=24 * 2**20, rounds=2)
    assert bandwidth > 0
    assert source.startswith("measured GEMV") and "4 distinct 768x2048 matrices" in source and "1 thread" in source
    with pytest.raises(ValueError, match="rounds"):
        gemv_bandwidth("cpu", 1, total_bytes=24 * 2**20, rounds=0)


def test_the_working_set_spans_several_caches_within_bounds():
    assert working_set_bytes(100 * 2**20) == CACHE_MULTIPLE * 100 * 2**20
    assert working_set_bytes(2**20) == MIN_BYTES and working_set_bytes(2**34) == MAX_BYTES
    assert MIN_BYTES <= working_set_bytes(None) <= MAX_BYTES  # the cache size could not be read
    cache = last_level_cache_bytes()
    assert cache is None or cache > 0


def test_the_decode_record_names_its_bandwidth_and_profiles_a_step(tmp_path, capsys):
    out = tmp_path / "decode.jsonl"
    assert main(["bench", "decode", "--preset", "lab-1m", "--new", "2", "--rounds", "1", "--quant", "all",
                 "--bf16", "--threads", "1", "--profile", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.strip().splitlines()[-4:]]
    assert [(r["quant"], r["dtype"]) for r in records] == [("none", "float32"), ("int8", "float32"),
                                                           ("int4", "float32"), ("none", "bfloat16")]
    # bfloat16 weights are half float32's bytes
    assert records[3]["weight_bytes_per_token"] * 2 == records[0]["weight_bytes_per_token"]
    for record in records:
        assert record["bandwidth_source"].startswith("measured GEMV") and record["bandwidth_bytes_per_s"] > 0
        assert record["mbu"] > 0
        profile = record["profile"]
        assert [g["name"] for g in profile["groups"]] == list(GROUPS) and profile["steps"] == 2
        assert sum(g["share"] for g in profile["groups"]) == pytest.approx(100, abs=0.1)
        assert all(g["ms_per_token"] >= 0 for g in profile["groups"]) and profile["step_ms"] > 0
        assert profile["groups"][0]["ms_per_token"] > 0 and profile["top_ops"]
    assert "matmul / quantized linear" in captured.err  # the table is printed beside the JSON lines
    assert [json.loads(line) for line in out.read_text().splitlines()] == records


def test_each_op_is_counted_once_in_the_part_it_ran_in():
    torch.manual_seed(0)
    model = for_decoding(Transformer(TINY).eval(), "int8")
    profile = profile_decode(model, [1, 2, 3], 2, torch.device("cpu"), top=50)
    assert sum(g["share"] for g in profile["groups"]) == pytest.approx(100, abs=0.1)
    parts = {op["name"]: op["group"] for op in profile["top_ops"]}
    assert parts.get("quantized::linear_dynamic") == GROUPS[0]  # int8's one-token kernel is a linear's
    ops_ms = sum(op["ms_per_token"] for op in profile["top_ops"])
    # self times: nothing counted twice (each figure is rounded to 1e-4 ms)
    assert ops_ms <= profile["profiled_step_ms"] + 1e-4 * (len(profile["top_ops"]) + 1)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # the marks are gone
    assert part_of(model.output) == GROUPS[0] and part_of(model.norm) == GROUPS[2]
    assert "one decode step" in format_profile(profile, "tiny int8")


def test_a_profile_longer_than_the_context_is_refused():
    model = for_decoding(Transformer(TINY).eval())
    with pytest.raises(ValueError, match="profile fewer steps"):
        profile_decode(model, [1] * TINY.max_seq_len, 1, torch.device("cpu"))
