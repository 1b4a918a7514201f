"""Model configuration and presets: the paper's Table 2 and a ladder of CPU-sized models."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


class _Serialisable:
    """to_dict/from_dict/replace for the frozen config dataclasses (derived fields left out)."""

    def to_dict(self) -> dict:
        """The constructor arguments, JSON-serialisable."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"ModelConfig.{field_name}: {message}")


@dataclass(frozen=True)
class ModelConfig(_Serialisable):
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


def _require_train(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"TrainConfig.{field_name}: {message}")


@dataclass(frozen=True)
class TrainConfig(_Serialisable):
    """How to train: the paper's optimiser and schedule (section 2.3), scaled to the lab.

    AdamW (beta1 0.9, beta2 0.95, weight decay 0.1), gradient clipping 1.0, linear warm-up then
    cosine decay to 10% of the peak rate. `tokens_per_step` is the batch in tokens (the paper's
    4M); micro-batches of `batch_size` x `seq_len` are accumulated until it is reached.
    """

    tokens: int = 2_000_000  # training budget in tokens
    batch_size: int = 16  # sequences per micro-batch
    seq_len: int = 256
    tokens_per_step: int | None = None  # None: one micro-batch per optimizer step
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None  # None: warmup_fraction of the steps, at most the paper's 2,000
    warmup_fraction: float = 0.05  # of the steps, where warmup_steps is None
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 10
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    max_bad_steps: int = 5  # non-finite losses in a row before the run stops
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"  # autocast dtype: bf16 on CUDA, fp32 on CPU/MPS
    compile: bool = False
    activation_checkpointing: str = "none"
    fused_loss: bool = True  # chunked output-layer cross-entropy, no full logits (llama_core/loss.py)
    attn_backend: str = "auto"
    # derived
    grad_accum: int = field(init=False)
    steps: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("tokens", "batch_size", "seq_len", "eval_every", "eval_batches", "log_every",
                     "checkpoint_every", "keep_checkpoints", "max_bad_steps"):
            value = getattr(self, name)
            _require_train(isinstance(value, int) and not isinstance(value, bool) and value > 0, name,
                           f"must be a positive integer, got {value!r}")
        micro = self.batch_size * self.seq_len
        per_step = self.tokens_per_step or micro
        _require_train(per_step % micro == 0, "tokens_per_step",
                       f"{per_step} is not a multiple of batch_size x seq_len = {micro}")
        _require_train(self.tokens >= per_step, "tokens",
                       f"budget {self.tokens} is smaller than one optimizer step ({per_step} tokens)")
        _require_train(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _require_train(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be within [0, 1]")
        _require_train(0 <= self.weight_decay < 1, "weight_decay", "must be within [0, 1)")
        _require_train(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1",
                       "beta1 and beta2 must be within [0, 1)")
        _require_train(self.grad_clip > 0, "grad_clip", "must be positive")
        steps = self.tokens // per_step
        _require_train(0 <= self.warmup_fraction < 1, "warmup_fraction", f"must be within [0, 1), got "
                       f"{self.warmup_fraction}")
        if self.warmup_steps is not None:
            _require_train(0 <= self.warmup_steps < steps, "warmup_steps",
                           f"must be within [0, steps={steps}), got {self.warmup_steps}")
        object.__setattr__(self, "grad_accum", per_step // micro)
        object.__setattr__(self, "steps", steps)

    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(2000, max(1, int(self.steps * self.warmup_fraction)))



def _require_parallel(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"ParallelConfig.{field_name}: {message}")


@dataclass(frozen=True)
class ParallelConfig(_Serialisable):
    """How a run is split over ranks: `dp` data-parallel x `tp` tensor-parallel (llama_core.tensor_parallel).

    `sequence_parallel` also shards the norms and the residual stream along the sequence
    (Korthikanti et al., 2022). `check` refuses a layout a model or a world cannot take, before any
    rank allocates; dp=None means "whatever the world leaves" (world_size / tp).
    """

    dp: int | None = None
    tp: int = 1
    sequence_parallel: bool = True

    def __post_init__(self) -> None:
        for name in ("dp", "tp"):
            value = getattr(self, name)
            if name == "dp" and value is None:
                continue
            _require_parallel(isinstance(value, int) and not isinstance(value, bool) and value > 0, name,
                              f"must be a positive integer, got {value!r}")
        _require_parallel(isinstance(self.sequence_parallel, bool), "sequence_parallel",
                          f"must be true or false, got {self.sequence_parallel!r}")

    def data_parallel(self, world_size: int) -> int:
        """The data-parallel degree in a world of `world_size` ranks; refuses dp x tp != world size."""
        dp = self.dp if self.dp is not None else world_size // self.tp
        wrong = (f"dp x tp = {self.dp} x {self.tp} must equal" if self.dp is not None else
                 f"tp={self.tp} must divide (dp is then the quotient)")
        _require_parallel(dp * self.tp == world_size, "dp",
                          f"{wrong} the world size {world_size} (torchrun's --nnodes x --nproc_per_node); "
                          "change --parallel.dp/--parallel.tp or the number of processes")
        return dp

    def check(self, model: ModelConfig, world_size: int, train: TrainConfig | None = None) -> None:
        """Refuse a layout `model` (and `train`) cannot be split into, with what to change."""
        dp = self.data_parallel(world_size)
        if train is not None:
            _require_parallel(train.batch_size % dp == 0, "dp",
                              f"--train.batch_size={train.batch_size} (the global batch) must be a multiple of "
                              f"dp={dp} so that each data-parallel rank gets the same rows")
        self.check_model(model, train)

    def check_model(self, model: ModelConfig, train: TrainConfig | None = None) -> None:
        """Refuse a tensor-parallel degree that `model` (and `train`) cannot be split into."""
        tp = self.tp
        if tp == 1:
            return
        for name, size in (("n_heads", model.n_heads), ("n_kv_heads", model.n_kv_heads), ("dim", model.dim),
                           ("hidden_dim", model.hidden_dim), ("vocab_size", model.vocab_size)):
            _require_parallel(size % tp == 0, "tp",
                              f"tp={tp} must divide the model's {name}={size} (each tensor-parallel rank "
                              f"holds 1/{tp} of it); choose a tp that divides it or another model shape")
        if self.sequence_parallel:
            _require_parallel(model.max_seq_len % tp == 0, "sequence_parallel",
                              f"tp={tp} must divide the model's max_seq_len={model.max_seq_len} (shorter "
                              "sequences are padded to a multiple of tp); change it or pass "
                              "--parallel.sequence_parallel=false")
        if train is None:
            return
        if self.sequence_parallel:
            _require_parallel(train.seq_len % tp == 0, "sequence_parallel",
                              f"tp={tp} must divide --train.seq_len={train.seq_len} (each rank holds 1/{tp} of "
                              "the sequence); change the sequence length or pass --parallel.sequence_parallel=false")
        _require_parallel(not train.fused_loss, "tp",
                          f"tp={tp}: the fused chunked loss needs the whole output matrix, which tensor "
                          "parallelism shards over the vocabulary; pass --train.fused_loss=false (the logits are "
                          "then gathered for a plain cross-entropy)")
        _require_parallel(train.activation_checkpointing != "fused", "tp",
                          f"tp={tp}: activation_checkpointing='fused' (llama_core.fused's hand-written backwards) "
                          "is not written for sharded activations; use 'selective', 'full' or 'none'")
