"""Compiled decode steps: the same forward pass through torch.compile, for batch-1 speed.

Once the weights are quantized, a CPU decode step spends more time between operations (Python,
dispatch, many small kernels) than inside the matmuls (`lab bench decode --profile`).
`compile_decoding(model)` makes llama_core.generate's `decode_one_token` run each step through
torch.compile: Inductor fuses the norms, RoPE and elementwise work into a few C++ kernels and, on
CPU, its C++ wrapper calls the matmul kernels with no Python between them. Shapes are dynamic
(the position), and a compiled model's KV cache always holds its whole context (Dynamo takes a
module buffer's size as a constant: a cache sized to each generation would recompile every time),
so one compilation serves every step of every generation; another batch size, or a key mask or
RoPE offset (batched prompts of several lengths), compiles once more. The cost is memory: SmolLM2's
8,192-position float32 cache is 377 MB. The quantized layers keep their kernels inside the graph;
int8 on CPU reaches fbgemm through a custom op, because its packed weights do not trace
(llama_core.quantize).

Opt in (`--compile`): the first step compiles, on a 2-core CPU for about 1.5 minutes at lab-110m's
12 layers and 6 at SmolLM2's 30; Inductor caches the result on disk, so a later process with the
same model starts in well under a minute.
"""

from __future__ import annotations

import functools

import torch

from llama_core.model import Transformer
from llama_core.quantize import prepare_kernels

RECOMPILE_LIMIT = 64


def compile_decoding(model: Transformer) -> Transformer:
    """From now on `decode_one_token(model, ...)` runs compiled; returns the model.

    Call it after the model is packed or quantized for decoding (llama_core.quantize.for_decoding).
    Raises RuntimeError, saying what to install, where Inductor cannot build for this device.
    """
    device_type = model.tok_embeddings.weight.device.type
    reason = compile_unavailable_reason(device_type)
    if reason:
        raise RuntimeError(f"cannot compile decoding: {reason}; install it, or decode uncompiled (drop --compile)")
    prepare_kernels(model)
    # every model compiled in a process shares forward_step's compilations, one per layout and
    # quantization, with and without a key mask: allow more than Dynamo's default of 8
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    # on CPU the C++ wrapper removes the Python between kernels, most of a small model's step
    options = {"cpp_wrapper": True} if device_type == "cpu" else {}
    model.compiled_step = torch.compile(forward_step, dynamic=True, fullgraph=True, options=options)
    return model


def is_compiled(model: Transformer) -> bool:
    return getattr(model, "compiled_step", None) is not None


def forward_step(model: Transformer, token: torch.Tensor, pos: int, key_mask: torch.Tensor | None,
                 rope_offset: torch.Tensor | None) -> torch.Tensor:
    """token (B, 1) at position `pos` through the model, attending to its KV cache: logits (B, V)."""
    return model(token, start_pos=pos, key_mask=key_mask, rope_offset=rope_offset)[0][:, -1]


@functools.cache
def compile_unavailable_reason(device_type: str) -> str | None:
    """Why Inductor cannot build kernels for `device_type` here (no C++ compiler on CPU), or None."""
    if device_type != "cpu":
        return None
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as err:  # Inductor's own message names the compilers it looked for
        return f"torch.compile on CPU needs a C++ compiler (g++ or clang++): {err}"
    return None
