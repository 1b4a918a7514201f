"""Supervised instruction finetuning (the paper's LLaMA-I, section 4) as a run like any other:
base checkpoint + conversations -> template rendering and loss mask -> train() -> records.

Full finetuning trains every weight and checkpoints them all; LoRA trains adapters on the frozen
base and checkpoints the adapters alone (llama_core.adapted merges them back on load and export).
The optimiser, schedule, metrics, atomic checkpoints and resume are llama_core.train's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lab.experiment import coerce, hardware_record
from lab.records import DEFAULT_RUNS_DIR
from llama_core import adapted
from llama_core import checkpoint as ckpt
from llama_core.chat import get_template
from llama_core.config import TrainConfig
from llama_core.devices import resolve_device, resolve_dtype
from llama_core.flops import param_count
from llama_core.formats import load_model, resolve_path
from llama_core.formats.lab import TEMPLATE_TEXT, save_run_tokenizer
from llama_core.lora import LoRAConfig, LoRAModel
from llama_core.run_folder import RunFolder
from llama_core.sft import DEFAULT_LAYOUT, SFTBatches, fit
from llama_core.sft_data import Examples, read_examples
from llama_core.train import TrainResult, build_state, restore, train

# what a base model whose template has no turn boundaries (a lab run, a raw base) is taught
LAB_TEMPLATE = "turns"
DEFAULT_LR = {"full": 1e-4, "lora": 1e-3}


@dataclass(frozen=True)
class FinetuneSpec:
    """What to finetune: a base checkpoint, training and validation conversations, and how."""

    name: str
    checkpoint: str
    data: str  # a JSONL file, or `shakespeare-instructions` (lab.instructions)
    val_data: str | None = None  # held out: a JSONL file; None splits off `val_percent` of the data
    template: str | None = None  # None: the checkpoint's own, or `turns` where it has none
    lora: LoRAConfig | None = None
    epochs: float = 1.0
    batch_size: int = 8
    seq_len: int | None = None  # None: the model's context
    lr: float | None = None
    skip_bad_lines: bool = False
    val_percent: int = 10
    layout: str = DEFAULT_LAYOUT  # llama_core.sft: pack examples into rows, or pad each to its own
    train_overrides: tuple[tuple[str, str], ...] = ()  # (field, text) from --train.FIELD=VALUE


def load_conversations(spec: FinetuneSpec) -> tuple[Examples, Examples]:
    """(training, validation) conversations; validation is every `1/val_percent`-th one when not given."""
    if spec.data == "shakespeare-instructions":
        from lab.instructions import shakespeare_instructions

        train_set, val_set = shakespeare_instructions()
        return Examples(train_set), Examples(val_set)
    examples = read_examples(spec.data, spec.skip_bad_lines)
    if spec.val_data:
        return examples, read_examples(spec.val_data, spec.skip_bad_lines)
    every = max(2, round(100 / spec.val_percent))
    convs = examples.conversations
    if len(convs) < every:
        raise ValueError(f"{spec.data} has {len(convs)} conversations, too few to hold {spec.val_percent}% out; "
                         "give a validation file with --val-data")
    val = [c for i, c in enumerate(convs) if i % every == every - 1]
    train_set = [c for i, c in enumerate(convs) if i % every != every - 1]
    return Examples(train_set, examples.skipped), Examples(val)


def choose_template(requested: str | None, own: str, source: str) -> str:
    """The template to train with: the checkpoint's own (`own`); one with none (plain) gets `turns`."""
    if requested is None:
        return LAB_TEMPLATE if own == "plain" else own
    get_template(requested)  # an unknown name is refused with the list
    if own != "plain" and requested != own:
        raise ValueError(f"{source} was trained with the {own!r} chat template; finetuning it with "
                         f"{requested!r} would teach it a second format. Leave --template out to use {own!r}")
    return requested


