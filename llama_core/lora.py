"""LoRA (Hu et al., 2021) applied from outside a plain Transformer: W x + (alpha / r) B A x.

The adapters live in their own module; forward hooks on the targeted linear layers add their
output, so the model's one forward pass, its parameter names and its checkpoints are unchanged.
`LoRAModel` is what training sees: the frozen base plus the adapters, whose `state_dict` is the
adapters alone (a LoRA run's checkpoints hold only them). `merge` folds them into the base weights.

Written by hand rather than with `peft`: peft works on this model, but renames the wrapped
weights (`wq.base_layer.weight`), which every loader here would then have to know, and it imports
transformers and accelerate at run time, which the lab needs only for development.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from llama_core.model import Transformer

DEFAULT_TARGETS = ("wq", "wv")  # the paper's choice (Hu et al., section 7.1)
TARGETABLE = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = DEFAULT_TARGETS

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha!r}")
        object.__setattr__(self, "targets", tuple(self.targets))
        if not self.targets:
            raise ValueError(f"name at least one LoRA target module, e.g. {','.join(DEFAULT_TARGETS)}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict) -> LoRAConfig:
        return cls(int(d["rank"]), float(d["alpha"]), tuple(d["targets"]))


def target_modules(model: Transformer, targets: Sequence[str]) -> dict[str, nn.Linear]:
    """Full name -> linear layer for every layer whose last name part is in `targets`; a target that
    names no module is a ValueError."""
    found = {name: m for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets}
    missing = [t for t in targets if not any(n.rsplit(".", 1)[-1] == t for n in found)]
    if missing:
        raise ValueError(f"LoRA target {', '.join(map(repr, missing))} names no linear layer of the model; "
                         f"targets are among {', '.join(TARGETABLE)} (output projection: output)")
    return found


class Adapter(nn.Module):
    """A (r, in) and B (out, r): A random, B zero, so training starts from the base model exactly."""

    def __init__(self, linear: nn.Linear, rank: int, scale: float):
        super().__init__()
        self.scale = scale
        self.lora_A = nn.Parameter(torch.empty(rank, linear.in_features, device=linear.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(linear.out_features, rank, device=linear.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta(self) -> torch.Tensor:
        """The weight update (out, in) the adapter stands for."""
        return self.scale * (self.lora_B @ self.lora_A)

    def hook(self, module: nn.Linear, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        return output + self.scale * ((x.to(self.lora_A.dtype) @ self.lora_A.t()) @ self.lora_B.t()).to(output.dtype)


class LoRAModel(nn.Module):
    """A frozen Transformer with adapters hooked onto its target layers; what a LoRA finetune trains."""

    def __init__(self, base: Transformer, cfg: LoRAConfig):
        super().__init__()
        self.base, self.lora = base, cfg
        self.config = base.config
        layers = target_modules(base, cfg.targets)
        for p in base.parameters():
            p.requires_grad_(False)
        # ModuleDict keys may not hold dots
        self.adapters = nn.ModuleDict({name.replace(".", "/"): Adapter(m, cfg.rank, cfg.scale)
                                       for name, m in layers.items()})
        self._handles = [layers[key.replace("/", ".")].register_forward_hook(a.hook)
                         for key, a in self.adapters.items()]

    def forward(self, *args, **kwargs):
        return self.base(*args, **kwargs)

    @property
    def loss_head(self):
        return self.base.loss_head

    @loss_head.setter
    def loss_head(self, head):  # training installs its loss head on the model it is given
        self.base.loss_head = head

    def state_dict(self, *args, **kwargs):
        """The adapters alone, as `layers.0.attention.wq.lora_A` ...: what a LoRA checkpoint holds."""
        return adapter_tensors(self)

    def load_adapters(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = adapter_tensors(self)
        if set(tensors) != set(expected):
            wrong = sorted(set(tensors) ^ set(expected))[:4]
            raise ValueError(f"the adapter weights do not match this LoRA configuration (differing: {wrong})")
        with torch.no_grad():
            for key, a in self.adapters.items():
                name = key.replace("/", ".")
                a.lora_A.copy_(tensors[f"{name}.lora_A"])
                a.lora_B.copy_(tensors[f"{name}.lora_B"])

    def merge(self) -> Transformer:
        """Fold every adapter into its base weight, remove the hooks and return the plain base model."""
        layers = dict(self.base.named_modules())
        with torch.no_grad():
            for key, a in self.adapters.items():
                weight = layers[key.replace("/", ".")].weight
                weight += a.delta().to(weight.dtype)
        for h in self._handles:
            h.remove()
        self._handles = []
        for p in self.base.parameters():
            p.requires_grad_(True)
        return self.base

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.adapters.parameters())


def adapter_tensors(model: LoRAModel) -> dict[str, torch.Tensor]:
    out = {}
    for key, a in model.adapters.items():
        name = key.replace("/", ".")
        out[f"{name}.lora_A"], out[f"{name}.lora_B"] = a.lora_A.detach(), a.lora_B.detach()
    return out
