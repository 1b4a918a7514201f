import pytest
import torch

from llama_core.config import PAPER_PRESETS, PRESETS
from llama_core.flops import (
    format_count,
    inference_flops_per_token,
    kv_cache_bytes,
    matmul_params,
    mfu,
    param_count,
    train_flops_per_token,
)
from llama_core.model import Transformer

EXACT = {"llama-7b": 6_738_415_616, "llama-13b": 13_015_864_320,
         "llama-33b": 32_528_943_616, "llama-65b": 65_285_660_672}
PRINTED = {"llama-7b": "6.7B", "llama-13b": "13.0B", "llama-33b": "32.5B", "llama-65b": "65.2B"}


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_match_table2(name):
    cfg = PRESETS[name]
    with torch.device("meta"):  # count a real module without allocating 65B parameters
        model = Transformer(cfg)
    assert model.num_params == param_count(cfg) == EXACT[name]
    assert format_count(param_count(cfg)) == PRINTED[name]


@pytest.mark.parametrize("name", [n for n in PRESETS if n.startswith("lab-")])
def test_cpu_presets_count_equals_formula(name):
    model = Transformer(PRESETS[name])
    assert model.num_params == param_count(PRESETS[name])


def test_flops_formulas():
    cfg = PRESETS["llama-7b"]
    n = matmul_params(cfg)
    # 6N plus PaLM's attention term 12 * L * H * D * T
    assert train_flops_per_token(cfg, 2048) == 6 * n + 12 * 32 * 32 * 128 * 2048
    assert inference_flops_per_token(cfg, 0) == 2 * n
    # the paper's 65B figure: 380 tokens/s/GPU is about 48% of an A100's 312 TFLOP/s
    assert mfu(380, 6 * 65.2e9, 312e12) == pytest.approx(0.476, abs=0.002)
    assert kv_cache_bytes(cfg, seq_len=2048) == 2 * 32 * 32 * 128 * 2048 * 2  # 1 GiB in fp16
