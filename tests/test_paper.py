"""The paper's Table 2 and section 2.4 as data: sizes, throughput and projections agree with the paper."""

import pytest

from llama_core.carbon import TABLE15
from llama_core.config import PAPER_PRESETS, PRESETS
from llama_core.flops import format_count, param_count
from llama_core.paper import PAPER_THROUGHPUT, SECONDS_PER_DAY, TABLE2, preset_rows, project_paper_runs


def test_table2_covers_the_paper_presets_and_its_sizes_are_ours():
    assert tuple(TABLE2) == PAPER_PRESETS
    for name, row in TABLE2.items():
        assert format_count(param_count(PRESETS[name])) == row.printed_params
    rows = {r["preset"]: r for r in preset_rows()}
    assert set(rows) == set(PRESETS)
    assert all(rows[name]["paper"] == rows[name]["params_printed"] for name in PAPER_PRESETS)


def test_section_2_4_rate_means_about_half_an_a100():
    assert PAPER_THROUGHPUT.mfu == pytest.approx(0.49, abs=0.02)


def test_projection_at_the_papers_own_rate_gives_back_its_21_days():
    rate = PAPER_THROUGHPUT
    rows = project_paper_runs(rate.tokens_per_gpu_s * rate.gpus, PRESETS[rate.preset], 2048)
    for row in rows:
        assert row.seconds == pytest.approx(row.paper_days * SECONDS_PER_DAY)
    assert rows[-1].paper_days == pytest.approx(rate.printed_days, abs=0.5)


def test_projected_gpu_hours_agree_with_table15():
    """Table 15 prints each model's GPU-hours; one FLOP rate for all models lands within 10% of each."""
    printed = {row.model.lower(): row.gpu_hours for row in TABLE15}
    for row in project_paper_runs(1000.0, PRESETS["lab-1m"], 128):
        gpu_hours = row.paper_days * 24 * PAPER_THROUGHPUT.gpus
        assert gpu_hours == pytest.approx(printed[row.preset], rel=0.1), row.preset


def test_projection_refuses_a_rate_of_zero():
    with pytest.raises(ValueError, match="tokens_per_s"):
        project_paper_runs(0.0, PRESETS["lab-1m"], 128)
