"""Sweeps: a grid of presets x token budgets (x learning rates), trained one after another, resumable.

Layout under `runs_dir/SWEEP/`:
  sweep.json        the manifest: the grid and the shared settings (atomic), plus wall time so far
  tokenizer.model   one tokenizer shared by every run (trained once, on the sweep's data)
  PRESET-TOKENS/    a normal run record (config.json + metrics.jsonl + checkpoints); with learning
                    rates in the grid, PRESET-TOKENS-lrLR
So `python -m lab runs --runs-dir runs/SWEEP` lists a sweep's runs, and `list_runs` reads them.

Rerunning a sweep skips finished runs (`lab.experiment.finished`), resumes a started run from its
latest checkpoint, and starts the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from lab.experiment import RunSpec, finished, parse_count, run_training, tokenizer_for
from llama_core.atomic import atomic_write_json
from llama_core.config import PRESETS, ModelConfig, TrainConfig, get_preset
from llama_core.flops import matmul_params, param_count, train_flops_per_token
from llama_core.run_folder import RunFolder

MANIFEST = "sweep.json"
TOKENIZER = "tokenizer.model"

# The sweep family: lab-1m's shape (tied embeddings, SwiGLU rounded to 32, context 256) at four sizes.
# With the 2,048-piece tokenizer: 238k, 529k, 865k and 2.16M parameters (103k to 1.77M outside
# the embedding), a 9x range of per-token training FLOPs.
SWEEP_BASE = "lab-1m"
SWEEP_PRESETS: dict[str, dict] = {
    "sweep-d64": {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4},
    "sweep-d96": {"dim": 96, "n_layers": 3, "n_heads": 4, "n_kv_heads": 4},
    "sweep-d128": {"dim": 128, "n_layers": 3, "n_heads": 4, "n_kv_heads": 4},
    "sweep-d192": {"dim": 192, "n_layers": 4, "n_heads": 6, "n_kv_heads": 6},
    # width against depth at sweep-d128's size outside the embedding (603k): deeper and narrower,
    # shallower and wider (the recipe sweeps, lab/recipes.py)
    "sweep-d96-l6": {"dim": 96, "n_layers": 6, "n_heads": 4, "n_kv_heads": 4},
    "sweep-d160-l2": {"dim": 160, "n_layers": 2, "n_heads": 5, "n_kv_heads": 5},
}
DEFAULT_PRESETS = ("sweep-d64", "sweep-d96", "sweep-d128", "sweep-d192")
DEFAULT_TOKENS = (250_000, 500_000, 1_000_000)
DEFAULT_VOCAB = 2048
DEFAULT_DATA = "shakespeare"
# Every run's training config apart from `tokens` (and `lr` when the grid has learning rates).
DEFAULT_TRAIN = {"batch_size": 16, "seq_len": 128, "lr": 2e-3, "log_every": 10, "eval_every": 100,
                 "eval_batches": 8, "checkpoint_every": 100}

# Time estimate on 2 idle CPU cores: FLOPs at an effective rate plus a per-token overhead that
# dominates the smallest models. Measured on this project's 2-core machine: 68 GFLOP/s at the best
# for sweep-d128 (batch 16 x 128), far less under load; we assume 40 GFLOP/s and 20 us/token.
CPU_FLOPS = 40e9
OVERHEAD_S_PER_TOKEN = 20e-6


def resolve_preset(name: str) -> tuple[str, dict]:
    """A sweep preset -> (SWEEP_BASE, its overrides); a llama_core preset -> (name, {})."""
    if name in SWEEP_PRESETS:
        return SWEEP_BASE, dict(SWEEP_PRESETS[name])
    if name in PRESETS:
        return name, {}
    raise ValueError(f"unknown preset {name!r}; choose sweep presets ({', '.join(SWEEP_PRESETS)}) "
                     f"or llama_core presets ({', '.join(PRESETS)})")


def model_config(preset: str, vocab_size: int) -> ModelConfig:
    base, overrides = resolve_preset(preset)
    return ModelConfig.from_dict({**get_preset(base).to_dict(), **overrides, "vocab_size": vocab_size})


def format_tokens(tokens: int) -> str:
    """1_000_000 -> '1M', 250_000 -> '250k', 12_345 -> '12345' (used in run names)."""
    for unit, scale in (("M", 10**6), ("k", 10**3)):
        if tokens % scale == 0:
            return f"{tokens // scale}{unit}"
    return str(tokens)


def parse_budgets(text: str) -> tuple[int, ...]:
    """'250k,500k,1M' -> (250000, 500000, 1000000), with an error naming the bad item."""
    budgets = []
    for item in (s.strip() for s in text.split(",")):
        try:
            value = parse_count(item)
        except (ValueError, IndexError):
            value = None
        if value is None or value <= 0:
            raise ValueError(f"bad token budget {item!r} in {text!r}: use positive counts like 250k,500k,1M")
        budgets.append(value)
    return tuple(budgets)


def parse_lrs(text: str) -> tuple[float, ...]:
    """'1e-3,3e-3' -> (0.001, 0.003)."""
    try:
        lrs = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"bad learning rates {text!r}: use positive numbers like 1e-3,3e-3") from None
    if not all(lr > 0 for lr in lrs):
        raise ValueError(f"bad learning rates {text!r}: every learning rate must be positive")
    return lrs


@dataclass(frozen=True)
class SweepRun:
    """One cell of the grid."""

    name: str
    preset: str
    tokens: int
    lr: float | None  # None: the sweep's base learning rate


@dataclass(frozen=True)
class Sweep:
    """The grid and its shared settings; validated at construction, so a bad grid trains nothing."""

    name: str
    presets: tuple[str, ...] = DEFAULT_PRESETS
    tokens: tuple[int, ...] = DEFAULT_TOKENS
    lrs: tuple[float, ...] = ()  # empty: DEFAULT_TRAIN's (or `train`'s) lr, and no lr in run names
    data: str = DEFAULT_DATA
    vocab_size: int = DEFAULT_VOCAB
    train: dict = field(default_factory=lambda: dict(DEFAULT_TRAIN))  # TrainConfig fields but tokens

    def __post_init__(self) -> None:
        for name in ("presets", "tokens", "lrs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ValueError(f"sweep name {self.name!r}: use letters, digits, '.', '_' and '-' only")
        if not self.presets or not self.tokens:
            raise ValueError("a sweep needs at least one preset and one token budget")
        for group in ("presets", "tokens", "lrs"):
            values = getattr(self, group)
            if len(set(values)) != len(values):
                raise ValueError(f"--{group} lists a value twice: {values}")
        if "tokens" in self.train:
            raise ValueError("the sweep's train settings must not set tokens; the grid gives them")
        for preset in self.presets:
            model_config(preset, self.vocab_size)  # unknown preset or an invalid shape: fail now
        for tokens in self.tokens:
            if not isinstance(tokens, int) or tokens <= 0:
                raise ValueError(f"token budgets must be positive integers, got {tokens!r}")
            for lr in self.lrs or (None,):
                try:
                    self.train_config(tokens, lr)
                except (TypeError, ValueError) as err:
                    raise ValueError(f"token budget {format_tokens(tokens)}: {err}") from None

    def train_config(self, tokens: int, lr: float | None = None) -> TrainConfig:
        settings = {**self.train, "tokens": tokens}
        if lr is not None:
            settings["lr"] = lr
        return TrainConfig.from_dict(settings)

    def runs(self) -> list[SweepRun]:
        """Every cell, smallest model and budget first (the largest run comes last)."""
        out = []
        for preset in self.presets:
            for tokens in sorted(self.tokens):
                for lr in self.lrs or (None,):
                    name = f"{preset}-{format_tokens(tokens)}" + (f"-lr{lr:g}" if lr is not None else "")
                    out.append(SweepRun(name, preset, tokens, lr))
        return out

    def spec(self, run: SweepRun, tokenizer: Path) -> RunSpec:
        base, overrides = resolve_preset(run.preset)
        return RunSpec(name=run.name, preset=base, data=self.data, vocab_size=self.vocab_size,
                       tokenizer=str(tokenizer), model_overrides=overrides,
                       train=self.train_config(run.tokens, run.lr))

    def grid(self) -> dict:
        """What identifies the sweep: resuming with a different grid is refused."""
        return {"presets": list(self.presets), "tokens": list(self.tokens), "lrs": list(self.lrs),
                "data": self.data, "vocab_size": self.vocab_size, "train": dict(self.train)}


def estimate_seconds(sweep: Sweep, run: SweepRun | None = None) -> float:
    """Training time on 2 idle CPU cores (see CPU_FLOPS): one run, or the whole sweep."""
    if run is None:
        return sum(estimate_seconds(sweep, r) for r in sweep.runs())
    cfg = model_config(run.preset, sweep.vocab_size)
    per_token = train_flops_per_token(cfg, sweep.train_config(run.tokens, run.lr).seq_len)
    return run.tokens * (per_token / CPU_FLOPS + OVERHEAD_S_PER_TOKEN)


def read_manifest(root: Path) -> dict | None:
    path = Path(root) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def plan_sweep(name: str, runs_dir: Path, presets=None, tokens=None, lrs=None, data=None,
               vocab_size=None, train=None) -> Sweep:
    """The sweep to run: what is given, the rest from an existing manifest or the defaults.

    Rerunning with only the name continues the recorded grid; any given setting must agree with it.
    """
    given = {"presets": presets, "tokens": tokens, "lrs": lrs, "data": data, "vocab_size": vocab_size,
             "train": train}
    given = {k: v for k, v in given.items() if v is not None}
    manifest = read_manifest(Path(runs_dir) / name)
    if manifest is None:
        return Sweep(name=name, **given)
    recorded = Sweep(name=name, **manifest["grid"])
    wanted = Sweep(name=name, **{**manifest["grid"], **given})
    if wanted.grid() != recorded.grid():
        diff = [k for k in recorded.grid() if recorded.grid()[k] != wanted.grid()[k]]
        raise ValueError(f"sweep {name!r} already exists in {runs_dir} with another {', '.join(diff)} "
                         f"({ {k: recorded.grid()[k] for k in diff} }); rerun it with the same settings "
                         "(or only --name) to resume, or choose another --name")
    return recorded


@contextlib.contextmanager
def _only_trainer(root: Path):
    """Refuse a second process training the same sweep (an flock: the OS drops it when we die)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"sweep {root.name!r} is being trained by another process right now; "
                             "wait for it to finish (or stop it), then rerun to resume") from None
        yield


