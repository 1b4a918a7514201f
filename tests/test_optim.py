import math

import pytest

from conftest import TINY
from llama_core.config import TrainConfig
from llama_core.model import Transformer
from llama_core.optim import build_optimizer, lr_at, param_groups


def test_lr_schedule_matches_the_paper():
    peak, warmup, total = 3e-4, 2000, 100_000
    assert lr_at(0, peak, warmup, total) == pytest.approx(peak / warmup)
    assert lr_at(999, peak, warmup, total) == pytest.approx(peak / 2)  # linear warm-up
    assert lr_at(warmup, peak, warmup, total) == pytest.approx(peak)  # the peak
    mid = warmup + (total - warmup) // 2
    assert lr_at(mid, peak, warmup, total) == pytest.approx(peak * 0.55, rel=1e-4)  # half-way down
    assert lr_at(total, peak, warmup, total) == pytest.approx(peak * 0.1)  # 10% of the peak at the end
    steps = [lr_at(s, peak, warmup, total) for s in range(warmup, total, 997)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))  # monotone decay after warm-up
    assert not math.isnan(lr_at(total + 5, peak, warmup, total))


def test_weight_decay_only_on_matrices():
    model = Transformer(TINY)
    decay, no_decay = param_groups(model, 0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    n_norms = 2 * TINY.n_layers + 1
    assert len(no_decay["params"]) == n_norms
    opt = build_optimizer(model, TrainConfig(tokens=4096, batch_size=2, seq_len=32))
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_train_config_validates_and_derives():
    cfg = TrainConfig(tokens=1_000_000, batch_size=4, seq_len=128, tokens_per_step=2048)
    assert cfg.grad_accum == 4 and cfg.steps == 488
    with pytest.raises(ValueError, match="TrainConfig.tokens_per_step"):
        TrainConfig(batch_size=4, seq_len=128, tokens_per_step=1000)
    with pytest.raises(ValueError, match="TrainConfig.lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="TrainConfig.warmup_steps"):
        TrainConfig(tokens=8192, batch_size=1, seq_len=1024, warmup_steps=8)
