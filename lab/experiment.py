"""One training run end to end: spec -> tokenizer -> data -> model -> train() -> records.

Everything that can be wrong with the input (preset, source, file, sequence length, run name) is
checked before the run folder is created, so a refused run writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lab.records import DEFAULT_RUNS_DIR
from llama_core import distributed
from llama_core.activation_checkpointing import POLICIES
from llama_core.config import ModelConfig, ParallelConfig, TrainConfig, get_preset
from llama_core.data import (
    SPLIT_VERSION,
    VAL_PERCENT,
    BatchSampler,
    Mixture,
    corpus_text,
    default_cache_dir,
    parse_mixture,
    resolve_source,
)
from llama_core.devices import machine_record, peak_flops, resolve_device, resolve_dtype
from llama_core.flops import param_count
from llama_core.heldout import heldout_metrics
from llama_core.model import Transformer
from llama_core.run_folder import RunFolder
from llama_core.tokenizer import DEFAULT_VOCAB_SIZE, SentencePieceTokenizer, train_sentencepiece
from llama_core.train import TrainResult, build_state, restore, train

TOKENIZER_TRAINING_CHARS = 20_000_000  # enough text for a few-thousand-piece vocabulary


@dataclass(frozen=True)
class RunSpec:
    """What to train: a preset with overrides, a training config, a data mixture and a tokenizer."""

    name: str
    preset: str = "lab-4m"
    data: str = "shakespeare"
    vocab_size: int = DEFAULT_VOCAB_SIZE
    tokenizer: str | None = None  # path to an existing tokenizer.model; None trains one
    model_overrides: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # how, not what: a resume may change it

    def model_config(self, vocab_size: int) -> ModelConfig:
        base = get_preset(self.preset).to_dict()
        return ModelConfig.from_dict({**base, **self.model_overrides, "vocab_size": vocab_size})


def tokenizer_for(spec: RunSpec, cache_dir: Path | None = None) -> SentencePieceTokenizer:
    """The run's tokenizer: a given file, or one trained on the mixture's text (cached by content)."""
    if spec.tokenizer:
        return SentencePieceTokenizer.load(spec.tokenizer)
    parts = parse_mixture(spec.data)
    sources = [resolve_source(name) for name, _ in parts]
    # the split is in the key: a tokenizer that saw today's validation text is never reused
    key = hashlib.sha256(json.dumps([[s.fingerprint for s in sources], [w for _, w in parts],
                                     spec.vocab_size, SPLIT_VERSION, VAL_PERCENT]).encode()).hexdigest()[:16]
    path = Path(cache_dir or default_cache_dir()) / "tokenizers" / f"{key}.model"
    if path.exists():
        return SentencePieceTokenizer.load(path)
    print(f"training a {spec.vocab_size}-piece SentencePiece BPE tokenizer on {spec.data}...")
    texts = (text for s, (_, w) in zip(sources, parts)
             for text in corpus_text(s, max_chars=int(TOKENIZER_TRAINING_CHARS * w)))
    tokenizer = train_sentencepiece(texts, vocab_size=spec.vocab_size)
    tokenizer.save(path)
    return tokenizer


def hardware_record(device: torch.device, dtype: torch.dtype, parallel: ParallelConfig | None = None) -> dict:
    """The machine a run trains on, with the peak its MFU is measured against, the ranks and their layout."""
    peak, source = peak_flops(device, dtype)
    parallel = parallel or ParallelConfig()
    world = distributed.world_size()
    return {**machine_record(device, dtype), "peak_flops": peak, "peak_source": source, "ranks": world,
            "parallel": dict(parallel.to_dict(), dp=parallel.data_parallel(world))}


def run_training(spec: RunSpec, runs_dir: Path = DEFAULT_RUNS_DIR, resume: bool = False,
                 progress: bool = True, cache_dir: Path | None = None, wrap_sink=None) -> TrainResult:
    """Train `spec` into runs_dir/NAME, or continue it with `resume`.

    Under torchrun (llama_core.distributed) every rank calls this: the global batch is split over
    the data-parallel ranks, the model split by `spec.parallel` (tensor parallel on the "tp" axis,
    llama_core.tensor_parallel) and sharded with FSDP2, and only rank 0 writes records and prints.
    `wrap_sink(sink, model, tokenizer)` may extend rank 0's metrics lines (lab.evals.during_training).
    """
    run = RunFolder(Path(runs_dir) / spec.name)
    run_dir = run.path
    if resume:
        if not run.is_run():
            raise FileNotFoundError(f"cannot resume: {run_dir} holds no run record; start it without --resume")
        check_resumable(spec_from_record(run_dir), spec, run.read_config()["tokenizer"]["fingerprint"])
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"run {run_dir} already exists; pass --resume to continue it or choose another --name")
    cfg = spec.train
    if cfg.activation_checkpointing not in POLICIES:  # before any tokenizer training or tokenizing
        raise ValueError(f"--train.activation_checkpointing={cfg.activation_checkpointing!r} is not a policy; "
                         f"choose one of {', '.join(POLICIES)}")
    world = distributed.world_size()
    if spec.tokenizer is None:  # the layout is refused before any tokenizer, data or model exists
        spec.parallel.check(spec.model_config(spec.vocab_size), world, cfg)
    main = distributed.is_main()
    device = distributed.local_device(resolve_device(cfg.device))
    dtype = resolve_dtype(cfg.dtype, device)
    progress = progress and main
    with distributed.main_first():  # rank 0 trains the tokenizer and fills the token cache alone
        tokenizer = tokenizer_for(spec, cache_dir) if not resume else SentencePieceTokenizer.load(
            run.tokenizer_path)
        model_cfg = spec.model_config(tokenizer.vocab_size)
        if cfg.seq_len > model_cfg.max_seq_len:
            raise ValueError(f"--train.seq_len={cfg.seq_len} exceeds the model's context "
                             f"(max_seq_len={model_cfg.max_seq_len}); lower it or raise --model.max_seq_len")
        spec.parallel.check(model_cfg, world, cfg)
        mixture = Mixture.build(spec.data, tokenizer, cache_dir, progress=progress)
    train_sampler = BatchSampler(mixture, cfg.batch_size, cfg.seq_len, seed=cfg.seed)
    val_sampler = BatchSampler(mixture, cfg.batch_size, cfg.seq_len, seed=cfg.seed, split="val") \
        if all(f.val_tokens > cfg.seq_len + 1 for f in mixture.files) else train_sampler
    mesh = distributed.device_mesh(device, spec.parallel) if distributed.is_distributed() else None
    train_sampler, val_sampler = distributed.rank_rows(train_sampler, mesh), distributed.rank_rows(val_sampler, mesh)

    torch.manual_seed(cfg.seed)
    model = Transformer(model_cfg, attn_backend=cfg.attn_backend).to(device)
    if spec.parallel.tp > 1:  # every rank built the same full model: each keeps its slices
        from llama_core.tensor_parallel import parallelize

        parallelize(model, mesh["tp"], spec.parallel)
    state = build_state(model, cfg, train_sampler, mesh)
    if resume:
        checkpoint = run.latest_valid_checkpoint()
        if checkpoint is None:
            raise ValueError(f"{run_dir} has no usable checkpoint to resume from; start it again")
        restore(state, checkpoint)
        if main:
            run.truncate_after(state.step)
            run.update_config(train=cfg.to_dict())  # the record tells the budget and cadence now in force
            print(f"resuming {spec.name} from {checkpoint.name} ({state.tokens:,} tokens seen)")
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(run.tokenizer_path)
        config = {
            "name": spec.name, "preset": spec.preset, "model": model_cfg.to_dict(), "train": cfg.to_dict(),
            "model_overrides": spec.model_overrides, "params": param_count(model_cfg),
            "data": {"mixture": spec.data, "table": mixture.table(cfg.steps * cfg.grad_accum *
                                                                   cfg.batch_size * cfg.seq_len)},
            "tokenizer": {"path": run.tokenizer_path.name, "fingerprint": tokenizer.fingerprint,
                          "vocab_size": tokenizer.vocab_size},
            "hardware": hardware_record(device, dtype, spec.parallel), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "status": "running",
        }
        run.write_config(config)
    result = train(state, cfg, run_dir=run_dir, val_sampler=val_sampler,
                   bytes_per_token=mixture.bytes_per_token, tokenizer_fingerprint=tokenizer.fingerprint,
                   device=device, dtype=dtype, progress=progress,
                   sink=None if not main else run if wrap_sink is None else wrap_sink(run, state.model, tokenizer))
    heldout = {}
    if result.status == "finished":  # every rank: a sharded model's forward is collective
        heldout = heldout_metrics(state.model, mixture, cfg.seq_len, device, dtype)
        result.last.update(heldout)
    if main:
        config = run.read_config()
        validation = {"during": f"metrics val_loss/val_bpb: {cfg.eval_batches} sampled batches",
                      "final": "heldout: " + heldout.get("heldout_method", "not reached")}
        run.write_config(dict(config, status=result.status, validation=validation,
                              heldout=dict(heldout, step=state.step, tokens=state.tokens) if heldout else None))
    return result


def spec_from_record(run_dir: Path) -> RunSpec:
    """The spec a recorded run was trained with."""
    config = RunFolder(run_dir).read_config()
    return RunSpec(name=config["name"], preset=config["preset"], data=config["data"]["mixture"],
                   vocab_size=config["tokenizer"]["vocab_size"], model_overrides=config["model_overrides"],
                   train=TrainConfig.from_dict(config["train"]))


# What a resume may change: the budget, the evaluation, logging and checkpoint cadence, and how the
# steps are executed. The model, the data, the tokenizer and the optimisation recipe (batch, lr,
# schedule, seed) are the run's identity: changing them mid-run would make its record a lie.
RESUMABLE_TRAIN_FIELDS = ("tokens", "eval_every", "eval_batches", "log_every", "checkpoint_every",
                          "keep_checkpoints", "max_bad_steps", "device", "dtype", "compile",
                          "activation_checkpointing", "fused_loss", "attn_backend")


def check_resumable(recorded: RunSpec, requested: RunSpec, fingerprint: str | None = None) -> None:
    """Refuse to resume `recorded` as `requested` when they differ in more than RESUMABLE_TRAIN_FIELDS
    (a given tokenizer file is compared with the recorded tokenizer's `fingerprint`)."""
    changed = [f"--{name}={getattr(requested, name)!r} (recorded {getattr(recorded, name)!r})"
               for name in ("preset", "data") if getattr(requested, name) != getattr(recorded, name)]
    if requested.tokenizer is None and requested.vocab_size != recorded.vocab_size:
        changed.append(f"--vocab={requested.vocab_size} (recorded {recorded.vocab_size})")
    if requested.tokenizer is not None and fingerprint is not None:
        given = SentencePieceTokenizer.load(requested.tokenizer).fingerprint
        if given != fingerprint:
            changed.append(f"--tokenizer={requested.tokenizer} (fingerprint {given}, recorded {fingerprint})")
    old = recorded.model_config(recorded.vocab_size).to_dict()
    try:
        new = requested.model_config(recorded.vocab_size).to_dict()
        changed += [f"--model.{k}={new[k]!r} (recorded {old[k]!r})" for k in old if new[k] != old[k]]
    except ValueError as err:  # e.g. another preset with the recorded overrides
        changed.append(f"a model that does not build ({err})")
    old, new = recorded.train.to_dict(), requested.train.to_dict()
    changed += [f"--train.{f.name}={new[f.name]!r} (recorded {old[f.name]!r})"
                for f in dataclasses.fields(TrainConfig)
                if f.init and f.name not in RESUMABLE_TRAIN_FIELDS and new[f.name] != old[f.name]]
    if changed:
        raise ValueError(f"cannot resume {recorded.name} with {', '.join(changed)}: a resume may change only "
                         f"--train.{{{','.join(RESUMABLE_TRAIN_FIELDS)}}}; the model, data, tokenizer and "
                         "optimisation recipe are the run's own. Start a new run (another --name) to change them")


def finished(run_dir: Path) -> bool:
    run = RunFolder(run_dir)
    return run.is_run() and run.read_config().get("status") == "finished"


def apply_overrides(spec: RunSpec, overrides: dict[str, str]) -> RunSpec:
    """Dotted overrides: {'train.lr': '3e-4', 'model.dim': '128', 'parallel.tp': '2'} -> a new spec (coerced)."""
    sections = {"model": ModelConfig, "train": TrainConfig, "parallel": ParallelConfig}
    given = {"model": dict(spec.model_overrides), "train": {}, "parallel": {}}
    for key, raw in overrides.items():
        section, _, name = key.partition(".")
        target = sections.get(section)
        if target is None or not name:
            raise ValueError(f"override {key!r}: use --model.FIELD=VALUE, --train.FIELD=VALUE or "
                             "--parallel.FIELD=VALUE")
        fields = {f.name: f for f in dataclasses.fields(target) if f.init}
        if name not in fields:
            raise ValueError(f"override {key!r}: {target.__name__} has no field {name!r}; "
                             f"fields are {sorted(fields)}")
        given[section][name] = coerce(raw, str(fields[name].type), key)
    return dataclasses.replace(spec, model_overrides=given["model"], train=spec.train.replace(**given["train"]),
                               parallel=spec.parallel.replace(**given["parallel"]))


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """['--train.lr=3e-4', '--model.dim', '128'] -> {'train.lr': '3e-4', 'model.dim': '128'}."""
    out, items = {}, list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or "." not in item:
            raise ValueError(f"unrecognised argument {item!r}; overrides look like --train.lr=3e-4")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if not items:
                raise ValueError(f"override {item} needs a value")
            value = items.pop(0)
        out[key] = value
    return out


def coerce(raw: str, annotation: str, key: str):
    """Turn an override's text into the field's type (int, float, bool, str, or None)."""
    if raw in ("None", "none", "null") and "None" in annotation:
        return None
    try:
        if annotation.startswith("bool"):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if annotation.startswith("int"):
            return parse_count(raw)
        if annotation.startswith("float"):
            return float(raw)
    except ValueError:
        raise ValueError(f"override {key}={raw!r}: expected {annotation}") from None
    return raw


def parse_count(text: str) -> int:
    """'2M' -> 2_000_000, '500k' -> 500_000, '1.5e6' -> 1_500_000."""
    scale = {"k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}.get(text[-1:].lower(), 1)
    number = float(text[:-1] if scale > 1 else text)
    if not number.is_integer() and scale == 1:
        raise ValueError(f"{text!r} is not a whole number")
    return int(number * scale)
