"""Model configuration and presets: the paper's Table 2 and a ladder of CPU-sized models."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"ModelConfig.{field_name}: {message}")


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a LLaMA model; validated at construction.

    `hidden_dim` is derived with Meta's rule (2/3 * 4d, times `ffn_dim_multiplier`, rounded up to
    `multiple_of`) unless a checkpoint gives it explicitly (`ffn_hidden_dim`).
    """

    dim: int = 288
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int | None = None  # grouped-query attention; None means n_heads (plain multi-head)
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    ffn_hidden_dim: int | None = None  # explicit override, for checkpoints that do not follow the rule
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    # derived in __post_init__
    head_dim: int = field(init=False)
    hidden_dim: int = field(init=False)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool), name,
                     f"must be an integer, got {value!r}")
            _require(value > 0, name, f"must be positive, got {value}")
        _require(self.dim % self.n_heads == 0, "n_heads",
                 f"dim={self.dim} must be divisible by n_heads={self.n_heads}; pick a head count that divides dim")
        _require(self.n_heads % self.n_kv_heads == 0, "n_kv_heads",
                 f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} "
                 "(each key/value head serves a whole group of query heads)")
        head_dim = self.dim // self.n_heads
        _require(head_dim % 2 == 0, "n_heads",
                 f"head_dim = dim/n_heads = {head_dim} must be even for rotary embeddings")
        _require(self.norm_eps > 0, "norm_eps", f"must be positive, got {self.norm_eps}")
        _require(self.rope_theta > 0, "rope_theta", f"must be positive, got {self.rope_theta}")
        if self.ffn_dim_multiplier is not None:
            _require(self.ffn_dim_multiplier > 0, "ffn_dim_multiplier",
                     f"must be positive or None, got {self.ffn_dim_multiplier}")
        if self.ffn_hidden_dim is not None:
            _require(isinstance(self.ffn_hidden_dim, int) and self.ffn_hidden_dim > 0, "ffn_hidden_dim",
                     f"must be a positive integer or None, got {self.ffn_hidden_dim!r}")
        object.__setattr__(self, "head_dim", head_dim)
        object.__setattr__(self, "hidden_dim", self.ffn_hidden_dim or swiglu_hidden_dim(
            self.dim, self.multiple_of, self.ffn_dim_multiplier))

    def to_dict(self) -> dict:
        """The constructor arguments (derived fields left out), JSON-serialisable."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def swiglu_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    """Meta's hidden-size rule: 2/3 of 4*dim, optionally scaled, rounded up to `multiple_of`."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


# The paper's Table 2 (vocabulary 32,000, context 2048), and CPU-sized presets for the lab.
# lab-15m, lab-40m and lab-110m are llama2.c's stories15M/42M/110M shapes (tied 32k vocabulary);
# lab-1m and lab-4m are sized for the lab's own small tokenizers (4,096 pieces).
PRESETS: dict[str, ModelConfig] = {
    "llama-7b": ModelConfig(dim=4096, n_layers=32, n_heads=32, vocab_size=32000, max_seq_len=2048),
    "llama-13b": ModelConfig(dim=5120, n_layers=40, n_heads=40, vocab_size=32000, max_seq_len=2048),
    "llama-33b": ModelConfig(dim=6656, n_layers=60, n_heads=52, vocab_size=32000, max_seq_len=2048),
    "llama-65b": ModelConfig(dim=8192, n_layers=80, n_heads=64, vocab_size=32000, max_seq_len=2048),
    "lab-1m": ModelConfig(dim=128, n_layers=4, n_heads=4, vocab_size=4096, multiple_of=32,
                          max_seq_len=256, tie_embeddings=True),
    "lab-4m": ModelConfig(dim=256, n_layers=4, n_heads=8, vocab_size=4096, multiple_of=32,
                          max_seq_len=256, tie_embeddings=True),
    "lab-15m": ModelConfig(dim=288, n_layers=6, n_heads=6, vocab_size=32000, multiple_of=32,
                           max_seq_len=256, tie_embeddings=True),
    "lab-40m": ModelConfig(dim=512, n_layers=8, n_heads=8, vocab_size=32000, multiple_of=32,
                           max_seq_len=1024, tie_embeddings=True),
    "lab-110m": ModelConfig(dim=768, n_layers=12, n_heads=12, vocab_size=32000, multiple_of=32,
                            max_seq_len=1024, tie_embeddings=True),
}

PAPER_PRESETS = ("llama-7b", "llama-13b", "llama-33b", "llama-65b")


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