@dataclass
class SweepResult:
    root: Path
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already finished
    failed: dict[str, str] = field(default_factory=dict)
    status: str = "finished"  # or "interrupted", "failed"


def run_sweep(sweep: Sweep, runs_dir: Path, progress: bool = True, cache_dir: Path | None = None,
              log=print) -> SweepResult:
    """Train every run of `sweep` not yet finished, one after another, into runs_dir/NAME/.

    A run with a checkpoint resumes from it; a run that died before its first checkpoint starts
    over. A run that diverges is reported and the sweep goes on; Ctrl-C or SIGTERM checkpoints the
    current run and stops the sweep (status 'interrupted'); rerun to continue.
    """
    root = Path(runs_dir) / sweep.name
    with _only_trainer(root):
        return _run_sweep(sweep, root, progress, cache_dir, log)


def _run_sweep(sweep: Sweep, root: Path, progress: bool, cache_dir: Path | None, log) -> SweepResult:
    runs_dir = root.parent
    manifest = read_manifest(root)
    if manifest is not None and Sweep(name=sweep.name, **manifest["grid"]).grid() != sweep.grid():
        raise ValueError(f"sweep {sweep.name!r} in {runs_dir} was recorded with another grid; "
                         "use plan_sweep() to resume it, or choose another name")
    if manifest is None:
        manifest = {"name": sweep.name, "grid": sweep.grid(),
                    "runs": [dataclasses.asdict(r) for r in sweep.runs()],
                    "tokenizer": TOKENIZER, "estimate_s": estimate_seconds(sweep),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_s": 0.0, "status": "running"}
        atomic_write_json(root / MANIFEST, manifest)
    tokenizer = root / TOKENIZER
    if not tokenizer.exists():
        tokenizer_for(RunSpec(name=sweep.name, data=sweep.data, vocab_size=sweep.vocab_size),
                      cache_dir).save(tokenizer)

    result = SweepResult(root)
    runs = sweep.runs()
    bar = tqdm(runs, desc=f"sweep {sweep.name}", unit="run", disable=not progress, dynamic_ncols=True)
    for run in bar:
        folder = RunFolder(root / run.name)
        if finished(folder.path):
            result.skipped.append(run.name)
            continue
        bar.set_postfix_str(run.name)
        resume = folder.is_run() and folder.latest_valid_checkpoint() is not None
        if folder.path.exists() and not resume:  # died before its first checkpoint: nothing to keep
            shutil.rmtree(folder.path)
        start = time.perf_counter()
        try:
            outcome = run_training(sweep.spec(run, tokenizer), root, resume=resume, progress=progress,
                                   cache_dir=cache_dir)
        except RuntimeError as err:  # diverged: the message says how to recover
            result.failed[run.name] = str(err)
            log(f"{run.name}: {err}")
            continue
        finally:
            manifest["wall_s"] += time.perf_counter() - start
            atomic_write_json(root / MANIFEST, manifest)
        if outcome.status == "interrupted":
            result.status = "interrupted"
            break
        result.trained.append(run.name)
    bar.close()
    if result.status != "interrupted":
        result.status = "failed" if result.failed else "finished"
    manifest["status"] = result.status
    atomic_write_json(root / MANIFEST, manifest)
    return result


def load_sweep(root: Path) -> tuple[Sweep, list[dict]]:
    """A recorded sweep and one row per run: size, tokens, compute and final losses (None if not run).

    `tokens` is what the run trains on: its `budget` rounded down to whole optimizer steps.
    `n_params` is matmul_params (the blocks and the output head: what costs 6 FLOPs per token), the
    N of C = 6ND; `params` counts every parameter once.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise FileNotFoundError(f"{root / MANIFEST} does not exist: run `python -m lab sweep --name "
                                f"{root.name} --runs-dir {root.parent}` first")
    sweep = Sweep(name=manifest["name"], **manifest["grid"])
    rows = []
    for run in sweep.runs():
        folder = RunFolder(root / run.name)
        cfg = model_config(run.preset, sweep.vocab_size)
        metrics = folder.read_metrics()
        evals = [m for m in metrics if "val_loss" in m]
        losses = [m for m in metrics if m.get("train_loss") is not None]
        status = folder.read_config().get("status") if folder.is_run() else "not started"
        train = sweep.train_config(run.tokens, run.lr)
        tokens = train.steps * train.grad_accum * train.batch_size * train.seq_len  # whole steps of the budget
        rows.append({
            "run": run.name, "preset": run.preset, "dim": cfg.dim, "n_layers": cfg.n_layers,
            "params": param_count(cfg), "n_params": matmul_params(cfg), "budget": run.tokens, "tokens": tokens,
            "lr": run.lr, "compute": 6 * matmul_params(cfg) * tokens, "status": status,
            "train_loss": losses[-1]["train_loss"] if losses else None,
            "val_loss": evals[-1]["val_loss"] if evals and status == "finished" else None,
            "elapsed_s": metrics[-1].get("elapsed_s") if metrics else None,
        })
    return sweep, rows


def smaller_beats_larger(rows: list[dict]) -> list[dict]:
    """Pairs of finished runs where the smaller model, trained on more tokens, ends at a lower
    validation loss than the larger: cheaper per generated token (~2N FLOPs) and better, the
    paper's claim. Largest inference saving first."""
    done = [r for r in rows if r["val_loss"] is not None]
    pairs = [{"smaller": s["run"], "larger": big["run"], "smaller val loss": s["val_loss"],
              "larger val loss": big["val_loss"], "inference saving (x)": big["n_params"] / s["n_params"],
              "training compute (x)": s["compute"] / big["compute"]}
             for s in done for big in done
             if s["n_params"] < big["n_params"] and s["tokens"] > big["tokens"] and s["val_loss"] < big["val_loss"]]
    return sorted(pairs, key=lambda p: -p["inference saving (x)"])
