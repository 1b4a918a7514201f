import pytest

from llama_core.config import PRESETS, ModelConfig, TrainConfig, get_preset, swiglu_hidden_dim


def test_paper_hidden_sizes_follow_meta_rule():
    assert PRESETS["llama-7b"].hidden_dim == 11008
    assert PRESETS["llama-13b"].hidden_dim == 13824
    assert PRESETS["llama-65b"].hidden_dim == 22016
    assert swiglu_hidden_dim(4096, 256, 1.3) == 14336  # Llama-2-70B/Llama-3's multiplier rule


def test_kv_heads_default_to_heads_and_roundtrip_dict():
    cfg = ModelConfig(dim=64, n_layers=1, n_heads=4)
    assert cfg.n_kv_heads == 4 and cfg.head_dim == 16
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs, field", [
    (dict(dim=65, n_heads=4), "n_heads"),
    (dict(dim=64, n_heads=4, n_kv_heads=3), "n_kv_heads"),
    (dict(dim=0), "dim"),
    (dict(n_layers=-1), "n_layers"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(dim=36, n_heads=4), "n_heads"),  # odd head_dim cannot be rotated in pairs
    (dict(norm_eps=0.0), "norm_eps"),
    (dict(rope_theta=-1.0), "rope_theta"),
    (dict(max_seq_len=0), "max_seq_len"),
    (dict(ffn_dim_multiplier=0.0), "ffn_dim_multiplier"),
    (dict(dim=64.0), "dim"),
])
def test_invalid_configs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}"):
        ModelConfig(**kwargs)


def test_unknown_fields_and_presets_are_refused():
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({"dim": 64, "nlayers": 2})
    with pytest.raises(ValueError, match="llama-7b"):
        get_preset("llama-8b")


def test_warm_up_is_a_fraction_of_the_steps_unless_given_in_steps():
    assert TrainConfig(tokens=1_000_000, batch_size=8, seq_len=128).warmup == 976 // 20  # the default 5%
    assert TrainConfig(tokens=1_000_000, batch_size=8, seq_len=128, warmup_fraction=0.2).warmup == 195
    assert TrainConfig(tokens=1_000_000, batch_size=8, seq_len=128, warmup_steps=10, warmup_fraction=0.2).warmup == 10
    with pytest.raises(ValueError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=1.5)
