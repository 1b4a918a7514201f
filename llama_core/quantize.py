"""Weight-only quantization of the linear layers, swapped into the model's forward pass from outside.

Batch-1 decoding reads every weight once per token, so fewer bytes per weight is more tokens/s.
`quantize(model, "int8" | "int4")` fuses the projections (llama_core.packing) and replaces every
linear layer of the blocks and the output head with a quantized one; the norm gains stay their own
multiply (folding them in would change what is quantized). Activations stay in the compute dtype,
except where the fast kernel is int8 x int8 (per-channel int8 on CPU): there each token's
activations are quantized on the fly with a scale of their own.

- int8, symmetric, per output channel (`group_size=None`) or per group of inputs (GGUF's Q8_0 is
  groups of 32): w = scale * q, q in [-127, 127].
- int4, asymmetric, per group (32 by default; 64/128 where they divide): w = scale * (q - 8) + zero,
  q in [0, 15], two weights per byte (GGUF's Q4_0/Q4_1 map onto it exactly).

Kernels were picked by measurement on a 2-core x86 CPU (1 thread, one 2048x768 matrix):
- int8, one token: float32 `F.linear` 452 us; fbgemm's dynamic int8 linear 204 us (2.2x faster; it
  quantizes the activations to 256 levels of their range on the fly); aten's weight-only
  `_weight_int8pack_mm` 1517 us; dequantizing per call 5619 us. Several tokens at once: fbgemm gives
  the whole input one range, so one token with large activations coarsens all the others (SmolLM2:
  held-out bits/byte +19% over 512-token windows); `torch._int_mm` with each token's own range
  (`int8_matmul_per_token`) costs +0.1% and runs near fbgemm's speed from 64 rows up.
- int4: aten's `_weight_int4pack_mm_for_cpu` took 4.5 ms in float32 but 0.15 ms in bfloat16 (2x
  faster than float32 `F.linear`), so on CPU int4 computes in bfloat16.
- Outliers: the FFN's w2 reads silu(x W1^T) * (x W3^T), whose few huge channels set each token's
  range; quantizing them cost SmolLM2 +0.29% bits/byte of int8's +0.67%. w2 therefore runs
  weight-only: `_weight_int8pack_mm` in bfloat16 (1.8x fbgemm's time, below float32's).
So on CPU per-channel int8 runs fbgemm for one token and `_int_mm` for several (w2: weight-only).
A compiled step (llama_core.compiled) cannot trace fbgemm's packed weights, so it calls them through
one custom op, `llama_lab::fbgemm_int8_linear`, which names its layer by a handle (lab-110m: 101
tokens/s against 71 weight-only); several rows run weight-only there. On CUDA both modes
use aten's weight-only kernels (the standard there); grouped int8 has no fast kernel and dequantizes
per call. `lab bench decode --quant` reports the speeds.
"""

from __future__ import annotations

import itertools
import warnings
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from llama_core.model import Transformer
from llama_core.packing import fuse_projections, pack

MODES = ("none", "int8", "int4")


# ------------------------------------------------------------------------------ pure quantization

