"""The decode-time weight layout, applied to a model from outside: fused products, folded norm gains.

Decoding one token reads every weight once and does little else, so its speed is memory bandwidth
plus per-operation overhead. `pack` rewrites a model in place so that the same forward pass does
less of the second: wq|wk|wv become one matrix `wqkv` and w1|w3 one matrix `w13` (fewer, larger
products), and each RMSNorm gain g is folded into the matrix that reads the normalised vector
((x * r * g) W^T = (x * r) (W diag(g))^T), leaving the norm without a gain. On CPU the float
matrices are also stored transposed, (in, out), where `x @ W` measured faster than `F.linear`.

A packed model computes the plain model's function up to float rounding (tests compare them). It is
for inference: its parameter names are no longer Meta's, so save or export the plain model.
Quantized linears (llama_core.quantize) take the place of the float ones on the same path; a gain
is folded only into float `nn.Linear` layers that own their weight, and otherwise stays the norm's
own multiply.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from llama_core.model import RMSNorm, Transformer


class TransposedLinear(nn.Module):
    """y = x W^T, with W^T stored contiguous as (in, out): the row-major layout that `x @ W` streams."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight_t = nn.Parameter(weight.t().contiguous(), requires_grad=False)  # (in, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight_t

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _fused(*linears: nn.Linear) -> nn.Linear:
    """One bias-free linear layer whose outputs are those of `linears`, concatenated."""
    weight = torch.cat([lin.weight for lin in linears])  # (sum of outs, in)
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    return fused


def fuse_projections(model: Transformer) -> Transformer:
    """wq|wk|wv -> wqkv and w1|w3 -> w13 in every block (float linears only); returns the model."""
    with torch.no_grad():
        for block in model.layers:
            attn, ffn = block.attention, block.feed_forward
            if attn.wqkv is None and _all_float_linear(attn.wq, attn.wk, attn.wv):
                attn.wqkv = _fused(attn.wq, attn.wk, attn.wv)
                del attn.wq, attn.wk, attn.wv
            if ffn.w13 is None and _all_float_linear(ffn.w1, ffn.w3):
                ffn.w13 = _fused(ffn.w1, ffn.w3)
                del ffn.w1, ffn.w3
    return model


def fold_norm_gains(model: Transformer) -> Transformer:
    """Fold each RMSNorm gain into the float linear layer(s) reading its output; returns the model.

    A gain whose readers are not all float `nn.Linear` layers owning their weight (a quantized
    layer, the output matrix tied to the embedding) is left in its norm.
    """
    with torch.no_grad():
        for block in model.layers:
            attn, ffn = block.attention, block.feed_forward
            qkv = [attn.wqkv] if attn.wqkv is not None else [attn.wq, attn.wk, attn.wv]
            _fold(block.attention_norm, qkv, model)
            _fold(block.ffn_norm, [ffn.w13] if ffn.w13 is not None else [ffn.w1, ffn.w3], model)
        _fold(model.norm, [model.output], model)
    return model


def transpose_linears(model: Transformer) -> Transformer:
    """Every float `nn.Linear` of the blocks and the head stored as (in, out); returns the model.

    A head tied to the embedding gets its own transposed copy: one more vocabulary matrix in
    memory, for a head that measured 1.4x faster (the largest matrix of a small model).
    """
    with torch.no_grad():
        for parent in [model, *(b.attention for b in model.layers), *(b.feed_forward for b in model.layers)]:
            for name, child in list(parent.named_children()):
                if _all_float_linear(child):
                    setattr(parent, name, TransposedLinear(child.weight))
    return model


def pack(model: Transformer, transpose: bool | None = None) -> Transformer:
    """The whole decode-time layout, in place: fused products, folded gains, and (by default on CPU,
    where it measured faster) transposed float matrices. Returns the model, in eval mode."""
    if transpose is None:
        transpose = model.tok_embeddings.weight.device.type == "cpu"
    fuse_projections(model)
    if transpose and _all_float_linear(model.output) and model.output.weight is model.tok_embeddings.weight:
        model.output = _fused(model.output)  # the head's own copy, so the final gain folds into it too
    fold_norm_gains(model)
    if transpose:
        transpose_linears(model)
    return model.eval().requires_grad_(False)


def is_packed(model: Transformer) -> bool:
    return any(b.attention.wqkv is not None or b.feed_forward.w13 is not None for b in model.layers)


def _all_float_linear(*modules: nn.Module) -> bool:
    return all(type(m) is nn.Linear and m.weight.is_floating_point() for m in modules)


def _fold(norm: RMSNorm, readers: list[nn.Module], model: Transformer) -> None:
    tied = model.tok_embeddings.weight
    if norm.weight is None or not _all_float_linear(*readers) or any(r.weight is tied for r in readers):
        return
    for reader in readers:
        reader.weight.mul_(norm.weight.to(reader.weight.dtype))  # scales column j by g_j
    norm.weight = None