def train_config(spec: FinetuneSpec, n_train: int, n_val_batches: int, seq_len: int) -> TrainConfig:
    steps = max(1, math.ceil(spec.epochs * n_train / spec.batch_size))
    lr = spec.lr or DEFAULT_LR["lora" if spec.lora else "full"]
    cfg = TrainConfig(tokens=steps * spec.batch_size * seq_len, batch_size=spec.batch_size, seq_len=seq_len,
                      lr=lr, warmup_steps=min(steps - 1, max(1, steps // 20)), eval_batches=n_val_batches,
                      eval_every=max(1, steps // 5), log_every=max(1, min(10, steps // 20)),
                      checkpoint_every=max(1, steps // 2), fused_loss=False)
    fields = {f: coerce(v, str(TrainConfig.__dataclass_fields__[f].type), f"train.{f}")
              for f, v in spec.train_overrides if f in TrainConfig.__dataclass_fields__}
    unknown = [f for f, _ in spec.train_overrides if f not in TrainConfig.__dataclass_fields__]
    if unknown:
        raise ValueError(f"--train.{unknown[0]}: TrainConfig has no such field")
    return cfg.replace(**fields) if fields else cfg


def load_adapters(checkpoint: Path, model: LoRAModel) -> None:
    """What `train.restore` loads weights with in a LoRA run: its checkpoints hold only the adapters."""
    model.load_adapters(ckpt.read_weights(checkpoint))


def run_finetune(spec: FinetuneSpec, runs_dir: Path = DEFAULT_RUNS_DIR, resume: bool = False,
                 progress: bool = True) -> TrainResult:
    """Finetune `spec` into runs_dir/NAME (or continue it with `resume`); returns train()'s result."""
    run = RunFolder(Path(runs_dir) / spec.name)
    if resume and not run.is_run():
        raise FileNotFoundError(f"cannot resume: {run.path} holds no run record; start it without --resume")
    if not resume and run.path.exists() and any(run.path.iterdir()):
        raise ValueError(f"run {run.path} already exists; pass --resume to continue it or choose another --name")
    base_path = resolve_path(spec.checkpoint, runs_dir)
    if base_path.resolve() == run.path.resolve():
        raise ValueError("a run cannot be its own base: give the finetune another --name")
    base = load_model(base_path)
    template_name = choose_template(spec.template, base.chat_template, str(base_path))
    template = get_template(template_name)
    train_set, val_set = load_conversations(spec)
    seq_len = min(spec.seq_len or base.model.config.max_seq_len, base.model.config.max_seq_len)
    tok, pad = base.tokenizer, base.tokenizer.eos_id or 0
    train_fit = fit(template, train_set.conversations, tok, seq_len + 1, base.add_bos)
    val_fit = fit(template, val_set.conversations, tok, seq_len + 1, base.add_bos)
    train_batches = SFTBatches(train_fit.examples, spec.batch_size, seed=1337, pad_id=pad, layout=spec.layout,
                               width=seq_len)
    val_batches = SFTBatches(val_fit.examples, spec.batch_size, pad_id=pad, shuffle=False, layout=spec.layout,
                             width=seq_len)
    # train() counts batch_size x seq_len tokens a row: the widest row, not the context, keeps that
    # (and tokens/s, MFU) an upper bound near the truth
    widest = max(len(e.ids) for e in train_fit.examples) - 1
    cfg = train_config(spec, len(train_fit.examples), min(len(val_batches), 20), widest)
    train_batches.seed = cfg.seed
    if resume:
        recorded = run.read_config()
        if recorded["base"]["sha256"] != adapted.content_hash(base_path) or recorded["finetune"]["data"] != spec.data:
            raise ValueError(f"cannot resume {spec.name}: its base or data differ from the recorded ones")
        if recorded["finetune"].get("layout", "pad") != spec.layout:
            raise ValueError(f"cannot resume {spec.name}: it was trained with --layout "
                             f"{recorded['finetune'].get('layout', 'pad')}; resume with the same layout")
        cfg = TrainConfig.from_dict({**recorded["train"], **{k: v for k, v in cfg.to_dict().items()
                                                           if k in ("device", "dtype", "eval_every", "log_every")}})
    if spec.lora and cfg.activation_checkpointing != "none":
        raise ValueError("--train.activation_checkpointing applies to full finetuning only; a LoRA finetune keeps "
                         "the base frozen and stores few activations for it: leave the option out")
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    model = base.model.float().to(device).train()
    for p in model.parameters():
        p.requires_grad_(True)
    torch.manual_seed(cfg.seed)
    trained = LoRAModel(model, spec.lora) if spec.lora else model
    state = build_state(trained, cfg, train_batches)
    if resume:
        checkpoint = run.latest_valid_checkpoint()
        if checkpoint is None:
            raise ValueError(f"{run.path} has no usable checkpoint to resume from; start it again")
        restore(state, checkpoint, load_adapters) if spec.lora else restore(state, checkpoint)
        run.truncate_after(state.step)
        print(f"resuming {spec.name} from {checkpoint.name}")
    else:
        base_record = adapted.base_record(base_path, base.format)  # before the run folder exists
        run.path.mkdir(parents=True, exist_ok=True)
        tokenizer = save_run_tokenizer(run, tok)  # the base's, SentencePiece or byte-level BPE
        data = {"mixture": spec.data, "train_conversations": len(train_set.conversations),
                "val_conversations": len(val_set.conversations), "skipped_lines": train_set.skipped,
                "train_examples": len(train_fit.examples), "val_examples": len(val_fit.examples),
                "truncated": train_fit.truncated + val_fit.truncated, "dropped": train_fit.dropped + val_fit.dropped,
                "assistant_tokens": sum(e.trained for e in train_fit.examples)}
        run.write_config({
            "name": spec.name, "kind": "finetune", "preset": f"finetune of {base_path.name}",
            "model": model.config.to_dict(), "train": cfg.to_dict(), "model_overrides": {},
            "params": param_count(model.config), "data": data,
            "tokenizer": tokenizer, adapted.BASE: base_record,
            adapted.TEMPLATE: template_name, TEMPLATE_TEXT: base.chat_template_text,
            adapted.ADD_BOS: base.add_bos, adapted.LORA: spec.lora.to_dict() if spec.lora else None,
            "finetune": {"data": spec.data, "val_data": spec.val_data, "epochs": spec.epochs, "layout": spec.layout,
                         "trainable_params": sum(p.numel() for p in trained.parameters() if p.requires_grad)},
            "hardware": hardware_record(device, dtype), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "status": "running"})
    text_bytes = sum(len(tok.decode(list(e.ids)).encode()) for e in val_fit.examples)
    bytes_per_token = text_bytes / max(1, sum(len(e.ids) for e in val_fit.examples))
    result = train(state, cfg, run_dir=run.path, val_sampler=val_batches, bytes_per_token=bytes_per_token,
                   tokenizer_fingerprint=tok.fingerprint, device=device, dtype=dtype, sink=run, progress=progress)
    run.update_config(status=result.status)
    return result


def lora_spec(rank: int | None, alpha: float | None, targets: str | None) -> LoRAConfig | None:
    """The LoRA configuration the command line asks for (None: full finetuning); alpha defaults to 2 x rank."""
    if rank is None:
        if alpha is not None or targets is not None:
            raise ValueError("--lora-alpha and --lora-targets need --lora-rank")
        return None
    cfg = LoRAConfig(rank, alpha if alpha is not None else 2.0 * rank)
    if targets:
        cfg = replace(cfg, targets=tuple(t.strip() for t in targets.split(",") if t.strip()))
    return cfg


def record_comparison(spec: FinetuneSpec, runs_dir: Path, n_questions: int) -> dict[str, dict[str, float]]:
    """Score the base and the finished run on `n_questions` held-out Shakespeare questions; record it."""
    from lab.instruction_eval import before_after, spread
    from lab.instructions import build_questions

    run = RunFolder(Path(runs_dir) / spec.name)
    questions = spread(build_questions()[1], n_questions)
    table = before_after(run.read_config()[adapted.BASE]["path"], str(run.path), questions)
    run.update_config(before_after={"questions": len(questions), "source": "lab.instructions validation", **table})
    return table