def quantize_int8(w: torch.Tensor, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in), scales (out, groups)) with w ~ scales * q, symmetric round-to-nearest."""
    out, n_in = w.shape
    g = _group(n_in, group_size or n_in, "int8")
    wg = w.float().view(out, n_in // g, g)
    scales = wg.abs().amax(-1).clamp(min=1e-12) / 127  # (out, groups)
    q = torch.round(wg / scales[..., None]).clamp(-127, 127).to(torch.int8)
    return q.view(out, n_in), scales


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    out, n_in = q.shape
    return (q.view(out, scales.shape[1], -1).float() * scales[..., None]).view(out, n_in)


def quantize_int4(w: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q uint8 values 0..15 (out, in), scales, zeros (out, groups)) with w ~ scales * (q - 8) + zeros.

    Each group's range [min, max] is cut into 15 steps: round-to-nearest, the error at most half a step.
    """
    out, n_in = w.shape
    g = _group(n_in, group_size, "int4")
    wg = w.float().view(out, n_in // g, g)
    lo, hi = wg.amin(-1), wg.amax(-1)
    scales = (hi - lo).clamp(min=1e-12) / 15
    q = torch.round((wg - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8)
    return q.view(out, n_in), scales, lo + 8 * scales


def dequantize_int4(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    out, n_in = q.shape
    qg = q.view(out, scales.shape[1], -1).float()
    return ((qg - 8) * scales[..., None] + zeros[..., None]).view(out, n_in)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q int8 (rows, in), scales (rows, 1), zeros (rows, 1)) with x ~ scales * (q - zeros): each
    row (token) cut into 256 levels over its own range (0 included), as fbgemm does one tensor."""
    lo, hi = x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0)
    scales = (hi - lo).clamp(min=1e-12) / 255
    zeros = torch.round(-lo / scales) - 128  # q - zeros spans the range with q in [-128, 127]
    return (torch.round(x / scales) + zeros).clamp(-128, 127).to(torch.int8), scales, zeros


def int8_matmul_per_token(x: torch.Tensor, q: torch.Tensor, w_scales: torch.Tensor,
                          q_sums: torch.Tensor | None = None) -> torch.Tensor:
    """x (rows, in) float times the per-channel int8 weights (q (out, in), w_scales (out,))^T, as
    int8 x int8 -> int32 products with each row of x quantized on its own (`quantize_rows`):
    x W^T ~ xs (xq - xz) (ws q)^T = xs ws (xq q^T - xz sum_i q[:, i]). `q_sums`: q's row sums.

    fbgemm's dynamic kernel gives a whole (rows, in) input one scale, so one token with a large
    activation coarsens every other token's (on SmolLM2, held-out bits/byte +19% over a 512-token
    window): several rows take this path instead.
    """
    xq, x_scales, x_zeros = quantize_rows(x)
    if q_sums is None:
        q_sums = q.sum(1, dtype=torch.int32)
    acc = torch._int_mm(xq, q.t()).float() - x_zeros * q_sums.float()
    return acc * x_scales * w_scales


def _group(n_in: int, group_size: int, kind: str) -> int:
    if group_size < 1 or n_in % group_size:
        raise ValueError(f"{kind} group size {group_size} does not divide the layer's {n_in} inputs; "
                         "choose one that does (32 divides every dimension of the lab's presets and SmolLM2)")
    return group_size


# ------------------------------------------------------------------ fbgemm inside a compiled graph

_FBGEMM_LAYERS: dict[int, weakref.ref] = {}  # handle -> the Int8Linear whose packed weight the op reads
_HANDLES = itertools.count()


@torch.library.custom_op("llama_lab::fbgemm_int8_linear", mutates_args=())
def fbgemm_int8_linear(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    """fbgemm's dynamic int8 linear of the layer registered as `handle`: one op that a compiled graph
    holds, where the packed weight itself (a TorchScript object) does not trace."""
    return torch.ops.quantized.linear_dynamic(x, _FBGEMM_LAYERS[handle]()._fbgemm_weight())


@fbgemm_int8_linear.register_fake
def _(x: torch.Tensor, handle: int, out_features: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], out_features))


# ---------------------------------------------------------------------------------- linear layers

class Int8Linear(nn.Module):
    """y = x (scales * q)^T with int8 weights; see the module docstring for the kernels."""

    def __init__(self, q: torch.Tensor, scales: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.register_buffer("weight", q)  # int8 (out, in)
        self.register_buffer("scales", scales.float())  # (out, groups)
        self._fbgemm = None
        self._sums = None
        self._scales_bf16 = None
        self._handle = None  # this layer's name for fbgemm_int8_linear (`prepare`)
        # True: never quantize this layer's inputs (on CPU: weight-only, in bfloat16), for a layer
        # whose inputs carry outlier channels (`fuse_quantized` sets it for the FFN's w2)
        self.weight_only = False

    @classmethod
    def from_float(cls, weight: torch.Tensor, group_size: int | None = None) -> Int8Linear:
        return cls(*quantize_int8(weight, group_size))

    @property
    def group_size(self) -> int:
        return self.in_features // self.scales.shape[1]

    def dequantize(self) -> torch.Tensor:
        return dequantize_int8(self.weight, self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_channel = self.scales.shape[1] == 1
        if per_channel and x.device.type == "cpu" and x.dtype == torch.float32:
            flat = x.reshape(-1, self.in_features)
            one_token = flat.shape[0] == 1 and not self.weight_only  # fbgemm's one scale is the token's own
            if one_token and torch.compiler.is_compiling() and self._handle is not None:
                return fbgemm_int8_linear(x, self._handle, self.out_features)
            if self.weight_only or torch.compiler.is_compiling():
                y = torch.ops.aten._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight,
                                                       self._bf16_scales()).to(x.dtype)
            elif one_token:
                return torch.ops.quantized.linear_dynamic(x, self._fbgemm_weight())
            else:
                y = int8_matmul_per_token(flat, self.weight, self.scales[:, 0], self._row_sums())
            return y.view(*x.shape[:-1], self.out_features)
        if per_channel and x.device.type == "cuda":
            flat = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features), self.weight,
                                                       self.scales[:, 0].to(x.dtype))
            return flat.view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.dequantize().to(x.device, x.dtype))

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        """Build what the kernels read beside the weights now, so that a compiled forward finds them."""
        if device.type == "cpu" and self.scales.shape[1] == 1:
            self._bf16_scales()
            if not self.weight_only:
                self._fbgemm_weight()
                self._register()

    def _register(self) -> None:
        """Give this layer a handle of its own (a deep copy carries its original's: it gets a new one)."""
        ref = _FBGEMM_LAYERS.get(self._handle) if self._handle is not None else None
        if ref is None or ref() is not self:
            self._handle = handle = next(_HANDLES)
            _FBGEMM_LAYERS[handle] = weakref.ref(self, lambda _, h=handle: _FBGEMM_LAYERS.pop(h, None))

    def _bf16_scales(self) -> torch.Tensor:
        if self._scales_bf16 is None:
            self._scales_bf16 = self.scales[:, 0].to(torch.bfloat16)
        return self._scales_bf16

    def _row_sums(self) -> torch.Tensor:
        if self._sums is None:
            self._sums = self.weight.sum(1, dtype=torch.int32)
        return self._sums

    def _fbgemm_weight(self):
        if self._fbgemm is None:
            with warnings.catch_warnings():  # the quantized tensor type is deprecated; the kernel is not
                warnings.simplefilter("ignore")
                qw = torch.quantize_per_channel(self.dequantize(), self.scales[:, 0].double(),
                                                torch.zeros(self.out_features, dtype=torch.long), 0, torch.qint8)
                self._fbgemm = torch.ops.quantized.linear_prepack(qw, None)
        return self._fbgemm

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


class Int4Linear(nn.Module):
    """y = x (scales * (q - 8) + zeros)^T with 4-bit weights, two per byte; see the module docstring."""

    def __init__(self, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.register_buffer("weight", _pack_nibbles(q))  # uint8 (out, in/2)
        self.register_buffer("scales", scales.float())  # (out, groups)
        self.register_buffer("zeros", zeros.float())  # (out, groups)
        self._kernel = None

    @classmethod
    def from_float(cls, weight: torch.Tensor, group_size: int = 32) -> Int4Linear:
        return cls(*quantize_int4(weight, group_size))

    @classmethod
    def from_packed(cls, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> Int4Linear:
        """From the stored form: (out, in/2) bytes of two weights each, as `weight` holds them."""
        return cls(unpack_nibbles(packed), scales, zeros)

    @property
    def group_size(self) -> int:
        return self.in_features // self.scales.shape[1]

    def dequantize(self) -> torch.Tensor:
        return dequantize_int4(unpack_nibbles(self.weight), self.scales, self.zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if x.device.type == "cuda":
            packed, scales_zeros = self._kernel_weights(x.device, x.dtype)
            y = torch.ops.aten._weight_int4pack_mm(flat, packed, self.group_size, scales_zeros)
        elif x.device.type != "cpu":  # no kernel here (`kernel_for` warned): the float product
            return F.linear(x, self.dequantize().to(x.device, x.dtype))
        else:  # the CPU kernel is fast in bfloat16 only (float32 measured 30x slower): compute in it
            packed, scales_zeros = self._kernel_weights(x.device, x.dtype)
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat.to(torch.bfloat16), packed, self.group_size,
                                                           scales_zeros).to(x.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        """Pack the weights the way this device's kernel reads them for inputs of `dtype` now, so that
        a compiled forward finds them."""
        if device.type in ("cpu", "cuda"):
            self._kernel_weights(device, dtype)

    def _kernel_weights(self, device: torch.device, dtype: torch.dtype):
        """The aten kernel's own packing of the weights, built once per device and dtype."""
        if device.type == "cpu":  # the CPU kernel computes in bfloat16 whatever the input
            dtype = torch.bfloat16
        key = (device, dtype)
        if self._kernel is None or self._kernel[0] != key:
            q = unpack_nibbles(self.weight).to(torch.int32)
            if device.type == "cuda":
                packed = torch.ops.aten._convert_weight_to_int4pack(q.to(device), 8)
            else:
                packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            scales_zeros = torch.stack([self.scales, self.zeros], -1).transpose(0, 1).contiguous()  # (G, out, 2)
            self._kernel = (key, packed, scales_zeros.to(dtype))
        return self._kernel[1], self._kernel[2]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(out, in) values 0..15 -> (out, in/2) bytes: even inputs in the low nibble, odd in the high."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    return torch.stack([packed & 15, packed >> 4], dim=-1).flatten(-2)


# ------------------------------------------------------------------------------------ the swap

def quantize(model: Transformer, mode: str, group_size: int | None = None) -> Transformer:
    """Quantize `model`'s linear layers in place ("none" leaves it as it is); returns it, in eval mode.

    `group_size`: int8 defaults to per output channel, int4 to groups of 32.
    """
    if mode not in MODES:
        raise ValueError(f"unknown quantization {mode!r}; choose one of {MODES}")
    if mode == "none":
        return model
    _, warning = kernel_for(mode, model.tok_embeddings.weight.device.type)
    if warning:
        warnings.warn(warning, stacklevel=2)
    fuse_projections(model)
    with torch.no_grad():
        for parent in [model, *(b.attention for b in model.layers), *(b.feed_forward for b in model.layers)]:
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear:
                    setattr(parent, name, _quantized(child.weight, mode, group_size))
    return fuse_quantized(model).eval().requires_grad_(False)  # layers loaded quantized (GGUF) fused too


def kernel_for(mode: str, device_type: str, engines: list[str] | None = None) -> tuple[str, str | None]:
    """(the kernel `mode` runs on a `device_type` device, None or the warning its slow fallback gets).

    `engines`: the CPU's quantized engines (torch.backends.quantized.supported_engines by default);
    fbgemm's int8 needs "x86" or "fbgemm", which ARM CPUs lack.
    """
    if mode not in ("int8", "int4"):
        return "float", None
    if device_type == "cuda":
        return f"aten _weight_{mode}pack_mm (weight-only)", None
    if device_type == "cpu" and mode == "int4":
        return "aten _weight_int4pack_mm_for_cpu in bfloat16", None
    if device_type == "cpu":
        engines = torch.backends.quantized.supported_engines if engines is None else engines
        if {"x86", "fbgemm"} & set(engines):
            return "fbgemm dynamic int8 (one token), torch._int_mm (several)", None
        return "aten _weight_int8pack_mm in bfloat16 (weight-only)", (
            f"int8 on this CPU: fbgemm is not available (quantized engines: {', '.join(engines) or 'none'}), so "
            "int8 runs weight-only in bfloat16 instead, slower than fbgemm; --quant int4 has a CPU kernel too")
    return "dequantize per call", (
        f"{mode} on {device_type}: no quantized kernel here, so each layer dequantizes its weights every call "
        "(slower than float weights, though the model stays small in memory); use --quant none for speed")


def for_decoding(model: Transformer, quant: str = "none", group_size: int | None = None) -> Transformer:
    """`model` made ready for fast generation, in place: the packed float layout for "none"
    (llama_core.packing), the quantized linear layers for "int8" and "int4". Returns it."""
    return pack(model) if quant == "none" else quantize(model, quant, group_size)


def prepare_kernels(model: Transformer) -> Transformer:
    """Every quantized layer's kernel layout built now rather than on its first call: a compiled
    forward (llama_core.compiled) reads them and must not build them while it is traced."""
    weight = model.tok_embeddings.weight
    for module in model.modules():
        if isinstance(module, (Int8Linear, Int4Linear)):
            module.prepare(weight.device, weight.dtype)
    return model


def _quantized(weight: torch.Tensor, mode: str, group_size: int | None) -> nn.Module:
    if mode == "int8":
        return Int8Linear.from_float(weight, group_size)
    return Int4Linear.from_float(weight, group_size or 32)


def layer_from_state(state: dict[str, torch.Tensor]) -> nn.Module:
    """The quantized layer whose `state_dict()` is `state`: int8 weights with scales, or packed
    4-bit weights with scales and zeros."""
    weight, scales = state["weight"], state["scales"]
    if weight.dtype == torch.int8 and "zeros" not in state:
        return Int8Linear(weight, scales)
    if weight.dtype == torch.uint8 and "zeros" in state:
        return Int4Linear.from_packed(weight, scales, state["zeros"])
    raise ValueError(f"no quantized layer has {weight.dtype} weights with {sorted(state)}")


def split_rows(layer: nn.Module, sizes: list[int]) -> list[nn.Module]:
    """A quantized layer cut into layers of `sizes` output rows (each row is quantized on its own)."""
    parts = {name: t.split(sizes) for name, t in layer.state_dict().items()}
    return [layer_from_state({name: p[i] for name, p in parts.items()}) for i in range(len(sizes))]


_FUSED = (("attention", "wqkv", ("wq", "wk", "wv")), ("feed_forward", "w13", ("w1", "w3")))


def fuse_quantized(model: Transformer) -> Transformer:
    """wq|wk|wv -> wqkv and w1|w3 -> w13 where they are quantized alike (the layout `quantize` makes),
    and int8 w2 marked weight-only: its input, silu(x W1^T) * (x W3^T), has a few channels far larger
    than the rest (Dettmers et al. 2022), which would coarsen each token's activation scale (on
    SmolLM2 w2 was +0.29% held-out bits/byte of int8's +0.67%; weight-only, +0.45% in all)."""
    no_fbgemm = kernel_for("int8", "cpu")[1] is not None  # then every int8 layer is weight-only
    w2s = {id(b.feed_forward.w2) for b in model.layers}
    for module in model.modules():
        if isinstance(module, Int8Linear):
            module.weight_only = no_fbgemm or id(module) in w2s
    for block in model.layers:
        for part, fused, names in _FUSED:
            parent = getattr(block, part)
            if getattr(parent, fused) is None and _alike(*(getattr(parent, n) for n in names)):
                setattr(parent, fused, _stacked(*(getattr(parent, n) for n in names)))
                for n in names:
                    delattr(parent, n)
    return model


def _alike(*layers: nn.Module) -> bool:
    kinds = {(type(m), m.in_features, m.group_size) for m in layers if isinstance(m, (Int8Linear, Int4Linear))}
    return len(kinds) == 1 and all(isinstance(m, (Int8Linear, Int4Linear)) for m in layers)


def _stacked(*layers: nn.Module) -> nn.Module:
    states = [m.state_dict() for m in layers]
    return layer_from_state({name: torch.cat([s[name] for s in states]) for name in states[0]})


def quantization_of(model: Transformer) -> str:
    """"int8", "int4" or "none": what `quantize` made of the model's linear layers."""
    kinds = {type(m) for m in model.modules()}
    return "int4" if Int4Linear in kinds else "int8" if Int8Linear in kinds else "none"


def weight_bytes(model: Transformer) -> int:
    """Bytes of every parameter and buffer (each tensor once): what one decoded token reads, roughly."""
    seen = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())
