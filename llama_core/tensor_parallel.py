"""Tensor and sequence parallelism (Megatron-LM; Korthikanti et al., 2022) applied from outside the model.

PyTorch's own engine (`torch.distributed.tensor.parallel`) splits each block over the ranks of a
tensor-parallel mesh:

    attention   wq, wk, wv column-wise (each rank holds n_heads/tp query heads, n_kv_heads/tp
                key/value heads), wo row-wise: one reduction per block input
    feed-forward  w1, w3 column-wise (hidden_dim/tp each), w2 row-wise
    embedding   row-wise over the vocabulary; the output head column-wise over the vocabulary, the
                logits gathered for the cross-entropy (a tied matrix stays one parameter: both are
                (V, dim) sharded along V)

With sequence parallelism the residual stream between the sub-layers and the RMSNorms hold 1/tp of
the sequence on each rank: the reductions after wo and w2 become reduce-scatters and the gathers
before the column-wise products all-gathers, the same bytes as tensor parallelism alone with 1/tp
of the norm and residual activations. Without it the norms' gains are replicated, so that every
parameter is a DTensor on the same mesh (FSDP2 then shards them all over the data axis).

The attention modules keep their class: their head counts become the local ones, so the one
forward pass of llama_core.model reshapes each rank's slice of wq/wk/wv into its own heads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from llama_core.config import ParallelConfig
from llama_core.model import RMSNorm, Transformer

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

# Attention.forward(x, rotation, start_pos, backend, key_mask): only x is sharded
_ATTENTION_ARGS = 5


def parallelize(model: Transformer, tp_mesh: DeviceMesh, parallel: ParallelConfig) -> Transformer:
    """Shard `model` in place over `tp_mesh` (tensor parallel, and sequence parallel if asked).

    Call on the full, identically initialised model of every rank, before FSDP2 (which then shards
    the same parameters over the data axis) and before activation checkpointing and compile.
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    cfg = model.config
    tp = tp_mesh.size()
    parallel.replace(tp=tp).check_model(cfg)
    sp = parallel.sequence_parallel
    between = Shard(1) if sp else Replicate()  # the residual stream's layout between sub-layers
    tied = cfg.tie_embeddings
    parallelize_module(model, tp_mesh, {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=between),
        "output": ColwiseParallel(input_layouts=between, output_layouts=Replicate()),
    })
    if tied:  # parallelize_module replaced each module's parameter by its own DTensor: tie them again
        model.output.weight = model.tok_embeddings.weight
    for block in model.layers:
        plan = {
            "attention": PrepareModuleInput(input_layouts=(between,) + (None,) * (_ATTENTION_ARGS - 1),
                                            desired_input_layouts=(Replicate(),) + (None,) * (_ATTENTION_ARGS - 1)),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=between),
            "feed_forward": PrepareModuleInput(input_layouts=(between,), desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=between),
            "feed_forward.w3": ColwiseParallel(),
        }
        if sp:
            plan.update({"attention_norm": SequenceParallel(use_local_output=True),
                         "ffn_norm": SequenceParallel(use_local_output=True)})
        parallelize_module(block, tp_mesh, plan)
        block.attention.n_heads = cfg.n_heads // tp  # this rank's heads (the weights' rows say the same)
        block.attention.n_kv_heads = cfg.n_kv_heads // tp
    if sp:
        parallelize_module(model.norm, tp_mesh, SequenceParallel(use_local_output=True))
        _pad_sequences(model, tp)
    for norm in model.modules():
        if isinstance(norm, RMSNorm) and not sp:
            _replicate(norm, tp_mesh)
    return model


def _pad_sequences(model: Transformer, tp: int) -> None:
    """Sequences whose length tp does not divide (a held-out tail window) are padded on the right.

    Causal attention keeps the padding out of every real position; padded targets are ignored by
    the mean cross-entropy and padded logits cut off, so callers see their own length.
    """
    from llama_core.loss import IGNORE_INDEX

    def pad(module, args, kwargs):
        tokens, *rest = args
        extra = -tokens.shape[1] % tp
        if not extra:
            return None
        if kwargs.get("start_pos", 0) or kwargs.get("key_mask") is not None or len(rest) > 1:
            raise ValueError("a sequence-parallel model trains and scores whole sequences from position 0")
        tokens = torch.nn.functional.pad(tokens, (0, extra))
        targets = rest[0] if rest else kwargs.pop("targets", None)
        if targets is not None:
            targets = torch.nn.functional.pad(targets, (0, extra), value=IGNORE_INDEX)
        module._padded = extra
        return (tokens, targets), kwargs

    def cut(module, args, kwargs, output):
        extra = module.__dict__.pop("_padded", 0)
        logits, loss = output
        return (logits if logits is None or not extra else logits[:, :-extra]), loss

    model.register_forward_pre_hook(pad, with_kwargs=True)
    model.register_forward_hook(cut, with_kwargs=True)


def _replicate(norm: RMSNorm, mesh: DeviceMesh) -> None:
    """A norm's gain as a replicated DTensor on `mesh` that computes on the plain local input."""
    from torch.distributed.tensor import Replicate, distribute_module, distribute_tensor

    def partition(name, module, mesh):
        for key, param in list(module.named_parameters(recurse=False)):
            module.register_parameter(key, torch.nn.Parameter(distribute_tensor(param, mesh, [Replicate()])))

    def to_dtensor(module, inputs, mesh):
        from torch.distributed.tensor import DTensor

        return tuple(DTensor.from_local(x, mesh, [Replicate()], run_check=False) for x in inputs)

    distribute_module(norm, mesh, partition, input_fn=to_dtensor,
                      output_fn=lambda module, out, mesh: out.to_local())

