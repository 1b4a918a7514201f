"""The paper's printed training facts as data, and every preset and projection measured against them.

Source: Touvron et al. 2023, Table 2 (sizes, learning rates, batch sizes, training tokens; the
shapes are `config.PRESETS`) and section 2.4 (the 65B model trained at about 380 tokens/s per GPU
on 2048 A100-80GB GPUs, about 21 days for 1.4T tokens). Table 15's energy is `carbon.TABLE15`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_core.config import PRESETS, ModelConfig
from llama_core.devices import gpu_peak
from llama_core.flops import format_count, mfu, param_count, train_flops_per_token

SECONDS_PER_DAY = 86_400
SECONDS_PER_YEAR = 365.25 * SECONDS_PER_DAY


@dataclass(frozen=True)
class Table2Row:
    """One row of Table 2 beyond the shape: size as printed, peak learning rate, batch and tokens."""

    printed_params: str
    lr: float
    batch_tokens: float
    training_tokens: float


TABLE2: dict[str, Table2Row] = {
    "llama-7b": Table2Row("6.7B", 3.0e-4, 4e6, 1.0e12),
    "llama-13b": Table2Row("13.0B", 3.0e-4, 4e6, 1.0e12),
    "llama-33b": Table2Row("32.5B", 1.5e-4, 4e6, 1.4e12),
    "llama-65b": Table2Row("65.2B", 1.5e-4, 4e6, 1.4e12),
}


@dataclass(frozen=True)
class PaperThroughput:
    """Section 2.4: the rate the paper's code reached on its largest model."""

    preset: str = "llama-65b"
    tokens_per_gpu_s: float = 380
    gpus: int = 2048
    gpu: str = "A100-SXM4-80GB"
    printed_days: float = 21

    @property
    def flops_per_token(self) -> float:
        """Training FLOPs per token of the model, at its full context."""
        cfg = PRESETS[self.preset]
        return train_flops_per_token(cfg, cfg.max_seq_len)

    @property
    def flops_per_gpu_s(self) -> float:
        """Achieved model FLOP/s per GPU."""
        return self.tokens_per_gpu_s * self.flops_per_token

    @property
    def mfu(self) -> float:
        """About 0.48: the model FLOPs utilisation that rate means on the GPU's bf16 peak."""
        return mfu(self.tokens_per_gpu_s, self.flops_per_token, gpu_peak(self.gpu).bf16_flops)


PAPER_THROUGHPUT = PaperThroughput()


def preset_rows() -> list[dict]:
    """Every preset's shape, exact parameter count and training FLOPs per token, beside Table 2's size."""
    rows = []
    for name, cfg in PRESETS.items():
        n = param_count(cfg)
        paper = TABLE2.get(name)
        rows.append({
            "preset": name, "dim": cfg.dim, "layers": cfg.n_layers, "heads": cfg.n_heads,
            "kv_heads": cfg.n_kv_heads, "ffn": cfg.hidden_dim, "vocab": cfg.vocab_size,
            "context": cfg.max_seq_len, "params": n, "params_printed": format_count(n),
            "paper": paper.printed_params if paper else "",
            "train_flops_per_token": train_flops_per_token(cfg, cfg.max_seq_len),
        })
    return rows


@dataclass(frozen=True)
class Projection:
    """How long one paper model's training takes at a given FLOP rate, and at the paper's."""

    preset: str
    training_tokens: float
    flops: float
    seconds: float
    paper_days: float

    @property
    def years(self) -> float:
        return self.seconds / SECONDS_PER_YEAR


def project_paper_runs(tokens_per_s: float, cfg: ModelConfig, seq_len: int) -> list[Projection]:
    """Each paper model's training (Table 2's tokens) at the FLOP rate of `tokens_per_s` measured on `cfg`.

    Achieved FLOP/s = tokens/s x FLOPs/token of the measured shape; each paper model needs
    6N + attention FLOPs per token at context 2048. The paper's column runs every model at the
    65B run's FLOP rate per GPU on all its GPUs, which gives back section 2.4's ~21 days for 65B.
    """
    if tokens_per_s <= 0:
        raise ValueError(f"tokens_per_s must be positive, got {tokens_per_s}")
    achieved = tokens_per_s * train_flops_per_token(cfg, seq_len)
    paper_rate = PAPER_THROUGHPUT.flops_per_gpu_s * PAPER_THROUGHPUT.gpus
    rows = []
    for name, row in TABLE2.items():
        paper_cfg = PRESETS[name]
        flops = train_flops_per_token(paper_cfg, paper_cfg.max_seq_len) * row.training_tokens
        rows.append(Projection(name, row.training_tokens, flops, flops / achieved,
                               flops / paper_rate / SECONDS_PER_DAY))
    return rows
